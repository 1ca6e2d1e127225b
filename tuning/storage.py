"""Where a study lives: a SQLAlchemy storage with heartbeats, and the study itself.

The default is an embedded SQLite file, in WAL mode with a long lock timeout so a few local
workers do not hit "database is locked"; PostgreSQL (or MySQL) serves many machines. Heartbeats
are on for both, so a worker killed mid-trial leaves a FAIL trial that the next worker retries
with the same parameters and seed. A study remembers its task, so a command that changes it
cannot resume it.
"""

from __future__ import annotations

import sqlite3
import time
import warnings
from pathlib import Path
from typing import Any

import optuna

from tuning.errors import TuningError
from tuning.objective import Task

DEFAULT_STORAGE = "sqlite:///tuning.db"
# Optuna 4.9 renamed the callback that re-queues a lost worker's trial.
_RETRY = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", optuna.storages.RetryFailedTrialCallback)
HEARTBEAT_INTERVAL = 60
"""Seconds between a running trial's heartbeats; a trial silent for twice this is stale."""


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
                except sqlalchemy.exc.SQLAlchemyError as error:
                    # Workers (or commands) starting together on a new database race to create its
                    # tables: the loser sees a duplicate key, PostgreSQL's "relation ... already
                    # exists" or SQLite's "table studies already exists", and finds them there on
                    # the next try.
                    if attempt == 2 or not _lost_creation_race(error):
                        raise
                    time.sleep(0.5 * (attempt + 1))
    except ImportError as error:
        raise TuningError(
            f"storage {shown}: no database driver for {parsed.drivername} (for PostgreSQL: pip install psycopg2-binary)"
        ) from error
    except sqlalchemy.exc.SQLAlchemyError as error:
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        raise TuningError(f"cannot open storage {shown}: {reason}") from error


def _lost_creation_race(error: Exception) -> bool:
    import sqlalchemy

    if isinstance(error, sqlalchemy.exc.IntegrityError | sqlalchemy.exc.ProgrammingError):
        return True
    return isinstance(error, sqlalchemy.exc.OperationalError) and "already exists" in str(error)


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
