"""Strategies the engine tests share: Arrow tables drawn from a column spec."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa
from hypothesis import strategies as st

#: column name -> (its Arrow type, a strategy of its values)
Columns = Mapping[str, tuple[pa.DataType, st.SearchStrategy[Any]]]


@st.composite
def tables_of(
    draw: st.DrawFn, columns: Columns, *, max_rows: int, min_rows: int = 0, chunked: bool = True
) -> pa.Table:
    """A table of ``columns``, sometimes (``chunked``) in two chunks, as loads and filters
    give."""
    rows = draw(st.integers(min_rows, max_rows))
    table = pa.table(
        {
            name: pa.array([draw(values) for _ in range(rows)], type=t)
            for name, (t, values) in columns.items()
        }
    )
    cut = draw(st.integers(0, rows)) if chunked else 0
    if 0 < cut < rows:
        table = pa.concat_tables([table.slice(0, cut), table.slice(cut)])
    return table
