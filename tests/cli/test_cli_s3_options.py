"""Storage options on the command line and in the environment, against a real S3 API (moto,
through s3fs; issue 20, item 3).

- ``--storage-option endpoint_url=...`` alone reaches the store, for ``snapshot freeze``,
  ``snapshot list``, ``run`` and ``show``: the processes here get no endpoint from the
  environment (the standard AWS variables still give them credentials).
- ``$CHANBATCH_STORAGE_OPTIONS`` (a JSON object) does the same, the command line wins over it,
  and a ``profile`` option picks credentials from an AWS credentials file.
- A malformed option, on the command line or in the environment, is one ``Error:`` line, exit 2.
- The parsing itself: types, nesting, merging and redaction, without a server.

Frozen data is checked against the source rows read by pandas, and snapshot ids against the
same files frozen into a local store.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from clikit import Result, assert_one_error_line, base_env, csv_frame, ok, run

import chanbatch as cb
from chanbatch.errors import UsageError
from chanbatch.snapshot import options

pytest.importorskip("s3fs")

BLUEPRINT = """\
name: s3_cli
inputs:
  t: t
stages:
  big:
    from: t
    filter: "delay > 0"
  by_carrier:
    from: big
    group_by: [carrier]
    aggregate:
      n: count()
      total: sum(delay)
outputs:
  by_carrier: s3_cli_out
"""


def no_endpoint_env(**extra: str) -> dict[str, str]:
    """The test server's environment (credentials, region) without its endpoint."""
    env = base_env(**extra)
    env.pop("AWS_ENDPOINT_URL", None)
    env.pop("AWS_ENDPOINT_URL_S3", None)
    return env


def json_of(result: Result) -> Any:
    assert result.code == 0 and result.stderr == "", str(result)
    return result.json()


def test_storage_option_alone_reaches_s3(
    s3_server: str,
    s3_store_url: str,
    monthly_csv: dict[str, tuple[pd.DataFrame, Path]],
    tmp_path: Path,
) -> None:
    env = no_endpoint_env()
    opt = ["--storage-option", f"endpoint_url={s3_server}"]
    files = [path for _df, path in monthly_csv.values()]

    # without the option this environment has no way to the server: the option is what works
    frozen = json_of(
        run("snapshot", "freeze", "t", *files, *opt, "--json", store=s3_store_url, env=env)
    )
    local = cb.Store(tmp_path / "local", storage_options={}).freeze("t", files)
    assert frozen["snapshot"] == local.snapshot
    assert [s["key"] for s in frozen["slices"]] == sorted(monthly_csv)
    assert [s["rows"] for s in frozen["slices"]] == [
        len(monthly_csv[k][0]) for k in sorted(monthly_csv)
    ]

    listed = json_of(run("snapshot", "list", *opt, "--json", store=s3_store_url, env=env))
    assert frozen["snapshot"] in json.dumps(listed)

    bp = tmp_path / "s3_cli.yaml"
    bp.write_text(BLUEPRINT)
    done = json_of(run("run", bp, *opt, "--json", store=s3_store_url, env=env))
    assert done["store"] == {"url": s3_store_url, "options": {"endpoint_url": s3_server}}
    assert done["stats"]["computed"] > 0

    shown = json_of(run("show", "s3_cli_out", *opt, "--json", store=s3_store_url, env=env))
    got = {row["carrier"]: (row["n"], row["total"]) for row in shown["rows"]}
    source = pd.concat([df for df, _path in monthly_csv.values()])
    big = source[source["delay"] > 0]
    want = {
        carrier: (len(group), group["delay"].sum()) for carrier, group in big.groupby("carrier")
    }
    assert got.keys() == want.keys()
    for carrier, (n, total) in want.items():
        assert got[carrier][0] == n and got[carrier][1] == pytest.approx(total, rel=1e-12)


@pytest.fixture
def s3_frozen(s3_server: str, s3_store_url: str, src: Path) -> str:
    """The snapshot id of a small dataset ``t`` frozen into the S3 store (in this process)."""
    path = src / "t.csv"
    csv_frame().to_csv(path, index=False)
    store = cb.Store(s3_store_url, storage_options={"endpoint_url": s3_server})
    return store.freeze("t", [path]).snapshot


def test_environment_options_and_the_command_line_wins(
    s3_server: str, s3_store_url: str, s3_frozen: str
) -> None:
    env = no_endpoint_env(CHANBATCH_STORAGE_OPTIONS=json.dumps({"endpoint_url": s3_server}))
    listed = json_of(run("snapshot", "list", "--json", store=s3_store_url, env=env))
    assert s3_frozen in json.dumps(listed)

    # nothing listens on port 9 (discard): were the environment's endpoint used, this would fail
    env = no_endpoint_env(CHANBATCH_STORAGE_OPTIONS='{"endpoint_url": "http://127.0.0.1:9"}')
    opt = ["--storage-option", f"endpoint_url={s3_server}"]
    listed = json_of(run("snapshot", "list", *opt, "--json", store=s3_store_url, env=env))
    assert s3_frozen in json.dumps(listed)


def test_profile_option_picks_credentials(
    s3_server: str, s3_store_url: str, s3_frozen: str, tmp_path: Path
) -> None:
    credentials = tmp_path / "credentials"
    credentials.write_text(
        "[chanbatch-ci]\naws_access_key_id = profile-key\naws_secret_access_key = profile-secret\n"
    )
    env = no_endpoint_env(AWS_SHARED_CREDENTIALS_FILE=str(credentials))
    del env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
    opt = ["--storage-option", f"endpoint_url={s3_server}"]
    listed = json_of(
        run(
            "snapshot",
            "list",
            *opt,
            "--storage-option",
            "profile=chanbatch-ci",
            "--json",
            store=s3_store_url,
            env=env,
        )
    )
    assert s3_frozen in json.dumps(listed)
    # the profile is what gave the credentials: without it there are none
    result = run("snapshot", "list", *opt, store=s3_store_url, env=env)
    assert result.code == 1 and "credentials" in result.stderr, str(result)


@pytest.mark.parametrize(
    ("args", "environment", "needle"),
    [
        (["--storage-option", "endpoint_url"], None, "--storage-option 'endpoint_url'"),
        (["--storage-option", "a..b=1"], None, "--storage-option 'a..b=1'"),
        (["--storage-option", "anon=true", "--storage-option", "anon=false"], None, "twice"),
        ([], "{endpoint_url: x}", "$CHANBATCH_STORAGE_OPTIONS is not JSON"),
        ([], '["endpoint_url"]', "$CHANBATCH_STORAGE_OPTIONS is a JSON list"),
    ],
)
def test_malformed_options_are_one_error_line(
    args: list[str], environment: str | None, needle: str, tmp_path: Path
) -> None:
    extra = {} if environment is None else {"CHANBATCH_STORAGE_OPTIONS": environment}
    result = run("snapshot", "list", *args, store=tmp_path, env=base_env(**extra))
    assert_one_error_line(result, 2, needle)


def test_every_store_command_takes_storage_options(tmp_path: Path) -> None:
    """Wherever ``--store`` is, ``--storage-option`` is (read from the help of each command)."""
    from chanbatch.cli.commands import cli

    def walk(command: Any, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        found = []
        for name, sub in getattr(command, "commands", {}).items():
            found += walk(sub, (*path, name))
        opts = {o for p in getattr(command, "params", []) for o in getattr(p, "opts", [])}
        if "--store" in opts:
            found.append(path)
            assert "--storage-option" in opts, " ".join(path)
        return found

    import chanbatch.cli.main  # noqa: F401  (registers every command)

    assert len(walk(cli, ())) >= 10
    ok("snapshot", "list", "--storage-option", "anon=true", "--help")


# -- parsing, merging, redaction (no server) ------------------------------------------------------


def test_pairs_are_typed_and_nested() -> None:
    parsed = options.parse_pairs(
        [
            "endpoint_url=http://127.0.0.1:9000",
            "anon=True",
            "default_block_size=1048576",
            "version_aware=false",
            "client_kwargs.region_name=eu-west-1",
            "client_kwargs.verify=null",
            'profile="0042"',
            'config_kwargs={"retries": {"max_attempts": 2}}',
            "secret=1234",
            "path=a=b",
        ]
    )
    assert parsed == {
        "endpoint_url": "http://127.0.0.1:9000",
        "anon": True,
        "default_block_size": 1048576,
        "version_aware": False,
        "client_kwargs": {"region_name": "eu-west-1", "verify": None},
        "profile": "0042",
        "config_kwargs": {"retries": {"max_attempts": 2}},
        "secret": "1234",  # a secret stays text
        "path": "a=b",
    }


def test_command_line_merges_over_environment() -> None:
    env = options.from_environment(
        {
            options.ENV: '{"client_kwargs": {"region_name": "us-east-1", "verify": false}, "anon": true}'
        }
    )
    given = options.parse_pairs(["client_kwargs.region_name=eu-west-1", "anon=false"])
    assert options.merged(env, given) == {
        "client_kwargs": {"region_name": "eu-west-1", "verify": False},
        "anon": False,
    }
    assert options.from_environment({}) == {} == options.from_environment({options.ENV: "  "})
    with pytest.raises(UsageError, match="not an object"):
        options.from_environment({options.ENV: "3"})


def test_redaction_hides_credentials_only() -> None:
    given = {
        "endpoint_url": "https://user:pw@minio.internal:9000",
        "key": "AKIA123",
        "secret": "s",
        "token": "t",
        "profile": "prod",
        "anon": False,
        "client_kwargs": {"aws_session_token": "x", "region_name": "eu-west-1"},
        "account_key": "k",
        "sas_token": "k",
        "password": "p",
        "connection_string": "c",
        "credentials": {"a": 1},
    }
    shown = options.redacted(given)
    assert shown == {
        "endpoint_url": "https://***@minio.internal:9000",
        "key": "***",
        "secret": "***",
        "token": "***",
        "profile": "prod",
        "anon": False,
        "client_kwargs": {"aws_session_token": "***", "region_name": "eu-west-1"},
        "account_key": "***",
        "sas_token": "***",
        "password": "***",
        "connection_string": "***",
        "credentials": "***",
    }


def test_api_store_reads_the_environment_unless_given_options(
    s3_server: str, s3_store_url: str, s3_frozen: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL")
    monkeypatch.setenv(options.ENV, json.dumps({"endpoint_url": s3_server, "token": "t0ken"}))
    store = cb.Store(s3_store_url)
    assert store.storage_options == {"endpoint_url": s3_server, "token": "t0ken"}
    assert store.resolve("t").snapshot == s3_frozen
    assert store.document() == {
        "url": s3_store_url,
        "options": {"endpoint_url": s3_server, "token": "***"},
    }
    assert cb.Store(s3_store_url, storage_options={}).storage_options == {}
    monkeypatch.setenv(options.ENV, "[]")
    with pytest.raises(UsageError, match="CHANBATCH_STORAGE_OPTIONS"):
        cb.Store(s3_store_url)
