"""What a stage produces (its columns in order, each with its coarse kind) and the context in
which one stage is checked. The rules of each operation (:mod:`chanbatch.compile.operations`)
are written in these terms; the passes over a blueprint are in :mod:`chanbatch.compile.columns`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from chanbatch.blueprint.model import Blueprint, Stage
from chanbatch.blueprint.problems import Problem
from chanbatch.compile.types import Kind, TypeProblem
from chanbatch.errors import did_you_mean


@dataclass(frozen=True, slots=True, kw_only=True)
class Schema:
    """The columns of a stage's result, in order, and the kind of each (see compile/types.py).

    ``names`` lists the columns as the stage produces them: a rename onto a name the input
    already has, or a join suffix that lands on an existing name, lists that name twice.
    ``kinds`` has one entry per distinct name (the later column's kind); treat it as
    read-only. A name whose column is unknown (a problem already reported) has the kind None,
    so that it causes no type problem of its own.
    """

    names: tuple[str, ...]
    kinds: dict[str, Kind]

    @classmethod
    def of(cls, columns: Iterable[tuple[str, Kind]]) -> Schema:
        """A schema from (name, kind) pairs in column order."""
        pairs = list(columns)
        return cls(names=tuple(name for name, _ in pairs), kinds=dict(pairs))

    def pairs(self) -> list[tuple[str, Kind]]:
        """(name, kind) for each column, in order."""
        return [(name, self.kinds[name]) for name in self.names]


# The schema of each input and stage by name; None when its columns are unknown (after a map).
Schemas = Mapping[str, Schema | None]


@dataclass(slots=True, kw_only=True)
class StageCheck:
    """One stage being checked: the schemas of what it reads, and where its problems go."""

    blueprint: Blueprint
    stage: Stage
    schemas: Schemas
    problems: list[Problem]

    def unknown(
        self, names: Iterable[str], field: str, have: Sequence[str], side: str = ""
    ) -> None:
        """Report each of ``names`` that is not in ``have``, with a "did you mean"."""
        for name in sorted(set(names) - set(have)):
            close = did_you_mean(name, have)
            listing = ", ".join(have)
            where = f" of {side}" if side else ""
            self.report(
                field,
                f"unknown column {name!r}{where}",
                (f"{close} " if close else "") + f"available: {listing}",
                at=f"{field}.{name}",
            )

    def mistyped(self, field: str, exc: TypeProblem) -> None:
        """Report a type mismatch found in ``field``."""
        self.report(field, str(exc), "cast() converts between types")

    def report(self, field: str, message: str, hint: str, *, at: str | None = None) -> None:
        """Report a problem in ``field``, on the line of ``at`` (default: of ``field``)."""
        self.problems.append(
            Problem(
                file=self.blueprint.source,
                line=self.stage.line_of(at or field),
                stage=self.stage.name,
                field=field,
                message=message,
                hint=hint,
            )
        )
