"""Fixtures shared by every test package, and the ``--runslow`` switch.

Tests marked ``@pytest.mark.slow`` are skipped unless pytest is given ``--runslow``, and property
tests draw all their examples only then (see hypokit).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import hypokit
import pytest
from s3kit import s3_bucket, s3_fault_proxy, s3_server, s3_store_url  # noqa: F401 (fixtures)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--runslow", action="store_true", default=False, help="also run tests marked slow"
    )


def pytest_configure(config: pytest.Config) -> None:
    # before any test module is collected: its module-level settings read it (see hypokit)
    hypokit.THOROUGH = bool(config.getoption("--runslow"))
    if not hasattr(config, "workerinput"):  # once, before pytest-xdist starts its workers
        compile_chanbatch()


def compile_chanbatch() -> None:
    """Write chanbatch's bytecode once, where Python is told not to write it itself.

    An editable install leaves chanbatch's modules uncompiled (pip compiles a regular install),
    and with ``PYTHONDONTWRITEBYTECODE`` set (as on the machines CI runs on) every process the
    tests start (a ``chanbatch`` command, a Dask worker) would compile all of them again:
    about 0.1 s each, 200 s of a whole run. Python still reads bytecode written here."""
    if not sys.dont_write_bytecode:
        return
    import compileall

    import chanbatch

    compileall.compile_dir(Path(chanbatch.__file__).parent, quiet=2)


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
