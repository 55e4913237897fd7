"""The result cache: stage key -> stored result (Parquet objects in the same store)."""

from chanbatch.cache.index import (
    CacheEntry,
    lookup,
    read_memo,
    read_result,
    write_memo,
    write_result,
)

__all__ = ["CacheEntry", "lookup", "read_memo", "read_result", "write_memo", "write_result"]
