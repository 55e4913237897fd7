"""Human output on the terminal: Rich tables, progress bars and notes, in one place.

This package (with the rest of ``chanbatch.cli``) is the only code that imports rich. Reports
arrive here as plain documents (or result objects) and leave as text on stdout, with progress
and notes on stderr. One module per kind of output:

- :mod:`~chanbatch.cli.render.terminal`: the consoles, the global options, value formatting;
- :mod:`~chanbatch.cli.render.progress`: progress bars of a freeze and of a run;
- :mod:`~chanbatch.cli.render.live`: the live displays they draw (a freeze's phases, a run's
  overall bar over its stages);
- :mod:`~chanbatch.cli.render.snapshots`: freeze, demo, list, history, inspect, verify, diff, gc;
- :mod:`~chanbatch.cli.render.runs`: plan, run, explain and the cache.
"""

from chanbatch.cli.render.live import FreezeView, RunView
from chanbatch.cli.render.progress import (
    RunNotes,
    freeze_progress,
    progress_bar,
    run_progress,
)
from chanbatch.cli.render.runs import (
    cache_list,
    cache_usage,
    explain_report,
    plan_report,
    run_result,
)
from chanbatch.cli.render.snapshots import (
    damage_line,
    dataset_list,
    demo_result,
    diff_report,
    freeze_result,
    gc_report,
    history,
    inspect_report,
    verify_report,
)
from chanbatch.cli.render.terminal import (
    bars_allowed,
    cell,
    console,
    display,
    err_console,
    note,
    on_terminal,
    quiet,
)

__all__ = [
    "FreezeView",
    "RunNotes",
    "RunView",
    "bars_allowed",
    "cache_list",
    "cache_usage",
    "cell",
    "console",
    "damage_line",
    "dataset_list",
    "demo_result",
    "diff_report",
    "display",
    "err_console",
    "explain_report",
    "freeze_progress",
    "freeze_result",
    "gc_report",
    "history",
    "inspect_report",
    "note",
    "on_terminal",
    "plan_report",
    "progress_bar",
    "quiet",
    "run_progress",
    "run_result",
    "verify_report",
]
