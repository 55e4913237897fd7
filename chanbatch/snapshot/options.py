"""Storage options: the keyword arguments fsspec gives a store's filesystem (an S3 endpoint, a
profile, ``anon``), read from the command line and the environment, and shown without secrets.

- ``--storage-option KEY=VALUE`` (repeatable): :func:`parse_pairs`. A dotted KEY nests
  (``client_kwargs.region_name=eu-west-1``); a VALUE is typed as JSON when it parses as JSON
  (``true``, ``3``, ``null``, ``"0042"``, ``{"a": 1}``), else it is the text as given; the
  value of a credential-like KEY (``key``, ``secret``, ``token``...) is always the text.
- ``$CHANBATCH_STORAGE_OPTIONS``: a JSON object, :func:`from_environment`.
- The two merge with :func:`merged`: the command line wins, nested objects merge key by key.
- :func:`redacted`: the options as a report may show them, every credential-like value
  replaced by ``"***"``.

A store remembers its options per URL in this process (:func:`remember`, :func:`options_for`),
so that the engine's tasks, which name a store by its URL, open it the same way; on a cluster a
worker plugin remembers them in every worker. Options never enter an id or a cache key: the
same data on the same store reached another way has the same hashes.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any

from chanbatch.errors import UsageError

ENV = "CHANBATCH_STORAGE_OPTIONS"
HIDDEN = "***"
#: option names whose values are secrets (s3fs' key/secret/token, gcsfs' token, adlfs'
#: account_key/sas_token/client_secret/connection_string, passwords...)
_SECRET = re.compile(
    r"key|secret|token|passw|credential|auth|session|signature|sas|private|connection_string",
    re.IGNORECASE,
)
#: names that match the above but hold nothing secret
_PUBLIC = frozenset({"key_prefix", "anon"})
_USERINFO = re.compile(r"(?<=://)[^/@\s]+@")
_KEY_PART = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]*$")

_REMEMBERED: dict[str, dict[str, Any]] = {}

_EXAMPLE = '{"endpoint_url": "http://localhost:9000"}'


def parse_pairs(items: Iterable[str], *, source: str = "--storage-option") -> dict[str, Any]:
    """``KEY=VALUE`` items as nested options (see the module docstring).

    Raises UsageError naming the item for a missing ``=``, an empty or malformed key, or a key
    given twice.
    """
    options: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        parts = key.strip().split(".")
        if not sep or not all(_KEY_PART.match(p) for p in parts):
            raise UsageError(
                f"cannot read {source} {item!r}",
                hint="write KEY=VALUE, such as endpoint_url=http://localhost:9000, anon=true "
                "or client_kwargs.region_name=eu-west-1",
            )
        node = options
        for part in parts[:-1]:
            inner = node.setdefault(part, {})
            if not isinstance(inner, dict):
                raise UsageError(f"{source} {item!r}: {part} is already a value, not an object")
            node = inner
        if parts[-1] in node:
            raise UsageError(f"{source} {key.strip()} is given twice", hint="give each option once")
        node[parts[-1]] = _typed(text, secret=_is_secret(parts[-1]))
    return options


def _typed(text: str, *, secret: bool = False) -> Any:
    """A value as JSON when it is JSON (true, 3, null, "quoted", {...}), else the text itself;
    a secret is always text (a numeric secret stays a string)."""
    if secret:
        return text
    try:
        return json.loads(text)
    except ValueError:
        lowered = text.strip().lower()
        if lowered in ("true", "false"):  # True, FALSE: as users write them
            return lowered == "true"
        return text


def from_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The options in ``$CHANBATCH_STORAGE_OPTIONS`` (a JSON object); empty when unset or blank.

    Raises UsageError when it is not a JSON object.
    """
    text = (os.environ if environ is None else environ).get(ENV, "")
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(
            f"${ENV} is not JSON: {exc.msg} at character {exc.pos + 1}",
            hint=f"set it to a JSON object of fsspec options, such as {_EXAMPLE}",
        ) from exc
    if not isinstance(value, dict):
        raise UsageError(
            f"${ENV} is a JSON {type(value).__name__}, not an object",
            hint=f"set it to a JSON object of fsspec options, such as {_EXAMPLE}",
        )
    return value


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``override``; objects under the same key merge key by key."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = value
    return out


def redacted(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` as a report may show them: a credential-like option's value (key, secret,
    token, password, ...) is ``"***"``, and so is the user:password part of a URL."""
    out: dict[str, Any] = {}
    for key, value in options.items():
        if _is_secret(str(key)) and value not in (None, "", False):
            out[key] = HIDDEN
        elif isinstance(value, Mapping):
            out[key] = redacted(value)
        elif isinstance(value, str):
            out[key] = redacted_url(value)
        else:
            out[key] = value
    return out


def redacted_url(url: str) -> str:
    """``url`` without the credentials it may embed (``https://user:pw@host`` ->
    ``https://***@host``)."""
    return _USERINFO.sub(f"{HIDDEN}@", url)


def _is_secret(name: str) -> bool:
    return name.lower() not in _PUBLIC and bool(_SECRET.search(name))


def remember(url: str, options: Mapping[str, Any]) -> None:
    """Open the store at ``url`` with ``options`` whenever this process opens it by its URL
    alone (the engine's tasks do); the last call for a URL wins."""
    _REMEMBERED[url] = dict(options)


def options_for(url: str) -> dict[str, Any]:
    """The options remembered for ``url`` in this process (none: ``{}``)."""
    return dict(_REMEMBERED.get(url, {}))


def token(options: Mapping[str, Any]) -> str:
    """A canonical text of ``options``, to tell apart two ways of opening one URL (never
    hashed into anything stored)."""
    return json.dumps(options, sort_keys=True, default=repr, separators=(",", ":"))
