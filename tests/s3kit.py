"""A real S3 API for the tests: moto's server on 127.0.0.1, reached through s3fs, and a proxy that
injects faults in front of it.

How the endpoint reaches every client. botocore (1.28+) reads the standard ``AWS_ENDPOINT_URL``
(and the service-specific ``AWS_ENDPOINT_URL_S3``) from the environment when it makes a client,
and s3fs makes its clients through aiobotocore, which uses botocore's configuration: checked
here with s3fs 2026.9, aiobotocore 3.10 and botocore 1.43 (a plain ``s3fs.S3FileSystem()`` talks
to the moto server). So the ``s3_server`` fixture puts the endpoint, fake credentials and a
region into ``os.environ``: the test process and every ``chanbatch`` subprocess it starts
inherit them, with no store option at all. It also points the AWS config and credentials files
at nothing and turns off the instance-metadata lookup, so that a developer's own AWS setup can
never leak into (or slow down) a test.

s3fs caches its filesystem instances per set of arguments, and each instance caches listings:
``clear_s3fs_cache()`` drops both, for a test that points the same URL at another endpoint or
wants a cold start.

Public names (other test packages import them; keep them stable):

- ``s3_server`` (session fixture): the endpoint URL, ``http://127.0.0.1:<port>``.
- ``s3_bucket`` (fixture): a fresh, empty bucket's name; emptied and removed afterwards.
- ``s3_store_url`` (fixture): a fresh store URL, ``s3://<fresh bucket>/snapshots``.
- ``make_bucket(name=None)``: create a bucket on the server now and return its name.
- ``clear_s3fs_cache()``: forget s3fs's cached filesystem instances and listings.
- ``age_s3(url, seconds)``: make every object under ``url`` that many seconds old, behind the
  client's back (S3 has no way to set LastModified: it reaches into the in-process server).
- ``S3_ENV``: the environment variables the server fixture sets (besides the endpoint).
- ``FaultProxy`` and the ``s3_fault_proxy`` fixture: an HTTP proxy in front of moto that
  answers some requests with an error status or drops the connection (see its docstring).
- ``AtomicConditionalWrites``: the WSGI middleware the server runs moto behind, which makes a
  conditional write one step, as it is on S3 (see its docstring).

The fixtures are registered for every test package by ``tests/conftest.py``.
"""

from __future__ import annotations

import contextlib
import http.client
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

#: Fake credentials and a region: moto accepts any, and nothing real may be reached.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "chanbatch-test-key",
    "AWS_SECRET_ACCESS_KEY": "chanbatch-test-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
#: Variables of a developer's own AWS setup that would override the test setup.
_UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


def clear_s3fs_cache() -> None:
    """Forget s3fs's cached filesystem instances (and with them their listing caches)."""
    try:
        import s3fs
    except ImportError:  # pragma: no cover - s3fs is in the test extra
        return
    for fs in list(s3fs.S3FileSystem._cache.values()):
        fs.invalidate_cache()
    s3fs.S3FileSystem.clear_instance_cache()


def make_bucket(name: str | None = None) -> str:
    """Create a bucket on the test server (``s3_server`` must be running) and return its name.

    Made in the in-process server's backend directly, as moto's CreateBucket would make it:
    a bucket per test then costs no request (about 2 ms instead of 50 to 300)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    name = name or f"chanbatch-{uuid.uuid4().hex[:16]}"
    s3_backends[DEFAULT_ACCOUNT_ID]["aws"].create_bucket(name, S3_ENV["AWS_DEFAULT_REGION"])
    return name


def remove_bucket(name: str) -> None:
    """Drop a bucket and everything in it from the in-process server's memory at once (no
    request per object); a bucket already gone is fine."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    s3_backends[DEFAULT_ACCOUNT_ID]["aws"].buckets.pop(name, None)
    s3_backends.bucket_accounts.pop(name, None)


def age_s3(url: str, seconds: float) -> int:
    """Set the LastModified of every object under ``s3://bucket/prefix`` to ``seconds`` ago,
    as ``os.utime`` does on a local disk; returns how many objects were aged. The moto server
    runs in this process, so its in-memory backend is reachable (no S3 API can do this)."""
    import datetime as dt

    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    then = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(seconds=seconds)
    aged = 0
    for key in s3_backends[DEFAULT_ACCOUNT_ID]["aws"].get_bucket(bucket).keys.values():
        if key.name.startswith(prefix):
            key.last_modified = then
            aged += 1
    return aged


class AtomicConditionalWrites:
    """WSGI middleware in front of moto: conditional writes (``If-None-Match``) are served one
    at a time.

    S3 checks a write's condition and writes as one step, so of two racing creators of one key
    exactly one wins. moto 5.2 checks, then writes (``moto/s3/responses.py``, ``put_object``):
    two racers can both pass the check, and both "win". That race is moto's, not S3's, and it
    showed once in a run of the suite (two winners of 16). Serving conditional writes alone
    gives moto S3's atomicity; every other request is served at once, as before."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ.get("HTTP_IF_NONE_MATCH") and environ.get("REQUEST_METHOD") in ("PUT", "POST"):
            with self.lock:
                return list(self.app(environ, start_response))
        return self.app(environ, start_response)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 for the whole session; yields its endpoint URL.

    The endpoint, fake credentials and a region are put into ``os.environ`` (see the module
    docstring), so s3fs in this process and ``chanbatch`` in subprocesses reach the server."""
    from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per request otherwise
    app = AtomicConditionalWrites(DomainDispatcherApplication(create_backend_app))
    server = make_server("127.0.0.1", 0, app, True, request_handler=MotoRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    endpoint = f"http://{host}:{port}"
    with pytest.MonkeyPatch.context() as patch:
        for name in _UNSET:
            patch.delenv(name, raising=False)
        for name, value in S3_ENV.items():
            patch.setenv(name, value)
        patch.setenv("AWS_ENDPOINT_URL", endpoint)
        patch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        clear_s3fs_cache()
        try:
            yield endpoint
        finally:
            clear_s3fs_cache()
            server.shutdown()
            thread.join()


@pytest.fixture
def s3_bucket(s3_server: str) -> Iterator[str]:
    """A fresh, empty bucket on the test server; emptied and removed after the test."""
    name = make_bucket()
    try:
        yield name
    finally:
        remove_bucket(name)


@pytest.fixture
def s3_store_url(s3_bucket: str) -> str:
    """A fresh store URL in a fresh bucket: ``s3://<bucket>/snapshots``."""
    return f"s3://{s3_bucket}/snapshots"


# -- faults --------------------------------------------------------------------------------------


@dataclass
class Fault:
    """What the proxy does to the requests that ``match``: answer ``status`` (with an S3 error
    body naming ``code``), or drop the connection without an answer when ``status`` is 0.
    With ``after``, the request is first forwarded (the server acts on it) and then the
    connection dropped: the client never hears that it succeeded. ``times`` requests are hit
    (None: all of them, until the fault is removed)."""

    status: int
    code: str = ""
    after: bool = False
    match: Callable[[str, str], bool] = lambda method, path: True
    times: int | None = None
    hits: int = 0

    def takes(self, method: str, path: str) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if not self.match(method, path):
            return False
        self.hits += 1
        return True


_CODES = {403: "AccessDenied", 500: "InternalError", 503: "SlowDown", 404: "NoSuchBucket"}
#: S3's own words for each code, so that messages read as they would against AWS
_MESSAGES = {
    "AccessDenied": "Access Denied",
    "InternalError": "We encountered an internal error. Please try again.",
    "SlowDown": "Please reduce your request rate.",
    "ServiceUnavailable": "Please reduce your request rate.",
    "NoSuchBucket": "The specified bucket does not exist",
}


@dataclass
class FaultProxy:
    """An HTTP proxy on 127.0.0.1 in front of the moto server, for fault tests.

    Every request is forwarded to ``upstream`` unless a fault set with :meth:`fail` takes it.
    ``requests`` counts what arrived (``(method, path)``), ``faults_served`` what was failed.
    Point a client at :attr:`endpoint` (``AWS_ENDPOINT_URL`` in a subprocess's environment)."""

    upstream: str
    faults: list[Fault] = field(default_factory=list)
    requests: list[tuple[str, str]] = field(default_factory=list)
    faults_served: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    def fail(
        self,
        status: int,
        *,
        code: str = "",
        times: int | None = None,
        match: Callable[[str, str], bool] | None = None,
        after: bool = False,
    ) -> Fault:
        """Answer matching requests with ``status`` (0: drop the connection; with ``after``,
        drop it once the server has acted), ``times`` of them or all; returns the fault,
        which :meth:`heal` removes."""
        fault = Fault(
            status=status,
            code=code or _CODES.get(status, "InternalError"),
            after=after,
            times=times,
            match=match or (lambda method, path: True),
        )
        with self._lock:
            self.faults.append(fault)
        return fault

    def heal(self) -> None:
        """Remove every fault: from now on every request is forwarded."""
        with self._lock:
            self.faults.clear()

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "the proxy is not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def _pick(self, method: str, path: str) -> Fault | None:
        with self._lock:
            self.requests.append((method, path))
            for fault in self.faults:
                if fault.takes(method, path):
                    self.faults_served += 1
                    return fault
        return None

    def start(self) -> FaultProxy:
        proxy = self
        target = self.upstream.split("://", 1)[1]
        up_host, up_port = target.rsplit(":", 1)

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _handle(self) -> None:
                body = self._body()
                fault = proxy._pick(self.command, self.path)
                if fault is not None and fault.status == 0 and not fault.after:
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if fault is not None:
                    payload = (
                        '<?xml version="1.0" encoding="UTF-8"?>\n'
                        f"<Error><Code>{fault.code}</Code>"
                        f"<Message>{_MESSAGES.get(fault.code, fault.code)}</Message>"
                        f"<RequestId>{uuid.uuid4().hex}</RequestId></Error>"
                    ).encode()
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                headers = {
                    key: value
                    for key, value in self.headers.items()
                    if key.lower() not in ("transfer-encoding", "content-length", "connection")
                }
                headers["Content-Length"] = str(len(body))
                conn = http.client.HTTPConnection(up_host, int(up_port), timeout=60)
                try:
                    conn.request(self.command, self.path, body=body, headers=headers)
                    response = conn.getresponse()
                    data = response.read()
                    if fault is not None and fault.after:
                        self.close_connection = True
                        with contextlib.suppress(OSError):
                            self.connection.shutdown(socket.SHUT_RDWR)
                        return
                    self.send_response(response.status, response.reason)
                    length = str(len(data))
                    for key, value in response.getheaders():
                        if key.lower() == "content-length" and self.command == "HEAD":
                            length = value  # a HEAD's answer has no body, only the size
                        elif key.lower() not in (
                            "transfer-encoding",
                            "content-length",
                            "connection",
                        ):
                            self.send_header(key, value)
                    self.send_header("Content-Length", length)
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(data)
                finally:
                    conn.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


@pytest.fixture
def s3_fault_proxy(s3_server: str) -> Iterator[FaultProxy]:
    """A started :class:`FaultProxy` in front of the session's moto server (no faults yet)."""
    proxy = FaultProxy(upstream=s3_server).start()
    try:
        yield proxy
    finally:
        proxy.stop()


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` seconds pass; returns its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())
