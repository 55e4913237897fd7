"""The blueprint data model: what a blueprint says, after parsing and validation.

Everything here is a frozen dataclass with no behaviour beyond describing itself. Each
operation's :meth:`canonical` returns a plain JSON-able dict that feeds the stage's cache key
(DESIGN.md section 1), so it holds exactly what decides the stage's output and nothing else:

- expressions appear as their canonical rendering, so spacing and redundant parentheses do not
  change a key;
- lists whose order shapes the output (derived columns, selected columns, aggregates, sort
  keys) keep their order; mappings whose order does not (rename) are sorted;
- names of other stages and inputs never appear: which data flows in enters the key through
  the upstream keys and broadcast input ids, so renaming a stage keeps its cache.

Mappings are plain dicts (in declaration order) so that the model pickles onto Dask workers;
treat them as read-only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from chanbatch.blueprint.functions import DECOMPOSABLE_AGGREGATES, WINDOW_FUNCTIONS
from chanbatch.blueprint.nodes import AggCall, Expr, WindowCall

JoinHow = Literal["inner", "left", "right", "outer"]
JOIN_HOWS: tuple[str, ...] = ("inner", "left", "right", "outer")
DEFAULT_SUFFIXES: tuple[str, str] = ("", "_right")

Canonical = dict[str, Any]


@dataclass(frozen=True, slots=True, kw_only=True)
class Filter:
    """Keep the rows where ``expr`` is true (null counts as false)."""

    kind: ClassVar[str] = "filter"
    expr: Expr

    def canonical(self) -> Canonical:
        """The stage spec that enters the cache key."""
        return {"op": self.kind, "expr": self.expr.render()}

    def references(self) -> tuple[str, ...]:
        """Inputs or stages read besides ``from``: none."""
        return ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Derive:
    """Add or replace columns, in order; each expression may use the columns derived above it."""

    kind: ClassVar[str] = "derive"
    columns: dict[str, Expr]

    def canonical(self) -> Canonical:
        """The stage spec that enters the cache key."""
        return {"op": self.kind, "columns": [[n, e.render()] for n, e in self.columns.items()]}

    def references(self) -> tuple[str, ...]:
        """Inputs or stages read besides ``from``: none."""
        return ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Select:
    """Keep these columns, in this order."""

    kind: ClassVar[str] = "select"
    columns: tuple[str, ...]

    def canonical(self) -> Canonical:
        """The stage spec that enters the cache key."""
        return {"op": self.kind, "columns": list(self.columns)}

    def references(self) -> tuple[str, ...]:
        """Inputs or stages read besides ``from``: none."""
        return ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Rename:
    """Rename columns, old name -> new name; other columns keep their names and places."""

    kind: ClassVar[str] = "rename"
    mapping: dict[str, str]

    def canonical(self) -> Canonical:
        """The stage spec that enters the cache key."""
        return {"op": self.kind, "mapping": dict(sorted(self.mapping.items()))}

    def references(self) -> tuple[str, ...]:
        """Inputs or stages read besides ``from``: none."""
        return ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Join:
    """Join ``from`` (left) with ``right`` on equal values of the ``on`` columns.

    Columns other than ``on`` that both sides have get ``suffixes`` (left, right) appended.
    """

    kind: ClassVar[str] = "join"
    right: str
    on: tuple[str, ...]
    how: JoinHow = "inner"
    suffixes: tuple[str, str] = DEFAULT_SUFFIXES

    def canonical(self) -> Canonical:
        """The stage spec that enters the cache key (``right`` enters through its id)."""
        return {
            "op": self.kind,
            "on": list(self.on),
            "how": self.how,
            "suffixes": list(self.suffixes),
        }

    def references(self) -> tuple[str, ...]:
        """Inputs or stages read besides ``from``: the right side."""
        return (self.right,)

    def output_names(
        self, left: Iterable[str], right: Iterable[str]
    ) -> tuple[dict[str, str], dict[str, str]]:
        """The suffix rule, for both sides: the name each ``left`` column, and each ``right``
        column but ``on``, has in the result. A column that both sides have, other than
        ``on``, gets its side's suffix; every other column keeps its name."""
        left, right = list(left), list(right)
        shared = (set(left) & set(right)) - set(self.on)
        left_suffix, right_suffix = self.suffixes
        return (
            {c: c + left_suffix if c in shared else c for c in left},
            {c: c + right_suffix if c in shared else c for c in right if c not in self.on},
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class Aggregate:
    """Group by ``group_by`` (or the whole input, when empty) and compute ``aggregates``."""

    kind: ClassVar[str] = "aggregate"
    group_by: tuple[str, ...] = ()
    aggregates: dict[str, AggCall]

    def canonical(self) -> Canonical:
        """The stage spec that enters the cache key."""
        return {
            "op": self.kind,
            "group_by": list(self.group_by),
            "aggregates": [[name, agg.render()] for name, agg in self.aggregates.items()],
        }

    def references(self) -> tuple[str, ...]:
        """Inputs or stages read besides ``from``: none."""
        return ()

    @property
    def decomposable(self) -> bool:
        """True if per-slice partials combine exactly; False means it needs the whole input."""
        return all(agg.func in DECOMPOSABLE_AGGREGATES for agg in self.aggregates.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class SortKey:
    """One sort column and its direction."""

    column: str
    ascending: bool = True


@dataclass(frozen=True, slots=True, kw_only=True)
class Sort:
    """A stable sort by the keys in order; nulls sort last in either direction."""

    kind: ClassVar[str] = "sort"
    by: tuple[SortKey, ...]

    def canonical(self) -> Canonical:
        """The stage spec that enters the cache key."""
        keys = [[key.column, "asc" if key.ascending else "desc"] for key in self.by]
        return {"op": self.kind, "by": keys}

    def references(self) -> tuple[str, ...]:
        """Inputs or stages read besides ``from``: none."""
        return ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Limit:
    """The first ``n`` rows."""

    kind: ClassVar[str] = "limit"
    n: int

    def canonical(self) -> Canonical:
        """The stage spec that enters the cache key."""
        return {"op": self.kind, "n": self.n}

    def references(self) -> tuple[str, ...]:
        """Inputs or stages read besides ``from``: none."""
        return ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Union:
    """The rows of ``from`` and of each of ``others``: slice by slice when all are sliced by
    one column (within a slice, ``from``'s rows, then each other's in order), else all of
    ``from``'s rows followed by each other's, in order."""

    kind: ClassVar[str] = "union"
    others: tuple[str, ...]

    def canonical(self) -> Canonical:
        """The stage spec that enters the cache key (the inputs enter through their keys)."""
        return {"op": self.kind, "inputs": 1 + len(self.others)}

    def references(self) -> tuple[str, ...]:
        """Inputs or stages read besides ``from``: the others."""
        return self.others


@dataclass(frozen=True, slots=True, kw_only=True)
class Map:
    """A user function ``module:function`` from DataFrame to DataFrame, at ``version``.

    The code itself cannot be hashed reliably, so ``version`` stands for it: bump it whenever
    the function's output changes, or cached results will be reused.
    """

    kind: ClassVar[str] = "map"
    function: str
    version: str

    def canonical(self) -> Canonical:
        """The stage spec that enters the cache key."""
        return {"op": self.kind, "function": self.function, "version": self.version}

    def references(self) -> tuple[str, ...]:
        """Inputs or stages read besides ``from``: none."""
        return ()


FrameUnit = Literal["rows", "range"]
#: The units a ``range`` frame's offset may be given in, in seconds.
DURATION_UNITS: dict[str, int] = {
    "second": 1,
    "minute": 60,
    "hour": 3600,
    "day": 86400,
    "week": 604800,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Offset:
    """How far a frame reaches before or after a row: ``None`` is unbounded; a number counts
    rows (a ``rows`` frame) or values of the order column (a ``range`` frame, where a date
    column counts days); ``seconds`` is set instead for a duration such as "6 hours"."""

    value: int | float | None = 0
    seconds: int | None = None

    @property
    def unbounded(self) -> bool:
        return self.value is None and self.seconds is None

    def canonical(self) -> Any:
        if self.seconds is not None:
            return {"seconds": self.seconds}
        return "unbounded" if self.value is None else self.value

    def render(self) -> str:
        if self.seconds is not None:
            for unit, size in sorted(DURATION_UNITS.items(), key=lambda item: -item[1]):
                if self.seconds % size == 0:
                    count = self.seconds // size
                    return f"{count} {unit}{'s' * (count != 1)}"
        return "unbounded" if self.value is None else f"{self.value}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Frame:
    """The rows a frame function reads for each row: from ``preceding`` before it to
    ``following`` after it, counted in rows or in values of the (one) order column."""

    unit: FrameUnit = "range"
    preceding: Offset = field(default_factory=lambda: Offset(value=None))
    following: Offset = field(default_factory=Offset)

    def canonical(self) -> Canonical:
        return {
            "unit": self.unit,
            "preceding": self.preceding.canonical(),
            "following": self.following.canonical(),
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Window:
    """Per row, functions over the rows of its partition (rows with equal ``partition_by``
    values) in ``order_by`` order: frame aggregates over ``frame``, and ``lag``, ``lead``,
    ``row_number`` by position. Every input row is kept, in its order, with ``columns`` added
    (or replaced). Rows with equal order values are ordered as they arrive (slice order, then
    row order), so ``lag`` and ``row_number`` are deterministic."""

    kind: ClassVar[str] = "window"
    partition_by: tuple[str, ...] = ()
    order_by: tuple[str, ...]
    frame: Frame = field(default_factory=Frame)
    columns: dict[str, WindowCall]

    def canonical(self) -> Canonical:
        """The stage spec that enters the cache key."""
        return {
            "op": self.kind,
            "partition_by": list(self.partition_by),
            "order_by": list(self.order_by),
            "frame": self.frame.canonical(),
            "columns": [[name, call.render()] for name, call in self.columns.items()],
        }

    def references(self) -> tuple[str, ...]:
        """Inputs or stages read besides ``from``: none."""
        return ()

    @property
    def by_position(self) -> bool:
        """True when a function reads rows by position (``lag``, ``lead``, ``row_number``, or
        any function over a ``rows`` frame), which may be any number of slices away."""
        framed = all(WINDOW_FUNCTIONS[c.func].framed for c in self.columns.values())
        return not framed or self.frame.unit == "rows"


Operation = (
    Filter | Derive | Select | Rename | Join | Aggregate | Sort | Limit | Union | Map | Window
)

#: Operation keyword in a blueprint -> its class.
OPERATIONS: dict[str, type[Operation]] = {
    cls.kind: cls
    for cls in (Filter, Derive, Select, Rename, Join, Aggregate, Sort, Limit, Union, Map, Window)
}


@dataclass(frozen=True, slots=True, kw_only=True)
class Stage:
    """One named step: an operation applied to ``from_`` (and to what the operation references)."""

    name: str
    from_: str
    operation: Operation
    per_slice: bool = False
    line: int | None = None
    # The line of each field, such as "filter" or "derive.speed", so that a problem found at
    # plan time (an unknown column) points at the field itself; neither a key nor equality
    # depends on it.
    field_lines: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def line_of(self, field_name: str) -> int | None:
        """The line of ``field_name`` such as ``derive.speed.distance``: of the longest part of
        it that has one (``derive.speed``, then ``derive``), else the stage's own."""
        name = field_name
        while name:
            if name in self.field_lines:
                return self.field_lines[name]
            name = name.rpartition(".")[0]
        return self.line

    @property
    def upstream(self) -> tuple[str, ...]:
        """Every input or stage this stage reads, ``from_`` first."""
        return (self.from_, *self.operation.references())

    def canonical(self) -> Canonical:
        """The stage spec that enters the cache key: the operation's, plus ``per_slice``."""
        return {**self.operation.canonical(), "per_slice": self.per_slice}


@dataclass(frozen=True, slots=True, kw_only=True)
class Blueprint:
    """A validated blueprint: named inputs, stages in declaration order, and outputs."""

    name: str
    inputs: dict[str, str]
    stages: dict[str, Stage]
    outputs: dict[str, str]
    source: str = "<string>"
    # The YAML it was parsed from, kept for run records (a report of an old run can redraw
    # the flow after the file has changed); neither a key nor equality depends on it.
    text: str = field(default="", compare=False, repr=False)

    def topological_order(self) -> list[str]:
        """Stage names, each after everything it reads; ties keep declaration order."""
        from chanbatch.blueprint.graph import topological_order

        edges = {
            name: [up for up in stage.upstream if up in self.stages]
            for name, stage in self.stages.items()
        }
        return topological_order(edges)
