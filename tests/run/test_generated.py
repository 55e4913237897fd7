"""Generated blueprints, run through chanbatch and through an independent pandas version.

A seeded generator picks, from fixed menus, a filter, a chain of derived columns, group keys
and aggregates (or a projection), and maybe a sort and a limit. Each menu item carries its
blueprint text and its pandas meaning; the pandas side never calls chanbatch. Results are
compared with a float tolerance, ignoring row order unless the blueprint sorts.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytest
from opskit import assert_same

import chanbatch as cb

COUNT = 20
SLICES = (1, 2, 3, 4)
Frame = pd.DataFrame
Mask = Callable[[Frame], pd.Series]


def dataset(rows: int = 160, seed: int = 2024) -> Frame:
    rng = np.random.default_rng(seed)
    cat = rng.choice(np.array(["a", "b", "c", "d", None], dtype=object), rows)
    f1 = rng.normal(0, 10, rows).round(2)
    f1[rng.random(rows) < 0.15] = np.nan
    return pd.DataFrame(
        {
            "day": rng.choice(SLICES, rows).astype("int64"),
            "id": np.arange(rows, dtype="int64"),
            "cat": pd.Series(cat, dtype=object),
            "sub": rng.choice(["x", "y"], rows),
            "n1": rng.integers(0, 12, rows).astype("int64"),
            "f1": f1,
            "f2": rng.uniform(-5, 5, rows).round(3),
        }
    )


# -- menus: (blueprint text, pandas meaning) ------------------------------------------------


def _f1_above(r: random.Random) -> tuple[str, Mask]:
    v = r.choice([-5, 0, 3])
    return f"f1 > {v}", lambda d: d.f1.notna() & (d.f1 > v)


def _n1_at_most(r: random.Random) -> tuple[str, Mask]:
    v = r.randint(2, 9)
    return f"n1 <= {v}", lambda d: d.n1 <= v


def _f2_and_n1(r: random.Random) -> tuple[str, Mask]:
    v = r.choice([-2.5, 0.0, 1.5])
    return f"f2 >= {v} and n1 != 4", lambda d: (d.f2 >= v) & (d.n1 != 4)


def _fixed(text: str, mask: Mask) -> Callable[[random.Random], tuple[str, Mask]]:
    return lambda r: (text, mask)


FILTERS: list[Callable[[random.Random], tuple[str, Mask]]] = [
    _f1_above,
    _n1_at_most,
    _f2_and_n1,
    _fixed("cat in ['a', 'b']", lambda d: d.cat.isin(["a", "b"])),
    _fixed("cat != 'c'", lambda d: d.cat.notna() & (d.cat != "c")),
    _fixed("is_null(f1) or f1 < 2", lambda d: d.f1.isna() | (d.f1 < 2)),
    # SQL: not (null > 0) is null, so a null f1 is dropped
    _fixed("not (f1 > 0)", lambda d: d.f1.notna() & ~(d.f1 > 0)),
    _fixed("sub == 'x' or n1 > 8", lambda d: (d["sub"] == "x") | (d.n1 > 8)),
]

DERIVES: list[tuple[str, str, Callable[[Frame], pd.Series]]] = [
    ("d_sum", "f1 * 2 + n1", lambda d: d.f1 * 2 + d.n1),
    ("d_mod", "n1 % 3", lambda d: d.n1 % 3),
    ("d_abs", "abs(f2) - n1", lambda d: d.f2.abs() - d.n1),
    ("d_coal", "coalesce(f1, 0) * f2", lambda d: d.f1.fillna(0) * d.f2),
    ("d_div", "n1 // 5", lambda d: d.n1 // 5),
    ("d_up", "upper(sub)", lambda d: d["sub"].str.upper()),
]

GROUPINGS: list[list[str]] = [[], ["cat"], ["sub"], ["cat", "sub"], ["d_mod"], ["sub", "d_div"]]
NUMERIC = ["n1", "f1", "f2", "d_sum", "d_abs", "d_coal"]
EXACT_AGGS = {"count", "min", "max"}  # results that are exact, so safe to sort on


def _agg(func: str, col: str | None, rows: Frame) -> object:
    if func == "count":
        return len(rows) if col is None else int(rows[col].notna().sum())
    values = rows[col].dropna()
    if func == "count_distinct":
        return values.nunique()
    if not len(values):
        return None
    if func == "sum":
        return values.sum()
    if func == "mean":
        return values.mean()
    if func == "min":
        return values.min()
    if func == "max":
        return values.max()
    if func in ("var", "std"):
        return None if len(values) < 2 else getattr(values, func)(ddof=1)
    raise AssertionError(func)


@dataclass
class Case:
    seed: int
    lines: list[str] = field(default_factory=list)
    steps: list[Callable[[Frame], Frame]] = field(default_factory=list)
    last: str = "t"
    ordered: bool = False
    by: list[str] | None = None
    per_slice: bool = False

    def stage(self, name: str, body: str, step: Callable[[Frame], Frame]) -> None:
        self.lines.append(f"  {name}:\n    from: {self.last}\n{body}")
        self.steps.append(step)
        self.last = name

    def text(self) -> str:
        return (
            f"name: generated_{self.seed}\ninputs:\n  t: t\nstages:\n"
            + "\n".join(self.lines)
            + f"\noutputs:\n  {self.last}: generated_{self.seed}\n"
        )

    def expected(self, frame: Frame) -> Frame:
        if self.per_slice:
            parts = [frame[frame.day == key] for key in SLICES]
            return pd.concat([self._apply(p) for p in parts], ignore_index=True)
        return self._apply(frame.sort_values("day", kind="stable"))

    def _apply(self, frame: Frame) -> Frame:
        for step in self.steps:
            frame = step(frame.reset_index(drop=True))
        return frame.reset_index(drop=True)


def generate(seed: int) -> Case:
    r = random.Random(seed)
    case = Case(seed=seed)

    text, mask = r.choice(FILTERS)(r)
    case.stage("kept", f'    filter: "{text}"', lambda d, m=mask: d[m(d).to_numpy()])

    derived = r.sample(DERIVES, r.randint(1, 3))
    if not any(name == "d_mod" for name, *_ in derived) and r.random() < 0.5:
        derived.append(DERIVES[1])
    body = "    derive:\n" + "".join(f'      {n}: "{e}"\n' for n, e, _ in derived).rstrip("\n")

    def derive(d: Frame, items: list = derived) -> Frame:
        d = d.copy()
        for name, _, fn in items:
            d[name] = fn(d)
        return d

    case.stage("more", body, derive)
    have = {"n1", "f1", "f2", "cat", "sub", "id", "day"} | {n for n, *_ in derived}

    if r.random() < 0.7:
        _aggregate(case, r, have)
    else:
        _project(case, r, have)
    return case


def _aggregate(case: Case, r: random.Random, have: set[str]) -> None:
    keys = r.choice([g for g in GROUPINGS if set(g) <= have])
    numeric = [c for c in NUMERIC if c in have]
    funcs = r.sample(
        ["count", "sum", "mean", "min", "max", "var", "std", "count_distinct"], r.randint(2, 5)
    )
    aggs: list[tuple[str, str, str | None]] = [("rows", "count", None)]
    for func in funcs:
        col = r.choice(numeric)
        aggs.append((f"{func}_{col}", func, col))
    aggs = list({name: (name, f, c) for name, f, c in aggs}.values())
    case.per_slice = r.random() < 0.2
    lines = []
    if case.per_slice:
        lines.append("    per_slice: true")
    if keys:
        lines.append(f"    group_by: [{', '.join(keys)}]")
    lines.append("    aggregate:")
    lines += [f"      {n}: {f}({c or ''})" for n, f, c in aggs]

    def aggregate(d: Frame) -> Frame:
        groups = d.groupby(keys, dropna=False, sort=False) if keys else [((), d)]
        rows = []
        for key, part in groups:
            key = key if isinstance(key, tuple) else (key,)
            row = dict(zip(keys, key, strict=True))
            row.update({n: _agg(f, c, part) for n, f, c in aggs})
            rows.append(row)
        if not keys and not rows:
            rows = [{n: _agg(f, c, d) for n, f, c in aggs}]
        return pd.DataFrame(rows, columns=[*keys, *(n for n, _, _ in aggs)])

    case.stage("grouped", "\n".join(lines), aggregate)
    case.by = keys if keys and not case.per_slice else None

    if keys and not case.per_slice and r.random() < 0.6:
        exact = [n for n, f, _ in aggs if f in EXACT_AGGS]
        first = r.choice(exact)
        sort = [f"-{first}" if r.random() < 0.5 else first, *keys]
        _sort_and_limit(case, r, sort)


def _project(case: Case, r: random.Random, have: set[str]) -> None:
    columns = ["id", *r.sample(sorted(have - {"id"}), r.randint(2, 4))]
    case.stage("picked", f"    select: [{', '.join(columns)}]", lambda d: d[columns])
    case.by = ["id"]
    if r.random() < 0.6:
        exact = [
            c for c in columns if c in ("n1", "f1", "f2", "cat", "sub", "day", "d_mod", "d_div")
        ]
        lead = r.choice(exact) if exact else "id"
        _sort_and_limit(case, r, [f"-{lead}" if r.random() < 0.5 else lead, "id"])


def _sort_and_limit(case: Case, r: random.Random, keys: list[str]) -> None:
    bare = [k.lstrip("-") for k in keys]
    ascending = [not k.startswith("-") for k in keys]

    def sort(d: Frame) -> Frame:
        return d.sort_values(bare, ascending=ascending, na_position="last", kind="stable")

    case.stage("ordered", f"    sort: [{', '.join(keys)}]", sort)
    case.ordered = True
    if r.random() < 0.7:
        n = r.choice([1, 3, 5, 8])
        case.stage("top", f"    limit: {n}", lambda d: d.head(n))


# -- the tests --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data() -> Frame:
    return dataset()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory, data: Frame) -> cb.Store:
    store = cb.Store(tmp_path_factory.mktemp("generated") / "store")
    store.freeze("t", data, slice_by="day")
    return store


def test_the_generator_covers_the_menus() -> None:
    cases = [generate(seed) for seed in range(COUNT)]
    texts = "\n".join(c.text() for c in cases)
    for needle in (
        "group_by",
        "aggregate",
        "per_slice",
        "sort",
        "limit",
        "select",
        "count_distinct",
    ):
        assert needle in texts, needle
    assert len({c.text() for c in cases}) == COUNT


@pytest.mark.parametrize("seed", range(COUNT))
def test_generated_blueprint_matches_pandas(store: cb.Store, data: Frame, seed: int) -> None:
    case = generate(seed)
    text = case.text()
    result = cb.Blueprint.from_yaml(text).run(store, scheduler="sync")
    got = result.outputs[case.last].compute().reset_index(drop=True)
    want = case.expected(data)
    try:
        assert_same(
            got,
            want,
            ordered=case.ordered,
            by=None if case.ordered else case.by,
            rtol=1e-9,
            atol=1e-9,
        )
    except AssertionError as exc:
        raise AssertionError(f"blueprint:\n{text}\n{exc}") from None
    assert result.snapshots[case.last]["rows"] == len(want)
