"""Arrow arrays of numbers as numpy arrays, without pyarrow's pandas machinery.

``Array.to_numpy`` goes through pyarrow's Arrow -> pandas conversion code, which imports pandas
(0.3 s) even for an int64 array; a run whose stages all run on Arrow would pay that for nothing
(see :mod:`chanbatch.deferred`). DLPack hands numpy the same buffer without it.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["numbers"]


def numbers(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """The values of an int, float or bool array, as ``to_numpy(zero_copy_only=False)`` gives
    them (a float null as NaN); other types, and ints or bools with nulls, take that general
    path. Read-only when it shares Arrow's buffer."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    kind = values.type
    if values.null_count:
        if not pa.types.is_floating(kind):
            return values.to_numpy(zero_copy_only=False)
        values = pc.fill_null(values, pa.scalar(float("nan"), kind))
    if pa.types.is_boolean(kind):
        return np.from_dlpack(values.cast(pa.uint8())).view(np.bool_)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        return np.from_dlpack(values)
    return values.to_numpy(zero_copy_only=False)
