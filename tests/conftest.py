"""Fixtures shared by every test package, and the ``--runslow`` switch.

Tests marked ``@pytest.mark.slow`` are skipped unless pytest is given ``--runslow``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from s3kit import s3_bucket, s3_fault_proxy, s3_server, s3_store_url  # noqa: F401 (fixtures)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow", action="store_true", default=False, help="also run tests marked slow"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


def clear_memory_fs() -> None:
    """Empty fsspec's global in-memory filesystem, which every ``memory://`` URL shares."""
    import fsspec

    fs = fsspec.filesystem("memory")
    fs.store.clear()
    fs.pseudo_dirs.clear()
    fs.pseudo_dirs.append("")


@pytest.fixture(params=["local", "memory", "s3"])
def store_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A fresh, empty store URL on each backend: a local directory, ``memory://``, and
    ``s3://`` on a moto server (a fresh bucket; see s3kit)."""
    if request.param == "local":
        yield str(tmp_path_factory.mktemp("store") / "snapshots")
        return
    if request.param == "s3":
        pytest.importorskip("s3fs")
        pytest.importorskip("moto")
        yield request.getfixturevalue("s3_store_url")
        return
    clear_memory_fs()
    try:
        yield f"memory://chanbatch-test-{uuid.uuid4().hex}"
    finally:
        clear_memory_fs()


@pytest.fixture
def local_store_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A fresh, empty store in a local directory (for tests that need real files and mtimes)."""
    return str(tmp_path_factory.mktemp("store") / "snapshots")
