"""The planner: blueprint + store -> plan (every task, its key, and what it depends on).

Pure: no dask, no pandas, no data read beyond manifests and cache entries. The engine
(:mod:`chanbatch.engine`) runs what this plans. See docs/concepts.md, "Architecture".
"""
