"""The passes over a blueprint's columns: one schema pass (checks, then each stage's schema)
and the pruning pass (which input columns anything downstream reads). Each stage's part of
either pass is its operation's rules (:mod:`chanbatch.compile.operations`).
"""

from __future__ import annotations

from chanbatch.blueprint.model import Blueprint
from chanbatch.blueprint.problems import BlueprintError, Problem
from chanbatch.compile.operations import rules_of
from chanbatch.compile.schema import Schema, Schemas, StageCheck
from chanbatch.compile.types import kind_of_arrow
from chanbatch.snapshot.refs import Resolved


def input_schema(resolved: Resolved) -> Schema:
    """The schema of a resolved input, from its manifest."""
    return Schema.of((c.name, kind_of_arrow(c.type)) for c in resolved.manifest.schema)


def check_schemas(
    blueprint: Blueprint, inputs: dict[str, Resolved], order: list[str]
) -> dict[str, Schema | None]:
    """The schema of every input and stage (None: unknown, after a map), stages in ``order``.

    Raises BlueprintError listing every unknown column and type mismatch at once: a stage with
    a problem still has the columns it means to produce, so that the stages after it are
    checked too, and an unknown column has no kind, so it causes no type problem of its own.
    """
    schemas: dict[str, Schema | None] = {name: input_schema(r) for name, r in inputs.items()}
    problems: list[Problem] = []
    for name in order:
        stage = blueprint.stages[name]
        have = schemas[stage.from_]
        if have is None:
            schemas[name] = None
            continue
        rules = rules_of(stage.operation)
        at = StageCheck(blueprint=blueprint, stage=stage, schemas=schemas, problems=problems)
        # every unknown column of a stage is reported before its type mismatches
        rules.check_columns(stage.operation, at, have)
        schemas[name] = rules.output(stage.operation, at, have)
    if problems:
        raise BlueprintError(problems, source=blueprint.source)
    return schemas


def needed_columns(
    blueprint: Blueprint, schemas: Schemas, order: list[str]
) -> dict[str, set[str] | None]:
    """For every input and stage, the columns something downstream reads (None: all of them).

    Outputs keep all their columns; a stage whose result has unknown columns needs all of
    its inputs' columns.
    """
    needed: dict[str, set[str] | None] = {}

    def want(name: str, columns: set[str] | None) -> None:
        if name in needed and needed[name] is None:
            return
        if columns is None:
            needed[name] = None
            return
        have = schemas[name]
        if have is not None:
            columns = columns & set(have.names)
        needed[name] = (needed.get(name) or set()) | columns

    for name in blueprint.outputs:
        needed[name] = None
    for name in reversed(order):
        stage = blueprint.stages[name]
        out = needed.get(name, set())
        if out is None:
            schema = schemas[name]
            out = set(schema.names) if schema is not None else None
        if out is None:
            for up in stage.upstream:
                want(up, None)
            continue
        for up, columns in rules_of(stage.operation).needs(stage.operation, stage, out, schemas):
            want(up, columns)
    return needed
