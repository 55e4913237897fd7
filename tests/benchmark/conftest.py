"""The scripts in this folder are benchmarks, run by hand; pytest must not collect them."""

collect_ignore_glob = ["bench_*.py"]
