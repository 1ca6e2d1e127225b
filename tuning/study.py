"""Running a study: storage, sampler, pruner, worker processes, progress.

``run_study`` is the Python API behind ``python -m tuning``. Every check (the environment, the
space, the storage, an existing study's direction and task) happens before any training.

Storage: a SQLAlchemy URL. The default is an embedded SQLite file, in WAL mode with a long lock
timeout so a few local workers do not hit "database is locked"; PostgreSQL (or MySQL) serves
many machines. Heartbeats are on for both, so a worker killed mid-trial leaves a FAIL trial
that the next worker retries with the same parameters and seed.
"""

from __future__ import annotations

import math
import multiprocessing
import sqlite3
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from tuning.objective import Objective, Space, Task, TuningError
from tuning.space import SearchSpace

DEFAULT_STORAGE = "sqlite:///tuning.db"
SAMPLERS = ("tpe", "random", "cmaes", "gp")
PRUNERS = ("median", "halving", "none")
# Optuna 4.9 renamed the callback that re-queues a lost worker's trial.
_RETRY = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", optuna.storages.RetryFailedTrialCallback)
HEARTBEAT_INTERVAL = 60
"""Seconds between a running trial's heartbeats; a trial silent for twice this is stale."""


def make_sampler(name: str, seed: int | None = None, n_startup_trials: int = 10) -> optuna.samplers.BaseSampler:
    """``tpe`` (multivariate, conditional groups, constant liar for parallel workers), ``random``,
    ``cmaes`` or ``gp``; the first ``n_startup_trials`` are random for all but ``random``."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(
                n_startup_trials=n_startup_trials, multivariate=True, group=True, constant_liar=True, seed=seed
            )
        # Both model the numeric parameters shared by all trials; the conditional loss parameters
        # are sampled independently (by TPE), which is expected here, not worth a warning per trial.
        independent = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
        if name == "cmaes":
            return optuna.samplers.CmaEsSampler(
                n_startup_trials=n_startup_trials,
                seed=seed,
                independent_sampler=independent,
                warn_independent_sampling=False,
            )
        if name == "gp":
            return optuna.samplers.GPSampler(
                n_startup_trials=n_startup_trials,
                seed=seed,
                independent_sampler=independent,
                warn_independent_sampling=False,
            )
    raise TuningError(f"sampler={name!r} is invalid: accepted values are {', '.join(SAMPLERS)}")


def make_pruner(name: str, task: Task, n_startup_trials: int = 5) -> optuna.pruners.BasePruner:
    """``median`` (after ``n_startup_trials`` trials and the first third of a run), ``halving``
    (successive halving), or ``none``. Steps are environment steps."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=task.n_timesteps // 3)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise TuningError(f"pruner={name!r} is invalid: accepted values are {', '.join(PRUNERS)}")


def open_storage(url: str, heartbeat_interval: int | None = HEARTBEAT_INTERVAL) -> optuna.storages.BaseStorage:
    """A database storage with heartbeats and retries; a clear ``TuningError`` if it cannot be opened."""
    import sqlalchemy

    try:
        parsed = sqlalchemy.engine.make_url(url)
    except sqlalchemy.exc.ArgumentError as error:
        raise TuningError(f"storage {url!r} is not a SQLAlchemy URL (e.g. sqlite:///tuning.db): {error}") from error
    shown = parsed.render_as_string(hide_password=True)
    engine_kwargs: dict[str, Any] = {}
    if parsed.get_backend_name() == "sqlite":
        engine_kwargs["connect_args"] = {"timeout": 120}  # wait for a busy writer instead of failing
        _use_wal(parsed.database)
    elif parsed.get_backend_name() == "postgresql":
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
        engine_kwargs["pool_pre_ping"] = True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            heartbeat: dict[str, Any] = {}
            if heartbeat_interval:
                heartbeat = {
                    "heartbeat_interval": heartbeat_interval,
                    "grace_period": 2 * heartbeat_interval,
                    "heartbeat_stale_trial_callback": _RETRY(max_retry=2),
                }
            for attempt in range(3):
                try:
                    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
                except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                    # Workers starting together on a new database race to create its tables (the
                    # loser sees a duplicate key, or on PostgreSQL "relation ... already exists");
                    # it finds them there on the next try.
                    if attempt == 2:
                        raise
                    time.sleep(0.5)
    except ImportError as error:
        raise TuningError(
            f"storage {shown}: no database driver for {parsed.drivername} (for PostgreSQL: pip install psycopg2-binary)"
        ) from error
    except sqlalchemy.exc.SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise TuningError(f"cannot open storage {shown}: {reason}") from error


def _use_wal(database: str | None) -> None:
    """Write-ahead logging lets workers read while one writes (it persists in the file)."""
    if not database or database == ":memory:":
        return
    path = Path(database)
    if not path.parent.exists():
        raise TuningError(f"cannot open storage sqlite:///{database}: folder {path.parent} does not exist")
    with sqlite3.connect(path, timeout=120) as connection:
        connection.execute("PRAGMA journal_mode=WAL")


def open_study(
    storage: optuna.storages.BaseStorage,
    study_name: str,
    task: Task | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    """Create the study, or load it to resume. With ``task=None`` it must exist (report, retrain).

    Refuses a study that minimises, or one made for another task, naming the difference.
    """
    try:
        study_id = storage.get_study_id_from_name(study_name)
    except KeyError:
        study_id = None
    if study_id is None:
        if task is None:
            names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage)) or "none"
            raise TuningError(f"no study named {study_name!r} in this storage: studies there are {names}")
        try:
            study = optuna.create_study(
                storage=storage, study_name=study_name, direction="maximize", sampler=sampler, pruner=pruner
            )
            study.set_user_attr("task", task.as_dict())
            return study
        except optuna.exceptions.DuplicatedStudyError:
            time.sleep(0.5)  # another worker created it just now: load it below (and let it set the task)
        study_id = storage.get_study_id_from_name(study_name)
    directions = storage.get_study_directions(study_id)
    if directions != [optuna.study.StudyDirection.MAXIMIZE]:
        raise TuningError(
            f"study {study_name!r} exists with direction {[d.name.lower() for d in directions]}: tuning maximises "
            "the return; use another --study-name"
        )
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
    stored = study.user_attrs.get("task")
    if stored is None:
        raise TuningError(f"study {study_name!r} was not made by python -m tuning (it has no task); use another name")
    if task is not None and stored != task.as_dict():
        differences = ", ".join(
            f"{k}={stored.get(k)!r} there, {v!r} here" for k, v in task.as_dict().items() if stored.get(k) != v
        )
        raise TuningError(
            f"study {study_name!r} exists for another task ({differences}): run the same settings to resume it, "
            "or use another --study-name"
        )
    return study


def task_of(study: optuna.Study) -> Task:
    return Task.from_dict(study.user_attrs["task"])


# --- progress ---------------------------------------------------------------------------


def counts(trial: FrozenTrial) -> bool:
    """Whether a finished trial counts towards ``n_trials``: it ran to an outcome.

    A FAIL without ``fail_reason`` was interrupted (Ctrl-C) or lost its worker (and is retried).
    """
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "fail_reason" in trial.user_attrs


def status_line(trial: FrozenTrial) -> str:
    """One line per finished trial: its outcome, value or where it stopped, and its duration."""
    seconds = trial.duration.total_seconds() if trial.duration else math.nan
    if trial.state == TrialState.COMPLETE:
        outcome = f"value {trial.value:.2f}"
    elif trial.state == TrialState.PRUNED:
        reason = trial.user_attrs.get("pruned_reason", "pruned")
        last = trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else None
        outcome = reason + (f" (last evaluation {last:.2f})" if last is not None else "")
    elif trial.state == TrialState.FAIL:
        outcome = "failed: " + trial.user_attrs.get("fail_reason", "interrupted or its worker was lost")
    else:
        outcome = trial.state.name.lower()
    loss = trial.params.get("policy_loss")
    return f"trial {trial.number:>4} {trial.state.name:<8} {outcome}, {seconds:.1f} s" + (f" [{loss}]" if loss else "")


class Progress:
    """A progress bar over counted trials and a status line for each trial as it finishes."""

    def __init__(self, study: optuna.Study, n_trials: int, enabled: bool = True) -> None:
        from tqdm.auto import tqdm

        self.study, self.enabled = study, enabled
        finished = self._finished()
        self.seen = {t.number for t in finished}
        done = sum(counts(t) for t in finished)
        self.bar = tqdm(total=n_trials, initial=min(done, n_trials), unit="trial", disable=not enabled)

    def _finished(self) -> list[FrozenTrial]:
        return self.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL))

    def update(self) -> None:
        for trial in sorted(self._finished(), key=lambda t: t.number):
            if trial.number in self.seen:
                continue
            self.seen.add(trial.number)
            if self.enabled:
                self.bar.write(status_line(trial))
            if counts(trial):
                self.bar.update(1)

    def close(self) -> None:
        self.update()
        self.bar.close()


# --- workers ----------------------------------------------------------------------------


def _optimize(
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
class _Workers:
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


def _worker(settings: _Workers, index: int, objective: Objective) -> None:
    """One worker process: one torch thread, its own connection, its own sampler seed."""
    import torch as th

    th.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = open_study(
        open_storage(settings.storage_url, settings.heartbeat_interval),
        settings.study_name,
        sampler=make_sampler(settings.sampler, settings.seed + index, settings.n_startup_trials),
        pruner=make_pruner(settings.pruner, objective.task, settings.pruner_startup_trials),
    )
    try:
        _optimize(study, objective, settings.n_trials, time.monotonic() + settings.timeout)
    except KeyboardInterrupt:
        pass  # the interrupted trial is marked FAIL (not counted); finished trials are in the storage


def _run_workers(settings: _Workers, n_jobs: int, objective: Objective, progress: Progress) -> None:
    # spawn: a fresh interpreter per worker, with no inherited torch threads or database sockets.
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_worker, args=(settings, i, objective), name=f"tuning-worker-{i}") for i in range(n_jobs)
    ]
    for worker in workers:
        worker.start()
    try:
        while any(worker.is_alive() for worker in workers):
            progress.update()
            time.sleep(1.0)
    finally:
        for worker in workers:  # on Ctrl-C the workers got it too: give them time to mark their trials
            worker.join(timeout=30)
            if worker.is_alive():
                worker.terminate()
                worker.join()
    lost = [w.name for w in workers if w.exitcode not in (0, None)]
    if lost:
        progress.bar.write(f"warning: {', '.join(lost)} exited with an error; their running trials are retried")


def run_study(
    env_id: str,
    n_trials: int = 40,
    n_timesteps: int = 50_000,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    space: SearchSpace | Space | Callable[[optuna.Trial, int], dict[str, Any]] | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    n_jobs: int = 1,
    seed: int = 0,
    n_startup_trials: int = 10,
    pruner_startup_trials: int = 5,
    timeout: float | None = None,
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL,
    progress: bool = True,
    **task_settings: Any,
) -> optuna.Study:
    """Tune ``PPOVariant`` on ``env_id``; create the study or resume it; return it.

    :param n_trials: Trials to reach in the study (finished ones from earlier runs count), across
        all workers and machines sharing it.
    :param storage: A SQLAlchemy URL; default :data:`DEFAULT_STORAGE`, a SQLite file here.
    :param study_name: Default: ``env_id``. Running again with the same name resumes.
    :param space: The search space (default :class:`~tuning.space.SearchSpace`), or a function
        ``(trial, n_envs) -> PPOVariant keyword arguments``; with ``n_jobs > 1`` it must pickle.
    :param sampler: One of :data:`SAMPLERS`; ``seed`` seeds it (worker ``i`` uses ``seed + i``)
        and the trials (see :func:`~tuning.objective.trial_seed`).
    :param pruner: One of :data:`PRUNERS`.
    :param n_jobs: Worker processes, one torch thread each. ``1`` runs in this process.
    :param timeout: Seconds after which no new trial starts.
    :param heartbeat_interval: Seconds; ``None`` turns heartbeats (and retries of lost trials) off.
    :param task_settings: :class:`~tuning.objective.Task` fields (``n_envs``, ``n_evaluations``,
        ``n_eval_episodes``, ``n_last_evaluations``, ``n_train_seeds``, ...).
    """
    for name, value in (("n_trials", n_trials), ("n_jobs", n_jobs)):
        if not isinstance(value, int) or value < 1:
            raise TuningError(f"{name}={value!r} is invalid: accepted values are integers >= 1")
    task = Task.for_env(env_id, n_timesteps, **task_settings)
    objective = Objective(task, space, seed)
    settings = _Workers(
        storage_url=storage or DEFAULT_STORAGE,
        study_name=study_name or env_id,
        sampler=sampler,
        seed=seed,
        n_startup_trials=n_startup_trials,
        pruner=pruner,
        pruner_startup_trials=pruner_startup_trials,
        n_trials=n_trials,
        timeout=math.inf if timeout is None else timeout,
        heartbeat_interval=heartbeat_interval,
    )
    study = open_study(
        open_storage(settings.storage_url, heartbeat_interval),
        settings.study_name,
        task,
        make_sampler(sampler, seed, n_startup_trials),
        make_pruner(pruner, task, pruner_startup_trials),
    )
    progress_bar = Progress(study, n_trials, enabled=progress)
    try:
        if n_jobs == 1:
            deadline = time.monotonic() + settings.timeout
            _optimize(study, objective, n_trials, deadline, after_trial=progress_bar.update)
        else:
            _run_workers(settings, n_jobs, objective, progress_bar)
    except KeyboardInterrupt:
        progress_bar.close()
        print(f"interrupted: the finished trials are kept in {settings.study_name!r}; run the same command to resume")
        return study
    progress_bar.close()
    return study
