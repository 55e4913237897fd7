"""One pass of the blueprint check: each stage on its own, as a draft.

A stage is read from its located YAML mapping: its keys, ``from``, ``per_slice`` and its one
operation (built by :mod:`chanbatch.blueprint.operations`). Whether the names it refers to
exist, and whether stages form a cycle, is decided once every stage is known, in
:mod:`chanbatch.blueprint.parse`; a draft keeps those names with their lines for that.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from chanbatch.blueprint import checks
from chanbatch.blueprint.checks import STAGE_NAME, Scope, describe
from chanbatch.blueprint.model import OPERATIONS, Operation, Stage
from chanbatch.blueprint.operations import build_operation
from chanbatch.blueprint.problems import ProblemLog
from chanbatch.blueprint.reader import LocatedList, LocatedMap

STAGE_KEYS = ("from", "per_slice", "description", "group_by", *OPERATIONS)
NAME_RULE = "use letters, digits, '_' and '-', starting with a letter or '_'"


@dataclass(slots=True)
class Draft:
    """A stage as parsed so far, with the lines of the names it refers to."""

    line: int
    stage: Stage | None = None
    refs: list[tuple[str, int, str]] = field(default_factory=list)  # (name, line, field)


def parse_stages(document: LocatedMap, log: ProblemLog, inputs: dict[str, str]) -> dict[str, Draft]:
    """Each stage of the document as a draft (by name), its problems recorded in ``log``."""
    if "stages" not in document:
        return {}
    stages = checks.mapping(
        Scope(log),
        document["stages"],
        document.value_line("stages"),
        "stages",
        "a mapping of stage name to stage",
    )
    if stages is None:
        return {}
    drafts: dict[str, Draft] = {}
    for key, body in stages.items():
        line = stages.key_line(key)
        if not (isinstance(key, str) and STAGE_NAME.fullmatch(key)):
            log.add(line, f"stage name {key!r} is not valid", field="stages", hint=NAME_RULE)
            continue
        scope = Scope(log, key)
        if key in inputs:
            scope.problem(
                line,
                "a stage cannot have the same name as an input",
                hint="rename the stage or the input",
            )
        drafts[key] = _stage(key, body, line, scope)
    return drafts


def _stage(name: str, body: Any, line: int, scope: Scope) -> Draft:
    draft = Draft(line=line)
    if not isinstance(body, LocatedMap):
        scope.problem(
            line, f"expected a mapping with 'from' and one operation, got {describe(body)}"
        )
        return draft
    misspelled = checks.unknown_keys(scope, body, STAGE_KEYS)
    source = _from(body, line, scope, draft, misspelled)
    per_slice = body.get("per_slice", False)
    if not isinstance(per_slice, bool):
        scope.problem(
            body.value_line("per_slice"),
            f"expected true or false, got {describe(per_slice)}",
            field="per_slice",
        )
    kinds = [key for key in body if key in OPERATIONS]
    operation: Operation | None = None
    if not kinds:
        if "group_by" in body:
            scope.problem(
                body.key_line("group_by"),
                "'group_by' needs 'aggregate'",
                field="group_by",
                hint="add for example 'aggregate: {rows: count()}'",
            )
        elif not misspelled & set(OPERATIONS):
            scope.problem(line, "no operation", hint=f"add one of: {', '.join(OPERATIONS)}")
    elif len(kinds) > 1:
        scope.problem(
            body.key_line(kinds[1]),
            f"{len(kinds)} operations ({', '.join(kinds)}), but a stage has exactly one",
            hint="split it into stages that read each other with 'from'",
        )
    elif "group_by" in body and kinds[0] != "aggregate":
        scope.problem(
            body.key_line("group_by"),
            f"'group_by' does not go with {kinds[0]!r}",
            field="group_by",
            hint="'group_by' belongs to 'aggregate'",
        )
    else:
        operation = build_operation(kinds[0], body, scope)
    if len(kinds) == 1:
        draft.refs.extend(_references(kinds[0], body))
    if operation is not None and source is not None and isinstance(per_slice, bool):
        draft.stage = Stage(
            name=name,
            from_=source,
            operation=operation,
            per_slice=per_slice,
            line=line,
            field_lines=_field_lines(kinds[0], body),
        )
    return draft


def _field_lines(kind: str, body: LocatedMap) -> dict[str, int]:
    """The line of the operation and of ``group_by``, of each entry under them
    (``derive.speed``, ``join.on``) and of each name in a list (``group_by.carrier``), for the
    problems that plan finds."""
    lines: dict[str, int] = {}

    def note(name: str, line: int, value: Any) -> None:
        lines.setdefault(name, line)
        if isinstance(value, LocatedMap):
            for key, item in value.items():
                note(f"{name}.{key}", value.value_line(key), item)
        elif isinstance(value, LocatedList):
            for index, item in enumerate(value):
                if isinstance(item, str):
                    column = item[1:] if kind == "sort" and item.startswith("-") else item
                    lines.setdefault(f"{name}.{column}", value.item_line(index))

    note(kind, body.value_line(kind), body[kind])
    if "group_by" in body:
        note("group_by", body.value_line("group_by"), body["group_by"])
    return lines


def _from(
    body: LocatedMap, line: int, scope: Scope, draft: Draft, misspelled: set[str]
) -> str | None:
    if "from" not in body:
        if "from" in misspelled:
            return None
        scope.problem(line, "missing 'from'", hint="name the input or stage this stage reads")
        return None
    value, value_line = body["from"], body.value_line("from")
    if isinstance(value, list):
        scope.problem(
            value_line,
            "expected one input or stage name, got a list",
            field="from",
            hint="to combine several, add 'union: [...]' next to 'from'",
        )
        return None
    source = checks.name(scope, value, value_line, "from", "an input or stage name")
    if source is not None:
        draft.refs.append((source, value_line, "from"))
    return source


def _references(kind: str, body: LocatedMap) -> list[tuple[str, int, str]]:
    """Names a join or union refers to, read from the YAML so that they are checked even when
    the operation has other problems."""
    value = body[kind]
    if kind == "join" and isinstance(value, LocatedMap) and isinstance(value.get("right"), str):
        return [(value["right"], value.value_line("right"), "join.right")]
    if kind == "union" and isinstance(value, str):
        return [(value, body.value_line("union"), "union")]
    if kind == "union" and isinstance(value, LocatedList):
        return [
            (other, value.item_line(i), "union")
            for i, other in enumerate(value)
            if isinstance(other, str) and other
        ]
    return []
