"""The result cache: stage key -> stored result (Parquet objects in the same store), and the
records of the runs that made and reused them (:mod:`chanbatch.cache.runs`)."""

from chanbatch.cache.index import (
    CacheEntry,
    lookup,
    read_memo,
    read_result,
    write_memo,
    write_result,
)
from chanbatch.cache.view import CacheView

__all__ = [
    "CacheEntry",
    "CacheView",
    "lookup",
    "read_memo",
    "read_result",
    "write_memo",
    "write_result",
]
