"""Diff two snapshots by slice ids: what was added, removed, changed, and how the schema moved."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chanbatch.snapshot.names import encode_key, sort_token
from chanbatch.snapshot.refs import Resolved


@dataclass(slots=True, kw_only=True)
class SliceChange:
    key: Any
    before: str | None
    after: str | None
    rows_before: int
    rows_after: int

    def document(self) -> dict[str, Any]:
        return {
            "key": encode_key(self.key),
            "before": self.before,
            "after": self.after,
            "rows_before": self.rows_before,
            "rows_after": self.rows_after,
        }


@dataclass(slots=True, kw_only=True)
class DiffReport:
    """The difference between snapshot ``a`` (before) and ``b`` (after)."""

    a: Resolved
    b: Resolved
    added: list[SliceChange] = field(default_factory=list)
    removed: list[SliceChange] = field(default_factory=list)
    changed: list[SliceChange] = field(default_factory=list)
    unchanged: int = 0
    schema: list[dict[str, Any]] = field(default_factory=list)

    @property
    def identical(self) -> bool:
        return not (self.added or self.removed or self.changed or self.schema)

    def document(self) -> dict[str, Any]:
        return {
            "from": {"dataset": self.a.dataset, "snapshot": self.a.snapshot},
            "to": {"dataset": self.b.dataset, "snapshot": self.b.snapshot},
            "identical": self.identical,
            "added": [c.document() for c in self.added],
            "removed": [c.document() for c in self.removed],
            "changed": [c.document() for c in self.changed],
            "unchanged": self.unchanged,
            "schema": self.schema,
            "rows": {"before": self.a.manifest.rows, "after": self.b.manifest.rows},
        }


def diff(a: Resolved, b: Resolved) -> DiffReport:
    """Compare two resolved snapshots slice by slice; no data is read."""
    report = DiffReport(a=a, b=b)
    before = {e.key: e for e in a.manifest.slices}
    after = {e.key: e for e in b.manifest.slices}
    for key in sorted(set(before) | set(after), key=sort_token):
        old, new = before.get(key), after.get(key)
        change = SliceChange(
            key=key,
            before=old.id if old else None,
            after=new.id if new else None,
            rows_before=old.rows if old else 0,
            rows_after=new.rows if new else 0,
        )
        if old is None:
            report.added.append(change)
        elif new is None:
            report.removed.append(change)
        elif old.id != new.id:
            report.changed.append(change)
        else:
            report.unchanged += 1
    old_cols = {c.name: c.type for c in a.manifest.schema}
    new_cols = {c.name: c.type for c in b.manifest.schema}
    for name in list(old_cols) + [n for n in new_cols if n not in old_cols]:
        if old_cols.get(name) != new_cols.get(name):
            report.schema.append(
                {"column": name, "before": old_cols.get(name), "after": new_cols.get(name)}
            )
    return report
