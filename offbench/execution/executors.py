"""Executors: where a sweep's jobs run. One small interface, `run(jobs, root)`: an iterator of `JobResult`s
as jobs end (and None about once a second, so the caller can refresh its progress), and `running`, the group
ids of jobs being trained now. Both executors call the same job function (`offbench.execution.sweep.run_job`).

**local** (default): a process pool (spawn) sized to the machine's cores, one torch thread per worker. At
most one job per worker is handed out at a time, so a worker killed mid-job (the pool is then broken)
costs only the jobs in flight: the pool is rebuilt and they are submitted again, up to `retries` times, and
each resumes from its checkpoint. Workers write records and the SQLite index directly (same host: WAL and a
busy timeout take the concurrent writers). A worker whose driver is gone stops its job as if by SIGTERM (its
runs are marked interrupted, its checkpoint kept) and exits, so a killed driver leaves no orphan training on and
no idle worker (nor, once the workers are gone, the multiprocessing resource tracker) waiting forever.

**ray**: Ray core tasks (`pip install offbench[ray]`), on a local Ray instance or a running cluster
(`address`), with `cpus` and `gpus` per job (fractional GPUs: several seed groups share one device) and
`retries` of tasks whose worker was lost. Records travel by the **shared filesystem**: the results store's
folder must be mounted at the same path on every node (NFS or similar); a worker writes its run folders and
checkpoints there (atomic renames) but never `index.sqlite` (SQLite's locks do not span machines), and the
driver indexes each job's runs when the job returns. A lost worker's checkpoint is on the shared folder,
so Ray's retry resumes the group from its last evaluation.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool

from offbench.errors import OffbenchError
from offbench.execution.sweep import Job, JobResult, run_job

TICK_S = 1.0


def default_workers() -> int:
    """The machine's cores available to this process."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class Executor:
    name = "executor"
    indexes_in_driver = False  # whether the driver must index the runs of each returned job
    workers = 1

    def run(self, jobs: Sequence[Job], root: str) -> Iterator[JobResult | None]:
        raise NotImplementedError

    @property
    def running(self) -> set[str]:
        return set()

    def close(self) -> None: ...


# ---- local ----------------------------------------------------------------------------------------------


def _worker_init(parent: int, threads: int) -> None:
    """One torch thread; SIGTERM stops training as Ctrl-C does; the worker stops itself when its driver dies."""
    import torch

    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(threads)
    except RuntimeError:
        pass

    def stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, stop)
    threading.Thread(target=_exit_when_orphaned, args=(parent,), daemon=True).start()


_BUSY = threading.Event()  # set while this worker runs a job
ORPHAN_GRACE_S = 120.0  # how long an orphaned worker's job may take to record its interruption before the worker exits anyway


def _exit_when_orphaned(parent: int) -> None:
    """Once the driver is gone (SIGKILL, a lost terminal), stop the job in flight as SIGTERM does (its runs are marked
    interrupted, its checkpoint kept), then exit the process: an idle pool worker would otherwise wait on its call
    queue forever, and hold the multiprocessing resource tracker open with it."""
    while os.getppid() == parent:
        time.sleep(1.0)
    if _BUSY.is_set():
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + ORPHAN_GRACE_S
        while _BUSY.is_set() and time.monotonic() < deadline:
            time.sleep(0.2)
    os._exit(0 if not _BUSY.is_set() else 1)


def _pool_job(job: Job, root: str) -> JobResult:
    """`run_job` in a pool worker, marked busy while it runs (see `_exit_when_orphaned`)."""
    _BUSY.set()
    try:
        return run_job(job, root, True)
    finally:
        _BUSY.clear()


class LocalExecutor(Executor):
    name = "local"

    def __init__(self, workers: int | None = None, retries: int = 2, threads: int = 1) -> None:
        self.workers = workers or default_workers()
        if self.workers < 1:
            raise OffbenchError(f"--workers must be at least 1, got {self.workers}")
        self.retries, self.threads = retries, threads
        self.pool: ProcessPoolExecutor | None = None
        self.in_flight: dict[Future, Job] = {}

    @property
    def running(self) -> set[str]:
        return {job.group_id for job in self.in_flight.values()}

    def _new_pool(self) -> ProcessPoolExecutor:
        os.environ.setdefault("OMP_NUM_THREADS", str(self.threads))  # inherited by spawned workers before torch loads
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                                   initargs=(os.getpid(), self.threads))

    def run(self, jobs: Sequence[Job], root: str) -> Iterator[JobResult | None]:
        queue, attempts = list(jobs), {job.group_id: 0 for job in jobs}
        self.pool = self._new_pool()
        try:
            while queue or self.in_flight:
                while queue and len(self.in_flight) < self.workers:
                    job = queue.pop(0)
                    attempts[job.group_id] += 1
                    self.in_flight[self.pool.submit(_pool_job, job, root)] = job
                done, _ = wait(list(self.in_flight), timeout=TICK_S, return_when=FIRST_COMPLETED)
                broken = False
                for future in done:
                    job = self.in_flight.pop(future)
                    try:
                        yield future.result()
                    except BrokenProcessPool:
                        broken = True
                        if attempts[job.group_id] <= self.retries:
                            queue.insert(0, job)
                        else:
                            yield JobResult(job.group_id, job.label(), "failed", job.run_ids,
                                            f"its worker process died {attempts[job.group_id]} times (killed, or out of memory)")
                if broken:  # every job still in flight died with the pool: run them again
                    for job in list(self.in_flight.values()):
                        queue.insert(0, job)
                    self.in_flight.clear()
                    self.pool.shutdown(wait=True, cancel_futures=True)
                    self.pool = self._new_pool()
                if not done:
                    yield None
        finally:
            self.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None
        self.in_flight.clear()


# ---- ray ----------------------------------------------------------------------------------------------


def _ray_job(job: Job, root: str) -> JobResult:
    import torch

    torch.set_num_threads(1)
    return run_job(job, root, indexed=False)


PASSED_ENV = ("OFFBENCH_DATA_DIR", "OFFBENCH_RESULTS_DIR", "MINARI_DATASETS_PATH", "D4RL_DATASET_DIR", "HF_HUB_OFFLINE", "MUJOCO_GL")


class RayExecutor(Executor):
    name = "ray"
    indexes_in_driver = True

    def __init__(self, address: str | None = None, cpus: float = 1.0, gpus: float = 0.0, retries: int = 2, num_cpus: int | None = None) -> None:
        if not (math.isfinite(cpus) and cpus > 0 and math.isfinite(gpus) and gpus >= 0):  # NaN passes every comparison
            raise OffbenchError(f"--cpus-per-job must be positive and --gpus-per-job non-negative, got {cpus} and {gpus}")
        try:
            import ray  # noqa: F401
        except ImportError:
            raise OffbenchError("the ray executor needs Ray", 'pip install "offbench[ray]"') from None
        self.address, self.cpus, self.gpus, self.retries, self.num_cpus = address, cpus, gpus, retries, num_cpus
        self.refs: dict = {}
        self.started = False
        self.capacity: int | None = None

    @property
    def running(self) -> set[str]:
        return {job.group_id for job in self.refs.values()}

    @property
    def workers(self) -> int:
        """Jobs the cluster runs at once: its CPUs over --cpus-per-job, and its GPUs over --gpus-per-job when jobs take GPUs
        (connecting to Ray, or starting it, on first use; measured once)."""
        if self.capacity is None:
            self._connect()
        return self.capacity

    def _connect(self) -> None:
        import ray

        if not ray.is_initialized():
            env = {"OMP_NUM_THREADS": "1", **{k: os.environ[k] for k in PASSED_ENV if k in os.environ}}
            kwargs = {"address": self.address} if self.address else {"num_cpus": self.num_cpus}
            ray.init(**kwargs, runtime_env={"env_vars": env}, include_dashboard=False, logging_level="ERROR", log_to_driver=False)
            self.started = True
        if self.capacity is None:
            resources = ray.cluster_resources()
            fits = [resources.get("CPU", 1) // self.cpus] + ([resources.get("GPU", 0) // self.gpus] if self.gpus else [])
            self.capacity = int(min(fits)) or 1

    def run(self, jobs: Sequence[Job], root: str) -> Iterator[JobResult | None]:
        import ray

        self._connect()
        task = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=self.retries)(_ray_job)
        self.refs = {task.remote(job, str(root)): job for job in jobs}
        try:
            while self.refs:
                done, _ = ray.wait(list(self.refs), num_returns=1, timeout=TICK_S)
                if not done:
                    yield None
                for ref in done:
                    job = self.refs.pop(ref)
                    try:
                        yield ray.get(ref)
                    except Exception as error:  # noqa: BLE001  (a worker lost more often than the retries allow)
                        yield JobResult(job.group_id, job.label(), "failed", job.run_ids, f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
        finally:
            self.close()

    def close(self) -> None:
        import ray

        for ref in self.refs:
            ray.cancel(ref, force=True)
        self.refs = {}
        if self.started and ray.is_initialized():
            ray.shutdown()
            self.started = False


def make_executor(name: str, workers: int | None = None, address: str | None = None, cpus: float = 1.0, gpus: float = 0.0,
                  retries: int = 2) -> Executor:
    if name == "local":
        return LocalExecutor(workers, retries)
    if name == "ray":
        return RayExecutor(address, cpus, gpus, retries, num_cpus=workers)
    raise OffbenchError(f"unknown executor {name!r}", "use local or ray")
