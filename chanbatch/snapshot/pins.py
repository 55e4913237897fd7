"""Pins: snapshots that gc keeps even when history is pruned."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from chanbatch.snapshot import layout
from chanbatch.snapshot.refs import Resolved
from chanbatch.snapshot.storage import Storage


@dataclass(frozen=True, slots=True, kw_only=True)
class Pin:
    dataset: str
    snapshot: str
    pinned_at: str
    version: int | None = None  # of the ref log, when pinned; None in pins made before

    def document(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "dataset": self.dataset,
            "snapshot": self.snapshot,
            "pinned_at": self.pinned_at,
        }
        if self.version is not None:
            doc["version"] = self.version
        return doc


def pin(storage: Storage, resolved: Resolved) -> tuple[Pin, bool]:
    """Pin a resolved snapshot; returns the pin and whether it is new."""
    existing = {p.snapshot: p for p in list_pins(storage)}
    if resolved.snapshot in existing:
        return existing[resolved.snapshot], False
    record = Pin(
        dataset=resolved.dataset,
        snapshot=resolved.snapshot,
        pinned_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        version=resolved.entry.version,
    )
    storage.write_atomic(layout.pin_path(record.snapshot), json.dumps(record.document()).encode())
    return record, True


def unpin(storage: Storage, resolved: Resolved) -> bool:
    """Remove the pin of a resolved snapshot; returns whether there was one."""
    rel = layout.pin_path(resolved.snapshot)
    if not storage.exists(rel):
        return False
    storage.delete(rel)
    return True


def list_pins(storage: Storage) -> list[Pin]:
    """Every pin in the store."""
    pins = []
    for name in storage.listdir(layout.PINS):
        if not name.endswith(".json"):
            continue
        try:
            doc = json.loads(storage.read_bytes(f"{layout.PINS}/{name}"))
        except (ValueError, FileNotFoundError):
            doc = {}
        # the file name is the snapshot id, so even an unreadable pin still protects it
        pins.append(
            Pin(
                dataset=str(doc.get("dataset", "?")),
                snapshot=name.removesuffix(".json"),
                pinned_at=str(doc.get("pinned_at", "")),
                version=doc["version"] if isinstance(doc.get("version"), int) else None,
            )
        )
    return pins
