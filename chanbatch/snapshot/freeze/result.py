"""What a freeze did: :class:`FreezeResult`, and a :class:`FrozenSlice` per slice it was given."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from chanbatch.ids import SliceId
from chanbatch.snapshot import describe
from chanbatch.snapshot.names import SliceKey, encode_key


@dataclass(frozen=True, slots=True, kw_only=True)
class FrozenSlice:
    """A slice as one freeze saw it: ``new`` when the head had no slice of its key,
    ``replaced`` when the head had one with other content, neither when the head already had
    it unchanged; ``healed`` is True when its objects (or manifest) were in the store but
    damaged, and this freeze rewrote them."""

    key: SliceKey
    id: SliceId
    rows: int
    bytes: int
    new: bool
    replaced: bool = False
    healed: bool = False

    def document(self) -> dict[str, Any]:
        return {
            "key": encode_key(self.key),
            "id": self.id,
            "rows": self.rows,
            "bytes": self.bytes,
            "new": self.new,
            "replaced": self.replaced,
            "healed": self.healed,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class FreezeResult:
    """What a freeze did: the dataset's head afterwards and each slice it was given."""

    dataset: str
    snapshot: str
    version: int
    created: bool
    slices: tuple[FrozenSlice, ...]

    def __repr__(self) -> str:
        return describe.freeze_repr(self)

    def _repr_html_(self) -> str:
        return describe.freeze_html(self)

    @property
    def healed(self) -> int:
        """How many of the slices given had damaged files in the store, now rewritten."""
        return sum(1 for s in self.slices if s.healed)

    def document(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "snapshot": self.snapshot,
            "slices": [s.document() for s in self.slices],
            "healed": self.healed,
        }
