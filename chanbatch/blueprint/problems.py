"""What can be wrong with a blueprint or an expression: the blueprint package's errors.

::

    UsageError (chanbatch.errors)       exit 2
    ├── BlueprintError                     a blueprint with problems; lists every one
    └── ExprError                          an expression outside the language
    ChanbatchError (chanbatch.errors)   exit 1
    └── ExprEvalError                      a valid expression that fails on the data

A blueprint is checked in full before anything runs: the parser collects one :class:`Problem`
per mistake and raises a single :class:`BlueprintError` carrying all of them, so that a user
fixes a file in one pass instead of one error per attempt. Each problem names the file and
line, the stage and field, and what was expected::

    blueprints/x.yaml:12: stage 'late', field 'filter': unknown function 'lowr' at position 1 (did you mean 'lower'?)
"""

from __future__ import annotations

from dataclasses import dataclass, field

from chanbatch.errors import ChanbatchError, UsageError


@dataclass(frozen=True, slots=True, kw_only=True)
class Problem:
    """One mistake in a blueprint, located as precisely as the YAML allows."""

    file: str
    line: int | None
    stage: str | None = None
    field: str | None = None
    message: str
    hint: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else self.file
        context = []
        if self.stage is not None:
            context.append(f"stage {self.stage!r}")
        if self.field is not None:
            context.append(f"field {self.field!r}")
        prefix = f"{where}: " + (", ".join(context) + ": " if context else "")
        suffix = f" ({self.hint})" if self.hint else ""
        return f"{prefix}{self.message}{suffix}"


class BlueprintError(UsageError):
    """A blueprint that cannot be used; ``problems`` lists every reason, ordered by line."""

    def __init__(self, problems: list[Problem], *, source: str) -> None:
        if not problems:
            raise ValueError("BlueprintError needs at least one problem")
        # Line order reads like the file; the sort is stable, so problems found on one line
        # keep the order in which the checks ran.
        self.problems = sorted(problems, key=lambda p: p.line if p.line is not None else 0)
        self.source = source
        lines = [str(problem) for problem in self.problems]
        if len(lines) > 1:
            lines.insert(0, f"blueprint {source} has {len(lines)} problems:")
        super().__init__("\n".join(lines))


@dataclass(slots=True)
class ProblemLog:
    """Collects problems while a blueprint is checked; :meth:`raise_if_any` ends the check."""

    source: str
    problems: list[Problem] = field(default_factory=list)

    def add(
        self,
        line: int | None,
        message: str,
        *,
        stage: str | None = None,
        field: str | None = None,
        hint: str | None = None,
    ) -> None:
        """Record one problem at ``line`` of the blueprint being checked."""
        self.problems.append(
            Problem(
                file=self.source, line=line, stage=stage, field=field, message=message, hint=hint
            )
        )

    def raise_if_any(self) -> None:
        """Raise :class:`BlueprintError` with everything recorded so far, if anything was."""
        if self.problems:
            raise BlueprintError(list(self.problems), source=self.source)


class ExprError(UsageError):
    """An expression that is not in the language: bad syntax, a refused construct, a bad call.

    ``reason`` says what is wrong, ``token`` is the offending text, ``position`` is its
    1-based character offset in ``text``; ``hint`` (if any) says what to write instead.
    """

    def __init__(
        self, reason: str, *, token: str, position: int, text: str, hint: str | None = None
    ) -> None:
        super().__init__(f"{reason} at position {position}", hint=hint)
        self.reason = reason
        self.token = token
        self.position = position
        self.text = text


class ExprEvalError(ChanbatchError):
    """An expression that is valid but cannot be computed on the data it was given.

    Raised by :func:`chanbatch.engine.pandas_eval.evaluate`: a missing column, mismatched
    types, a value that cannot be cast, or a division by zero in strict mode. Exit code 1.
    """
