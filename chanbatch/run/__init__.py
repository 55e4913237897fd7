"""Execute a plan on a Dask scheduler, freeze the outputs, and record the run."""

from chanbatch.run.runner import RunResult, plan_blueprint, run_blueprint

__all__ = ["RunResult", "plan_blueprint", "run_blueprint"]
