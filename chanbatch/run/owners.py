"""Which datasets a run may write: its outputs, never its inputs, and only its own datasets
unless told to take one over.

A run freezes each output as the new head of its dataset (``replace=True``): whatever the head
held before is no longer what ``DATASET`` reads. That is right for a dataset this blueprint
wrote, and wrong, silently, for anything else:

- an output that is also an input (directly, or by ``--set`` rebinding an input to it) makes
  the stage's rows (a filter's survivors, say) the new head of the raw data it was read from;
- an output named like a dataset someone froze by hand, or another blueprint's output, replaces
  that data with this blueprint's.

The first is always refused (the parser already refuses it when the blueprint's own REFs say
so). The second needs an explicit ``overwrite`` of that dataset once; after that run the head's
lineage names this blueprint, and reruns need nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from chanbatch.blueprint.model import Blueprint
from chanbatch.errors import UsageError, did_you_mean
from chanbatch.snapshot import SnapshotStore, refs


def check_outputs(
    blueprint: Blueprint,
    store: SnapshotStore,
    inputs: Mapping[str, refs.Resolved],
    overwrite: Collection[str] | None = (),
    known: refs.Heads | None = None,
) -> None:
    """Refuse a run that would write one of its inputs, or a dataset it did not write before.

    ``overwrite`` names datasets that this run may take over; None checks nothing (for a
    picture of the plan, which writes nothing). ``known``: heads read already
    (:func:`~chanbatch.snapshot.refs.heads`). Raises UsageError (exit 2).
    """
    if overwrite is None:
        return
    writers = {dataset: stage for stage, dataset in blueprint.outputs.items()}
    for name in overwrite:
        if name not in writers:
            raise UsageError(
                f"--overwrite {name}: blueprint {blueprint.name!r} writes no dataset {name!r}",
                hint=did_you_mean(name, writers)
                or "its outputs: " + (", ".join(writers) or "none"),
            )
    for name, resolved in inputs.items():
        stage = writers.get(resolved.dataset)
        if stage is not None:
            raise UsageError(
                f"input {name!r} reads dataset {resolved.dataset!r}, which stage {stage!r} "
                f"writes: a run would make that stage's rows the new head of its own input",
                hint=f"bind {name!r} to another dataset, or write stage {stage!r} to a dataset "
                "of its own",
            )
    for dataset, stage in writers.items():
        if dataset in overwrite:
            continue
        head = refs.head(store.storage, dataset, known)
        if head is None:
            continue
        author = head.lineage.get("blueprint")
        if author == blueprint.name:
            continue
        if author:
            by = f"blueprint {author!r} wrote it"
        elif head.operation == "freeze":
            by = "it was frozen by `snapshot freeze`, not by a blueprint"
        else:
            by = f"it was written by {head.operation!r}, not by a blueprint"
        raise UsageError(
            f"stage {stage!r} would overwrite dataset {dataset!r}: its head (version "
            f"{head.version}) is not an output of blueprint {blueprint.name!r} ({by})",
            hint=f"write stage {stage!r} to another dataset, or pass --overwrite {dataset} to "
            "make this run's output its new head (its history is kept)",
        )
