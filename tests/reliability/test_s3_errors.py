"""A store on S3 that cannot be used: a missing bucket, no credentials, access denied. Each is
one ``Error:`` line that names the store's URL and says what to do, exit 1 (the CLI's code for
a store it cannot use), and no traceback; the real ``chanbatch`` command line, in subprocesses.

Access denied comes from ``s3kit.FaultProxy`` answering 403 AccessDenied (moto enforces IAM
only for the whole server at once); the missing credentials are a process without any (and
with no config file or instance metadata to fall back on).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from loadkit import child_env
from s3kit import FaultProxy

pytest.importorskip("s3fs")


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    from clikit import CHANBATCH

    return subprocess.run(
        [str(CHANBATCH), *args], capture_output=True, text=True, env=env, timeout=120
    )


def one_error(done: subprocess.CompletedProcess[str], url: str, *needles: str) -> str:
    assert done.returncode == 1, (done.returncode, done.stderr)
    assert "Traceback" not in done.stderr, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    line = lines[0]
    assert url in line, line
    for needle in needles:
        assert needle in line, line
    return line


@pytest.fixture
def csv(tmp_path: Path) -> Path:
    path = tmp_path / "001.csv"
    path.write_text("day,amount\n1,2.5\n1,3.5\n")
    return path


@pytest.mark.parametrize("command", ["list", "freeze"])
def test_a_missing_bucket(s3_server: str, csv: Path, command: str) -> None:
    url = "s3://chanbatch-no-such-bucket/snapshots"
    args = ["snapshot", "list"] if command == "list" else ["snapshot", "freeze", "d", str(csv)]
    done = cli(*args, "--store", url, env=child_env())
    one_error(done, url, "s3://chanbatch-no-such-bucket was not found", "create the bucket")


def test_missing_credentials(s3_store_url: str, csv: Path) -> None:
    env = child_env()
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.pop(name, None)
    done = cli("snapshot", "freeze", "d", str(csv), "--store", s3_store_url, env=env)
    one_error(done, s3_store_url, "credentials", "AWS_ACCESS_KEY_ID")


@pytest.mark.parametrize("command", ["list", "freeze"])
def test_access_denied(
    s3_store_url: str, s3_fault_proxy: FaultProxy, csv: Path, command: str
) -> None:
    s3_fault_proxy.fail(403)  # every request, the first one included
    args = ["snapshot", "list"] if command == "list" else ["snapshot", "freeze", "d", str(csv)]
    env = child_env(AWS_ENDPOINT_URL=s3_fault_proxy.endpoint)
    done = cli(*args, "--store", s3_store_url, env=env)
    one_error(done, s3_store_url, "access denied", "credentials")
    assert s3_fault_proxy.faults_served >= 1
