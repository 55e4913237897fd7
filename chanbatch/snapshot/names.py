"""Dataset names, slice keys and REF strings: the user-typed parts of the store.

Nothing a user types becomes a path without passing :func:`check_dataset_name`.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Literal

from chanbatch.errors import InvalidNameError, RefError
from chanbatch.ids import DATASET_NAME, is_id_prefix

SliceKey = int | dt.date | str
KeyType = Literal["int", "date", "str"]

_INT = re.compile(r"^[+-]?\d+$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# DOTALL: a slice key is data and may hold a newline (a --slice-by value); its REF must resolve.
_REF = re.compile(
    r"^(?P<dataset>[^@\[\]]+)(?:@(?P<id>[^\[\]]*))?(?:\[(?P<slice>.*)\])?$", re.DOTALL
)


def check_dataset_name(name: str) -> str:
    """Return ``name`` if it is a valid dataset name; raises InvalidNameError otherwise."""
    if not isinstance(name, str) or not DATASET_NAME.fullmatch(name) or ".." in name:
        raise InvalidNameError(
            f"invalid dataset name {name!r}",
            hint="use 1-128 letters, digits, '_', '.' or '-', starting with a letter or digit "
            "(no '/', '..' or spaces)",
        )
    return name


def key_type(key: SliceKey) -> KeyType:
    """The type tag of a slice key; raises TypeError for anything but int, date or str."""
    if isinstance(key, bool):
        raise TypeError("a slice key cannot be a bool")
    if isinstance(key, int):
        return "int"
    if isinstance(key, dt.datetime):
        raise TypeError("a slice key cannot be a datetime; use a date or a string")
    if isinstance(key, dt.date):
        return "date"
    if isinstance(key, str):
        return "str"
    raise TypeError(f"a slice key must be an int, a date or a string, not {type(key).__name__}")


def encode_key(key: SliceKey) -> int | str:
    """The JSON form of a slice key: ints stay ints, dates become ISO strings."""
    return key.isoformat() if isinstance(key, dt.date) else key


def decode_key(value: int | str, kind: KeyType) -> SliceKey:
    """Inverse of :func:`encode_key`, given the key's type tag."""
    if kind == "date":
        return dt.date.fromisoformat(str(value))
    if kind == "int":
        return int(value)
    return str(value)


def parse_key(text: str, kind: KeyType | None = None) -> SliceKey:
    """Parse a slice key typed by a user, as ``kind`` if the dataset already has one.

    Without a kind, digits become an int, ``YYYY-MM-DD`` a date and anything else a string.
    Raises RefError if ``text`` cannot be read as ``kind``.
    """
    if kind == "str":
        return text
    if kind == "int" or (kind is None and _INT.match(text)):
        if not _INT.match(text):
            raise RefError(f"slice key {text!r} is not an integer, but this dataset's keys are")
        return int(text)
    if kind == "date" or (kind is None and _DATE.match(text)):
        try:
            return dt.date.fromisoformat(text)
        except ValueError:
            raise RefError(f"slice key {text!r} is not a date (YYYY-MM-DD)") from None
    return text


def sort_token(key: SliceKey) -> tuple[int, int | str]:
    """A sort key giving slices their natural order: numbers numerically, dates by time."""
    if isinstance(key, dt.date):
        return (0, key.toordinal())
    if isinstance(key, int):
        return (0, key)
    return (1, key)


@dataclass(frozen=True, slots=True, kw_only=True)
class Ref:
    """A parsed REF: ``DATASET``, ``DATASET@<id prefix>`` and/or ``DATASET[slice]``."""

    dataset: str
    snapshot: str | None = None
    slice: str | None = None

    def __str__(self) -> str:
        text = self.dataset
        if self.snapshot:
            text += f"@{self.snapshot}"
        if self.slice is not None:
            text += f"[{self.slice}]"
        return text


def parse_ref(text: str) -> Ref:
    """Parse a REF string; raises InvalidNameError or RefError when it is malformed."""
    match = _REF.match(text.strip()) if isinstance(text, str) else None
    if not match:
        raise RefError(
            f"malformed REF {text!r}",
            hint="write DATASET, DATASET@<id prefix> or DATASET[slice]",
        )
    dataset = check_dataset_name(match["dataset"])
    snapshot = match["id"]
    if snapshot is not None:
        snapshot = snapshot.lower()
        if not is_id_prefix(snapshot):
            raise RefError(
                f"malformed snapshot id {match['id']!r} in REF {text!r}",
                hint="give at least 8 hex characters of the snapshot id",
            )
    return Ref(dataset=dataset, snapshot=snapshot, slice=match["slice"])
