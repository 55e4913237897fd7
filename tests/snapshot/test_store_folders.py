"""A local store makes its folders when a write finds them missing, not before every write, and
its temp files are named so that no two threads or processes pick one name."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest

import chanbatch
from chanbatch.snapshot import storage as storage_module
from chanbatch.snapshot.storage import Storage


def test_writes_make_missing_folders_again(tmp_path: Path) -> None:
    storage = Storage(str(tmp_path / "store"))
    storage.write_atomic("objects/ab/first", b"one")
    assert storage.create_exclusive("refs/flights/00000001.json", b"{}")

    # gc (or a person) removed the folders since: every write makes them again
    shutil.rmtree(tmp_path / "store" / "objects")
    shutil.rmtree(tmp_path / "store" / "refs")
    shutil.rmtree(tmp_path / "store" / "tmp")
    storage.write_atomic("objects/ab/second", b"two")
    assert storage.create_exclusive("refs/flights/00000001.json", b"{}")
    assert not storage.create_exclusive("refs/flights/00000001.json", b"{}")

    assert (tmp_path / "store/objects/ab/second").read_bytes() == b"two"
    assert (tmp_path / "store/refs/flights/00000001.json").read_bytes() == b"{}"
    assert os.listdir(tmp_path / "store/tmp") == []  # no temp file left behind


def test_a_write_into_a_file_where_a_folder_should_be_fails_cleanly(tmp_path: Path) -> None:
    """The retry after a missing folder does not hide a real error: a file in the folder's
    place is reported, and no temp file is left."""
    storage = Storage(str(tmp_path / "store"))
    storage.write_atomic("objects/ab/first", b"one")
    (tmp_path / "store/objects/cd").write_bytes(b"not a folder")

    with pytest.raises(chanbatch.errors.StoreError):
        storage.write_atomic("objects/cd/second", b"two")
    assert os.listdir(tmp_path / "store/tmp") == []


def test_temp_names_differ_across_threads_and_a_forked_child() -> None:
    names: list[str] = []
    lock = threading.Lock()

    def draw() -> None:
        mine = [storage_module._tmp_name() for _ in range(2_000)]
        with lock:
            names.extend(mine)

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(names)) == len(names) == 8_000

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its first name, then out
        os.write(write, storage_module._tmp_name().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 200).decode()
    os.close(read)
    parent = storage_module._tmp_name()
    assert child.rsplit("-", 1)[0] != parent.rsplit("-", 1)[0]  # another prefix
    assert child not in names
