"""Worker processes: each opens the study itself and runs trials until the study has enough.

:func:`run_processes` (spawn the workers, show progress while they run, report lost ones) also
serves the benchmark grid, whose workers claim enqueued cells instead of sampling.
"""

from __future__ import annotations

import multiprocessing
import signal
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import optuna
from optuna.trial import TrialState

from sb3_ppo_variants.tuning.objective import Objective
from sb3_ppo_variants.tuning.progress import Progress, counts
from sb3_ppo_variants.tuning.samplers import make_pruner, make_sampler
from sb3_ppo_variants.tuning.storage import open_storage, open_study


def optimize_until(
    study: optuna.Study,
    objective: Callable[[optuna.Trial], float],
    n_trials: int,
    deadline: float,
    after_trial: Callable[[], None] | None = None,
) -> None:
    """Run trials until ``n_trials`` count (finished or running, all workers) or the deadline."""
    while time.monotonic() < deadline:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)  # so a lost worker's trial does not hold a slot
        trials = study.get_trials(deepcopy=False)
        taken = sum(counts(t) for t in trials) + sum(t.state == TrialState.RUNNING for t in trials)
        if taken >= n_trials:
            return
        # Our objective records why a trial failed; it must not stop this worker or the study.
        study.optimize(objective, n_trials=1, catch=(Exception,))
        if after_trial is not None:
            after_trial()


@dataclass(frozen=True)
class WorkerSettings:
    """What each worker process needs to open the study and run its share of the trials."""

    storage_url: str
    study_name: str
    sampler: str
    seed: int
    n_startup_trials: int
    pruner: str
    pruner_startup_trials: int
    n_trials: int
    timeout: float
    heartbeat_interval: int | None


def interrupt_on_terminate() -> None:
    """SIGTERM (``kill``, a job scheduler, the command stopping its workers) stops a process as
    Ctrl-C does: its running trial is marked for the next command instead of going stale."""

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)


def _worker(settings: WorkerSettings, objective: Objective, index: int) -> None:
    """One worker process: one torch thread, its own connection, its own sampler seed."""
    import torch as th

    interrupt_on_terminate()
    th.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = open_study(
        open_storage(settings.storage_url, settings.heartbeat_interval),
        settings.study_name,
        sampler=make_sampler(settings.sampler, settings.seed + index, settings.n_startup_trials),
        pruner=make_pruner(settings.pruner, objective.task, settings.pruner_startup_trials),
    )
    try:
        optimize_until(study, objective, settings.n_trials, time.monotonic() + settings.timeout)
    except KeyboardInterrupt:
        pass  # the interrupted trial is marked FAIL (not counted); finished trials are in the storage


def run_workers(settings: WorkerSettings, n_jobs: int, objective: Objective, progress: Progress) -> None:
    run_processes(partial(_worker, settings, objective), n_jobs, progress, "tuning-worker")


def run_processes(work: Callable[[int], None], n_jobs: int, progress: Progress, name: str) -> None:
    """Run ``work(i)`` in ``n_jobs`` fresh processes; update ``progress`` until all have exited.

    ``work`` must pickle (a module-level function, or a ``partial`` of one).
    """
    # spawn: a fresh interpreter per worker, with no inherited torch threads or database sockets.
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=work, args=(i,), name=f"{name}-{i}") for i in range(n_jobs)]
    for worker in workers:
        worker.start()
    try:
        while any(worker.is_alive() for worker in workers):
            progress.update()
            time.sleep(1.0)
    except KeyboardInterrupt:
        for worker in workers:  # Ctrl-C reached them too; a SIGTERM to this process did not
            if worker.is_alive():
                worker.terminate()
        raise
    finally:
        for worker in workers:  # give them time to mark their trials
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
                worker.join()
    lost = [w.name for w in workers if w.exitcode not in (0, None)]
    if lost:
        progress.bar.write(f"warning: {', '.join(lost)} exited with an error; their running trials are retried")
