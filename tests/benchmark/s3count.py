"""A moto S3 server on 127.0.0.1 that counts every request it serves, by type, and can delay each.

The server runs in this process (moto's werkzeug server, in a thread), so the requests it counts
are those any process makes against it: a ``chanbatch`` CLI process started with :meth:`env`
finds it through ``AWS_ENDPOINT_URL``, which botocore, and so s3fs, honours. Nothing in
chanbatch is patched or hooked; what is counted is what arrives over HTTP::

    with CountingS3(delay=0.02) as s3:          # 20 ms added to every request
        s3.reset()
        subprocess.run(["chanbatch", "plan", "q1.yaml", "--store", s3.url_of("store")],
                       env=s3.env(), check=True)
        print(s3.counts())                       # LIST 2, GET 5, HEAD 3 ...

A request's type is what it does to the bucket: ``LIST`` (a GET of the bucket: ListObjectsV2),
``GET`` (an object's bytes, whole or a range), ``HEAD`` (an object's or the bucket's metadata),
``PUT`` (an object written; a server-side copy is a PUT too), ``DELETE`` (one object, or a
batch of them in one POST), ``POST`` (anything else posted, such as a multipart upload's steps).
Each request is also filed under the store area its key falls in (``objects``, ``manifests``,
``refs``, ``cache``, ...), so a count that grows can be traced to what it reads.

Used by tests/benchmark/bench_s3.py and tests/snapshot/test_s3_requests.py.
"""

from __future__ import annotations

import collections
import os
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KINDS = ("LIST", "GET", "HEAD", "PUT", "DELETE", "POST")
BUCKET = "chanbatch-bench"
#: fake credentials and a region (moto takes any), and no developer's AWS setup
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "chanbatch-bench-key",
    "AWS_SECRET_ACCESS_KEY": "chanbatch-bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}
UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the server saw it."""

    kind: str  # one of KINDS
    key: str  # the object key, or the listed prefix for a LIST ("" for the bucket itself)


@dataclass(frozen=True, slots=True)
class Counts:
    """The requests served between two points in time."""

    requests: tuple[Request, ...] = ()
    by_kind: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, requests: Iterable[Request]) -> Counts:
        """The counts of ``requests``."""
        reqs = tuple(requests)
        tally = collections.Counter(r.kind for r in reqs)
        return cls(reqs, {k: tally.get(k, 0) for k in KINDS})

    @property
    def total(self) -> int:
        return len(self.requests)

    @property
    def reads(self) -> int:
        """Requests that read: LIST, GET and HEAD."""
        return sum(self.by_kind[k] for k in ("LIST", "GET", "HEAD"))

    @property
    def writes(self) -> int:
        """Requests that change the bucket: PUT, DELETE and POST."""
        return self.total - self.reads

    def area(self, prefix: str) -> dict[str, collections.Counter[str]]:
        """Per store area under ``prefix`` (``objects``, ``refs``, ...): its requests by kind."""
        out: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        for r in self.requests:
            rest = r.key[len(prefix) :].lstrip("/") if r.key.startswith(prefix) else r.key
            out[rest.split("/", 1)[0] or "(root)"][r.kind] += 1
        return dict(out)

    def text(self) -> str:
        """``LIST 2, GET 5, HEAD 3, PUT 0, DELETE 0, POST 0 (13)``."""
        kinds = ", ".join(f"{k} {self.by_kind[k]}" for k in KINDS)
        return f"{kinds} ({self.total})"

    def __str__(self) -> str:
        return self.text()


def classify(method: str, path: str, query: str) -> Request:
    """The type and key of a path-style S3 request (``/bucket/key?query``)."""
    bucket_and_key = urllib.parse.unquote(path).lstrip("/")
    _, _, key = bucket_and_key.partition("/")
    params = urllib.parse.parse_qs(query, keep_blank_values=True)
    if method == "GET":
        if key:
            return Request("GET", key)
        return Request("LIST", params.get("prefix", [""])[0])
    if method == "HEAD":
        return Request("HEAD", key)
    if method == "PUT":
        return Request("PUT", key)
    if method == "DELETE":
        return Request("DELETE", key)
    if method == "POST" and "delete" in params:
        return Request("DELETE", key)
    return Request("POST", key)


#: a request, named by its type and a part of its key
Match = tuple[str, str]


def _matches(req: Request, match: Match) -> bool:
    return req.kind == match[0] and match[1] in req.key


class _Counting:
    """WSGI middleware: records every request, sleeps ``delay`` seconds, then serves it; a
    conditional write (``If-None-Match``) alone, as S3 makes it one step (moto checks, then
    writes: two racing creators could both win; tests/s3kit.py's AtomicConditionalWrites).
    A request one of ``groups`` names is answered only once every other request of its group
    has arrived, or ``hold`` seconds have passed (see :meth:`CountingS3.together`)."""

    def __init__(self, app: Callable[..., Any]) -> None:
        self.app = app
        self.delay = 0.0
        self.log: list[Request] = []
        self.spans: list[tuple[Request, float, float]] = []  # when each was received, answered
        self.lock = threading.Lock()
        self.arrived = threading.Condition(self.lock)
        self.writes = threading.Lock()
        self.groups: list[tuple[Match, ...]] = []
        self.grouped_from = 0  # the log's length when the groups were set
        self.hold = 0.0

    def _others(self, req: Request) -> list[Match]:
        """The requests ``req`` waits for: the rest of every group that names it."""
        return [
            other
            for group in self.groups
            if any(_matches(req, match) for match in group)
            for other in group
            if not _matches(req, other)
        ]

    def _wait_for(self, others: list[Match]) -> None:
        def seen() -> bool:
            since = self.log[self.grouped_from :]
            return all(any(_matches(r, other) for r in since) for other in others)

        with self.arrived:
            self.arrived.wait_for(seen, timeout=self.hold)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        req = classify(
            environ.get("REQUEST_METHOD", ""),
            environ.get("PATH_INFO", ""),
            environ.get("QUERY_STRING", ""),
        )
        received = time.monotonic()
        with self.arrived:
            self.log.append(req)
            self.arrived.notify_all()
            others = self._others(req) if self.groups else []
        if others:
            self._wait_for(others)
        if self.delay:
            time.sleep(self.delay)
        try:
            if environ.get("HTTP_IF_NONE_MATCH") and environ.get("REQUEST_METHOD") in (
                "PUT",
                "POST",
            ):
                with self.writes:
                    return list(self.app(environ, start_response))
            return list(self.app(environ, start_response))
        finally:
            with self.lock:
                self.spans.append((req, received, time.monotonic()))


class CountingS3:
    """A moto S3 server on 127.0.0.1 (a free port) with one bucket, counting its requests.

    Use it as a context manager; :meth:`reset` starts a new count, :meth:`counts` reads it.
    """

    def __init__(self, delay: float = 0.0, bucket: str = BUCKET) -> None:
        self.bucket = bucket
        self._delay = delay
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._counting: _Counting | None = None
        self.endpoint = ""

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> CountingS3:
        """Start the server and create the bucket."""
        from moto.server import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
        from werkzeug.serving import make_server

        class Quiet(MotoRequestHandler):
            def log_request(self, *args: Any, **kwargs: Any) -> None:
                pass

        self._counting = _Counting(DomainDispatcherApplication(create_backend_app))
        self._counting.delay = self._delay
        self._server = make_server("127.0.0.1", 0, self._counting, True, request_handler=Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        host, port = self._server.server_address[:2]
        self.endpoint = f"http://{host}:{port}"
        self.client().create_bucket(Bucket=self.bucket)
        self.reset()
        return self

    def stop(self) -> None:
        """Stop the server; everything in it is gone."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join()
        self._server = self._thread = None

    def __enter__(self) -> CountingS3:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- counting -------------------------------------------------------------------------

    @property
    def delay(self) -> float:
        return self._counting.delay if self._counting else self._delay

    @delay.setter
    def delay(self, seconds: float) -> None:
        self._delay = seconds
        if self._counting is not None:
            self._counting.delay = seconds

    def reset(self) -> None:
        """Start a new count."""
        assert self._counting is not None, "start() the server first"
        with self._counting.lock:
            self._counting.log = []
            self._counting.spans = []
            self._counting.grouped_from = 0

    def together(self, *groups: tuple[Match, ...], hold: float = 10.0) -> None:
        """From now on, answer a request that one of ``groups`` names (its type, and a part
        of its key) only once every other request of its group has arrived, or ``hold``
        seconds have passed. A client that sends a group's requests at once is answered at
        once; one that sends them one after another (or a few at a time, fewer than the
        group) waits ``hold`` for each, and then their spans do not all overlap: how a test
        tells the two apart however slow the machine is. Call with no groups to stop."""
        assert self._counting is not None, "start() the server first"
        with self._counting.lock:
            self._counting.groups = list(groups)
            self._counting.grouped_from = len(self._counting.log)
            self._counting.hold = hold

    def spans(self) -> list[tuple[Request, float, float]]:
        """Each request served since the last :meth:`reset`, with when (``time.monotonic``)
        the server received it and answered it: two requests whose spans overlap were in
        flight at once."""
        assert self._counting is not None, "start() the server first"
        with self._counting.lock:
            return list(self._counting.spans)

    def counts(self) -> Counts:
        """The requests served since the last :meth:`reset`."""
        assert self._counting is not None, "start() the server first"
        with self._counting.lock:
            return Counts.of(self._counting.log)

    # -- clients --------------------------------------------------------------------------

    def url_of(self, prefix: str) -> str:
        """The ``s3://`` URL of ``prefix`` in the bucket."""
        return f"s3://{self.bucket}/{prefix.strip('/')}"

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment in which boto3 and s3fs talk to this server, with dummy credentials."""
        out = dict(os.environ if base is None else base)
        for name in (*UNSET, "AWS_ENDPOINT_URL_S3"):
            out.pop(name, None)
        out.update(CREDENTIALS, AWS_ENDPOINT_URL=self.endpoint)
        return out

    def client(self) -> Any:
        """A boto3 S3 client of this server (not counted apart: reset after using it)."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        )

    def upload(self, local: Path, prefix: str, dirs: Iterable[str] | None = None) -> int:
        """Copy the files under ``local`` (only its ``dirs``, if given) to ``prefix``; their
        number. Done with a thread pool of boto3 puts; reset the count afterwards."""
        from concurrent.futures import ThreadPoolExecutor

        roots = [local / d for d in dirs] if dirs is not None else [local]
        files = [p for r in roots if r.exists() for p in r.rglob("*") if p.is_file()]
        client = self.client()
        pre = prefix.strip("/")

        def put(p: Path) -> None:
            client.put_object(
                Bucket=self.bucket,
                Key=f"{pre}/{p.relative_to(local).as_posix()}",
                Body=p.read_bytes(),
            )

        with ThreadPoolExecutor(8) as pool:
            for _ in pool.map(put, files):
                pass
        return len(files)
