"""Arrow arrays of numbers as numpy arrays and back, without pyarrow's pandas machinery.

``Array.to_numpy`` goes through pyarrow's Arrow -> pandas conversion code, which imports pandas
(0.3 s) even for an int64 array; a run whose stages all run on Arrow would pay that for nothing
(see :mod:`chanbatch.deferred`). DLPack hands numpy the same buffer without it. The other way,
``pa.array`` of a numpy array first asks whether it is a masked array, and the first time a
process asks, numpy imports ``numpy.ma`` (30 ms): :func:`arrow` wraps the buffer instead.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

__all__ = [
    "DecimalWords",
    "KnownDecimals",
    "arrow",
    "decimals",
    "numbers",
    "pool_ints",
    "unscaled",
]


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


def arrow(
    values: np.ndarray, kind: pa.DataType | None = None, mask: np.ndarray | None = None
) -> pa.Array:
    """``pa.array(values, kind, mask=mask)`` for a 1-d numpy array: an int, float or bool one
    (of ``kind``, if given) wraps its buffer (a bool one packed to bits), ``mask`` (True: null)
    becoming the validity bitmap, with no look at ``numpy.ma``; anything else goes to
    ``pa.array``."""
    own = values.dtype.kind in "iufb" and values.ndim == 1
    target = pa.from_numpy_dtype(values.dtype) if own else None
    if target is None or (kind is not None and kind != target):
        return pa.array(values, kind, mask=mask)
    if values.dtype.kind == "b":
        data = pa.py_buffer(np.packbits(values, bitorder="little"))
    else:
        data = pa.py_buffer(np.ascontiguousarray(values))
    if mask is None or not mask.any():
        return pa.Array.from_buffers(target, len(values), [None, data], null_count=0)
    valid = np.packbits(~np.asarray(mask, dtype=np.bool_), bitorder="little")
    nulls = int(np.count_nonzero(mask))
    return pa.Array.from_buffers(target, len(values), [pa.py_buffer(valid), data], nulls)


def unscaled(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, int] | None:
    """The unscaled integers (``value * 10**scale``) of a decimal128 array without nulls, as
    int64 read off its buffers, and their largest magnitude; None when one does not fit an
    int64 (which no valid decimal of at most 18 digits does), or for nulls. Read without a copy
    for an array in one piece."""
    if values.null_count or not pa.types.is_decimal128(values.type):
        return None
    chunks = values.chunks if isinstance(values, pa.ChunkedArray) else [values]
    parts, top = [], 0
    for chunk in chunks:
        n, offset, buffer = len(chunk), chunk.offset, chunk.buffers()[1]
        if n == 0 or buffer is None:
            continue
        # little-endian two's complement: a low and a high 64-bit word per value
        words = np.frombuffer(buffer, dtype=np.int64, count=2 * (offset + n))[2 * offset :]
        low, high = words[0::2], words[1::2]
        least, most = int(low.min()), int(low.max())
        if not _sign_words(low, high, least, most):
            return None
        parts.append(low)
        top = max(top, most, -least)
    if len(parts) == 1:
        return parts[0], top
    out = pool_ints(sum(len(p) for p in parts))
    if parts:
        np.concatenate(parts, out=out)
    return out, top


def _sign_words(low: np.ndarray, high: np.ndarray, least: int, most: int) -> bool:
    """Whether every high word only extends its low word's sign: the value fits an int64."""
    top_word, bottom_word = int(high.max()), int(high.min())
    if top_word == bottom_word == 0:
        return least >= 0
    if top_word == bottom_word == -1:
        return most < 0
    return bool(np.array_equal(high, low >> 63))


def pool_ints(n: int) -> np.ndarray:
    """A writable int64 array of ``n`` values in Arrow's memory pool, which reuses its memory:
    a fresh numpy array of this size costs page faults on every call."""
    return np.frombuffer(pa.allocate_buffer(8 * n), dtype=np.int64)


def decimals(unscaled: np.ndarray, kind: pa.Decimal128Type) -> pa.Array:
    """A decimal128 array of type ``kind`` whose unscaled integers are the int64s
    ``unscaled``: the inverse of :func:`unscaled` (the caller knows they fit ``kind``)."""
    words = DecimalWords(len(unscaled))
    words.low[:] = unscaled
    return words.array(kind)


class KnownDecimals:
    """Decimal arrays written here from int64s, with those int64s and their largest magnitude,
    so that an expression reading one again (``x * (1 + y)`` reads ``1 + y``; a derive's later
    column reads an earlier one) does not read its buffer again. Holds the arrays, so that no
    buffer address it knows is reused while it lives: keep one per evaluation, not longer."""

    def __init__(self) -> None:
        self._known: dict[tuple[int, int, int], tuple[pa.Array, np.ndarray, int]] = {}

    def add(self, array: pa.Array, ints: np.ndarray, top: int) -> None:
        self._known[_where(array)] = (array, ints, top)

    def get(self, values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, int] | None:
        if isinstance(values, pa.ChunkedArray):
            if values.num_chunks != 1:
                return None
            values = values.chunk(0)
        entry = self._known.get(_where(values))
        if entry is None or not entry[0].type.equals(values.type):
            return None
        return entry[1], entry[2]


def _where(array: pa.Array) -> tuple[int, int, int]:
    buffer = array.buffers()[1]
    return (buffer.address if buffer is not None else 0, array.offset, len(array))


class DecimalWords:
    """A decimal128 array of ``n`` values being written: its unscaled int64s go into ``low``
    (a strided view of the buffer, which numpy's ufuncs can write with ``out=``), and
    :meth:`array` extends their signs into the high words."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.buffer = pa.allocate_buffer(16 * n)
        self.words = np.frombuffer(self.buffer, dtype=np.int64).reshape(n, 2)
        self.low = self.words[:, 0]

    def array(self, kind: pa.Decimal128Type) -> pa.Array:
        np.right_shift(self.low, 63, out=self.words[:, 1])
        return pa.Array.from_buffers(kind, self.n, [None, self.buffer])
