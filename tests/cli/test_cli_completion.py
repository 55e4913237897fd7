"""Shell completion, tried the way the shells do it.

Bash: the script ``chanbatch completion bash`` prints is sourced in a real bash, ``COMP_WORDS``
and ``COMP_CWORD`` are set as bash sets them on TAB, and the completion function fills
``COMPREPLY``. Below it, Click's protocol (``_CHANBATCH_COMPLETE=bash_complete``) is checked
directly for what the function cannot show (file completion, errors).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from clikit import CHANBATCH, base_env, ok

BASH = shutil.which("bash")
ZSH = shutil.which("zsh")
DATASETS = ("flights", "fleet", "airlines")


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A store with three datasets; ``flights`` has two versions."""
    root = tmp_path_factory.mktemp("completion")
    path = root / "snapshots"
    for i, name in enumerate(DATASETS):
        src = root / f"{name}.csv"
        pd.DataFrame({"k": [1, 2], "x": [i, i + 1]}).to_csv(src, index=False)
        ok("snapshot", "freeze", name, src, "--json", store=path)
    more = root / "more.csv"
    pd.DataFrame({"k": [3], "x": [9]}).to_csv(more, index=False)
    ok("snapshot", "freeze", "flights", more, "--json", store=path)
    return path


def snapshot_ids(store: Path, dataset: str) -> list[str]:
    """The dataset's snapshot ids, oldest first, read from its ref files (DESIGN.md section 2)."""
    import json

    refs = sorted((store / "refs" / dataset).glob("*.json"))
    return [json.loads(p.read_text().split("\n")[0])["snapshot"] for p in refs]


def bash_complete(
    line: str, *, env: dict[str, str] | None = None, cwd: Path | None = None
) -> list[str]:
    """What TAB offers at the end of ``line`` in bash with chanbatch's completion loaded."""
    if BASH is None:
        pytest.skip("bash is not installed")
    words = line.split(" ")
    script = (
        'eval "$(chanbatch completion bash)"\n'
        f"COMP_WORDS=({' '.join(_quote(w) for w in words)})\n"
        f"COMP_CWORD={len(words) - 1}\n"
        f"COMP_LINE={_quote(line)}\n"
        f"COMP_POINT={len(line)}\n"
        "_chanbatch_completion chanbatch\n"
        "printf '%s\\n' \"${COMPREPLY[@]}\"\n"
    )
    run_env = env if env is not None else base_env()
    run_env["PATH"] = f"{CHANBATCH.parent}{os.pathsep}{run_env.get('PATH', '')}"
    proc = subprocess.run(
        [BASH, "--norc", "--noprofile", "-c", script],
        capture_output=True,
        text=True,
        env=run_env,
        cwd=cwd,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == "", proc.stderr
    return [w for w in proc.stdout.split("\n") if w]


def _quote(word: str) -> str:
    return "'" + word.replace("'", "'\\''") + "'"


def protocol(line: str, *, env: dict[str, str] | None = None) -> tuple[list[str], str]:
    """Click's bash protocol: ``type,value`` lines for the last word of ``line``."""
    words = line.split(" ")
    run_env = dict(env if env is not None else base_env())
    run_env.update(
        _CHANBATCH_COMPLETE="bash_complete", COMP_WORDS=line, COMP_CWORD=str(len(words) - 1)
    )
    proc = subprocess.run([str(CHANBATCH)], capture_output=True, text=True, env=run_env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return [x for x in proc.stdout.splitlines() if x], proc.stderr


def test_the_bash_script_is_clicks() -> None:
    script = ok("completion", "bash").stdout
    env = base_env(_CHANBATCH_COMPLETE="bash_source")
    direct = subprocess.run([str(CHANBATCH)], capture_output=True, text=True, env=env, check=True)
    assert script == direct.stdout
    assert "complete -o nosort -F _chanbatch_completion chanbatch" in script


def test_command_names_complete() -> None:
    assert bash_complete("chanbatch snapshot in") == ["inspect"]
    assert set(bash_complete("chanbatch snapshot ")) >= {"freeze", "list", "inspect", "verify"}
    assert "init" in bash_complete("chanbatch i")
    assert bash_complete("chanbatch completion ") == ["bash", "zsh"]


def test_refs_complete_with_dataset_names(store: Path) -> None:
    assert bash_complete(f"chanbatch snapshot inspect --store {store} fli") == ["flights"]
    assert sorted(bash_complete(f"chanbatch snapshot inspect --store {store} fl")) == [
        "fleet",
        "flights",
    ]
    assert bash_complete(f"chanbatch snapshot diff --store {store} flights a") == ["airlines"]
    assert sorted(bash_complete(f"chanbatch snapshot list --store {store} ")) == sorted(DATASETS)


def test_the_store_comes_from_the_environment_or_the_working_directory(store: Path) -> None:
    env = base_env(CHANBATCH_STORE=str(store))
    assert sorted(bash_complete("chanbatch snapshot verify fl", env=env)) == ["fleet", "flights"]
    # No --store and no $CHANBATCH_STORE: ./snapshots, as for every command.
    assert bash_complete("chanbatch snapshot pin air", cwd=store.parent) == ["airlines"]


def test_snapshot_ids_complete_after_the_at(store: Path) -> None:
    ids = snapshot_ids(store, "flights")
    assert len(ids) == 2 and all(re.fullmatch(r"[0-9a-f]{64}", i) for i in ids)
    offered = bash_complete(f"chanbatch snapshot inspect --store {store} flights@")
    assert offered == [f"flights@{i[:12]}" for i in reversed(ids)]  # newest first
    prefix = ids[0][:3]
    assert bash_complete(f"chanbatch snapshot inspect --store {store} flights@{prefix}") == [
        f"flights@{i[:12]}" for i in reversed(ids) if i.startswith(prefix)
    ]


def test_blueprint_arguments_complete_files(store: Path) -> None:
    lines, err = protocol("chanbatch run bl")
    assert lines == ["file,bl"] and err == ""


@pytest.mark.parametrize(
    "line",
    [
        "chanbatch snapshot inspect --store {missing} fl",  # no store there
        "chanbatch snapshot inspect --store {file} fl",  # a file, not a store
        "chanbatch snapshot inspect --store {store} ../fl@",  # a name that is no name
        "chanbatch snapshot inspect --store {store} nosuch@",  # no such dataset
        "chanbatch snapshot inspect --store s3x:// fl",  # a URL nothing can open
    ],
)
def test_completion_never_fails(store: Path, tmp_path: Path, line: str) -> None:
    file = tmp_path / "file"
    file.write_text("x")
    line = line.format(missing=tmp_path / "missing", file=file, store=store)
    lines, err = protocol(line)
    assert lines == [] and err == ""
    assert not (tmp_path / "missing").exists()  # completing creates no store


def test_zsh_script() -> None:
    script = ok("completion", "zsh").stdout
    assert script.startswith("#compdef chanbatch")
    assert "_CHANBATCH_COMPLETE=zsh_complete" in script
    if ZSH is None:
        pytest.skip("zsh is not installed: the script was produced, but not parsed with zsh -n")
    proc = subprocess.run([ZSH, "-n"], input=script, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
