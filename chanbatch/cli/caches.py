"""``chanbatch cache ls|du|evict``: the cached stage results a store holds."""

from __future__ import annotations

import click

from chanbatch.cli.commands import cli, count, emit_json, json_option, open_store, store_option
from chanbatch.errors import UsageError
from chanbatch.ids import MIN_PREFIX


@cli.group()
def cache() -> None:
    """List, size and evict cached stage results."""


@cache.command("ls")
@click.option("--stage", help="Only entries of this stage.")
@store_option
@json_option
def cache_ls_cmd(stage: str | None, store_url: str, as_json: bool) -> None:
    """List cache entries: key, stage, kind, rows, bytes, age."""
    entries = [e.document() for e in open_store(store_url).cache_entries(stage=stage)]
    if as_json:
        emit_json({"entries": entries})
    else:
        from chanbatch.cli import render

        render.cache_list(entries)


@cache.command("du")
@store_option
@json_option
def cache_du_cmd(store_url: str, as_json: bool) -> None:
    """How much the cache holds, in total and per stage."""
    doc = open_store(store_url).cache_usage()
    if as_json:
        emit_json(doc)
    else:
        from chanbatch.cli import render

        render.cache_usage(doc)


@cache.command("evict")
@click.argument("keys", nargs=-1, metavar="[KEY_PREFIX]...")
@click.option("--stage", help="Evict every entry of this stage.")
@click.option("--all", "everything", is_flag=True, help="Evict every entry.")
@store_option
@json_option
def cache_evict_cmd(
    keys: tuple[str, ...], stage: str | None, everything: bool, store_url: str, as_json: bool
) -> None:
    """Evict cache entries; the next run recomputes them. Objects stay until gc."""
    if not (keys or stage or everything):
        raise UsageError("say what to evict", hint="give key prefixes, --stage NAME or --all")
    short_keys = [k for k in keys if len(k) < MIN_PREFIX]
    if short_keys:
        raise UsageError(
            f"key prefix {short_keys[0]!r} is too short", hint="give at least 8 hex characters"
        )
    evicted = open_store(store_url).evict(keys, stage=stage, everything=everything)
    if as_json:
        emit_json({"evicted": evicted})
    else:
        click.echo(f"evicted {count(len(evicted), 'cache entry', 'cache entries')}")
