"""Sweeps and executors: a grid of algorithms x datasets x seeds run as seed-group jobs on a local process
pool or a Ray cluster (offbench.execution.sweep: grid, job identity, skip/resume; .executors: local and ray;
.driver: progress and the end-of-sweep account)."""

from offbench.execution.driver import SweepOutcome, run_sweep
from offbench.execution.executors import LocalExecutor, RayExecutor, default_workers, make_executor
from offbench.execution.sweep import Job, JobResult, expand_datasets, grid, job_state, jobs_of, run_job

__all__ = ["Job", "JobResult", "LocalExecutor", "RayExecutor", "SweepOutcome", "default_workers", "expand_datasets", "grid", "job_state",
           "jobs_of", "make_executor", "run_job", "run_sweep"]
