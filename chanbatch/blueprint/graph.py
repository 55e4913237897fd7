"""Order and cycles in the stage graph, on plain name -> upstream-names mappings.

Edges point upstream: ``edges["late"] == ["flights"]`` means stage ``late`` reads ``flights``.
Names that are not keys (inputs) are leaves. Both functions are deterministic: ties follow the
mapping's order, which is the blueprint's declaration order.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence


def topological_order(edges: Mapping[str, Sequence[str]]) -> list[str]:
    """Every key of ``edges``, each after the keys it reads; raises ValueError on a cycle."""
    position = {name: index for index, name in enumerate(edges)}
    waiting = {name: {up for up in ups if up in edges} for name, ups in edges.items()}
    readers: dict[str, list[str]] = {name: [] for name in edges}
    for name, ups in waiting.items():
        for up in ups:
            readers[up].append(name)
    # a heap by declaration position: a blueprint of thousands of independent stages would
    # make re-sorting a list after every step quadratic
    ready = [position[name] for name, ups in waiting.items() if not ups]
    heapq.heapify(ready)
    names = list(edges)
    order: list[str] = []
    while ready:
        name = names[heapq.heappop(ready)]
        order.append(name)
        for reader in readers[name]:
            waiting[reader].discard(name)
            if not waiting[reader]:
                heapq.heappush(ready, position[reader])
    if len(order) != len(edges):
        cycle = find_cycles(edges)[0]
        raise ValueError(f"stages form a cycle: {' -> '.join(cycle)}")
    return order


def find_cycles(edges: Mapping[str, Sequence[str]]) -> list[list[str]]:
    """The cycles among the keys of ``edges``, each written in data-flow order and closed.

    ``["a", "b", "a"]`` means ``b`` reads ``a`` and ``a`` reads ``b``. Each cycle starts at its
    earliest-declared stage, and each is reported once however many stages lead into it.
    """
    position = {name: index for index, name in enumerate(edges)}
    done: set[str] = set()
    seen_cycles: set[tuple[str, ...]] = set()
    cycles: list[list[str]] = []
    for root in edges:
        if root in done:
            continue
        # Iterative depth-first search: blueprints are small, but recursion limits are not
        # something a user's file should be able to hit.
        path: list[str] = [root]
        on_path = {root}
        pending = [iter(edges[root])]
        while pending:
            up = next(pending[-1], None)
            if up is None:
                pending.pop()
                finished = path.pop()
                on_path.discard(finished)
                done.add(finished)
                continue
            if up not in edges or up in done:
                continue
            if up in on_path:
                loop = path[path.index(up) :]  # each reads the next: the reverse of data flow
                flow = list(reversed(loop))
                start = min(range(len(flow)), key=lambda i: position[flow[i]])
                flow = flow[start:] + flow[:start]
                if tuple(flow) not in seen_cycles:
                    seen_cycles.add(tuple(flow))
                    cycles.append([*flow, flow[0]])
                continue
            path.append(up)
            on_path.add(up)
            pending.append(iter(edges[up]))
    return cycles
