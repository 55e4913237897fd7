"""Plan + decisions -> a Dask graph whose keys are the cache keys.

Every task function runs on a worker and records its own result in the cache as soon as it is
computed, so a run that is killed keeps everything it finished.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from chanbatch.blueprint.model import Stage
from chanbatch.cache import lookup, read_result, write_result
from chanbatch.compile import execute
from chanbatch.compile.decide import Decision
from chanbatch.compile.plan import CHECKPOINT_RATIO, Plan, Task
from chanbatch.errors import ChanbatchError, UsageError
from chanbatch.snapshot.objects import get_slice
from chanbatch.snapshot.read import load_object, to_pandas
from chanbatch.snapshot.storage import Storage

if TYPE_CHECKING:
    import pandas as pd

_STORAGES: dict[str, Storage] = {}


def storage_for(url: str) -> Storage:
    """One Storage per store URL per process (workers included)."""
    storage = _STORAGES.get(url)
    if storage is None:
        storage = _STORAGES[url] = Storage(url)
    return storage


@dataclass(frozen=True, slots=True, kw_only=True)
class Call:
    """Everything a worker needs to run one task; pickled into the graph."""

    url: str
    task: Task
    stage: Stage | None
    n_broadcast: int = 0
    allow: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Ref:
    """A key passed as data: Dask would replace a bare string equal to a key by its value."""

    url: str
    key: str
    columns: tuple[str, ...] | None = None


def load_slice(ref: Ref) -> pd.DataFrame:
    """An input slice as pandas, verified as read."""
    import pyarrow as pa

    storage = storage_for(ref.url)
    manifest = get_slice(storage, ref.key)
    tables = [load_object(storage, part.object, ref.columns) for part in manifest.parts]
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    return to_pandas(table)


def load_cached(ref: Ref) -> pd.DataFrame:
    """A cached result as pandas."""
    storage = storage_for(ref.url)
    entry = lookup(storage, ref.key)
    if entry is None:
        raise ChanbatchError(f"cache entry {ref.key[:12]} vanished during the run; run again")
    return read_result(storage, entry)


def run_task(call: Call, *deps: pd.DataFrame) -> pd.DataFrame:
    """Run one task on its inputs' frames, and record it in the cache if it is stored."""
    task, stage = call.task, call.stage
    main = deps[: len(deps) - call.n_broadcast] if call.n_broadcast else deps
    broadcast = deps[len(deps) - call.n_broadcast :] if call.n_broadcast else ()
    if task.kind == "gather":
        return execute.concat(main)
    assert stage is not None
    try:
        if task.kind == "apply":
            result = execute.apply_rowwise(stage, main[0], broadcast, call.allow)
        elif task.kind == "partial":
            result = execute.partial(stage, main[0])
        elif task.kind == "combine":
            result = execute.combine(stage, main)
        elif task.kind == "finish":
            result = execute.finish(stage, main)
        else:
            result = execute.apply_whole(stage, main, broadcast, call.allow)
    except (execute.StageFailed, UsageError):
        raise
    except ChanbatchError as exc:
        raise execute.describe_failure(stage, task.slice, exc) from exc
    except Exception as exc:
        raise execute.describe_failure(stage, task.slice, exc) from exc
    if task.stored or (
        task.checkpoint and len(result) <= CHECKPOINT_RATIO * max(task.source_rows, 1)
    ):
        write_result(storage_for(call.url), task.key, result, kind=task.kind, stage=task.stage)
    return result


def build_graph(
    plan: Plan, decisions: dict[str, Decision], url: str, allow: frozenset[str]
) -> dict[str, Any]:
    """The Dask graph of every task a run must execute or read."""
    graph: dict[str, Any] = {}
    wanted: set[str] = set()
    for key, decision in decisions.items():
        if decision.action == "compute":
            wanted.add(key)
            wanted.update(plan.tasks[key].deps)
    for stage in plan.blueprint.outputs:
        wanted.update(k for k in plan.results[stage].keys if k)
    for key in wanted:
        task = plan.tasks[key]
        decision = decisions[key]
        if task.kind == "load":
            graph[key] = (load_slice, Ref(url, task.ident, task.columns))
        elif decision.action == "compute":
            stage = plan.blueprint.stages.get(task.stage)
            call = Call(
                url=url, task=task, stage=stage, n_broadcast=len(task.broadcast), allow=allow
            )
            graph[key] = (run_task, call, *task.deps)
        else:
            graph[key] = (load_cached, Ref(url, key))
    return graph
