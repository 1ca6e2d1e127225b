"""Where a study lives: a SQLAlchemy storage with heartbeats, and the study itself.

The default is an embedded SQLite file, in WAL mode with a long lock timeout so a few local
workers do not hit "database is locked"; PostgreSQL (or MySQL) serves many machines. Heartbeats
are on for both, so a worker killed mid-trial leaves a FAIL trial that the next worker retries
with the same parameters and seed. A database that goes away for a while (a restarted server)
is waited for: every storage call retries connection errors with backoff for up to
``RECONNECT_SECONDS``. A SQLite folder that is read-only or nearly full is refused before any
training. A study remembers its task, so a command that changes it cannot resume it, and the
command lines that ran it (``user_attrs["commands"]``). A ``.log`` path is a journal file.
"""

from __future__ import annotations

import copy
import datetime
import functools
import os
import shutil
import sqlite3
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import optuna
from optuna.trial import FrozenTrial, TrialState

from sb3_ppo_variants.tuning.errors import TuningError
from sb3_ppo_variants.tuning.objective import Task

DEFAULT_STORAGE = "sqlite:///tuning.db"
# Optuna 4.9 renamed the callback that re-queues a lost worker's trial.
_RETRY = getattr(optuna.storages, "RetryHeartbeatStaleTrialCallback", optuna.storages.RetryFailedTrialCallback)
HEARTBEAT_INTERVAL = 60
"""Seconds between a running trial's heartbeats; a trial silent for twice this is stale."""
RECONNECT_SECONDS = 120.0
"""How long a storage call waits for a database that has gone away (a restarting server)."""
MIN_FREE_BYTES = 64 * 2**20
"""A SQLite study's folder needs this much free space to start (a study's file grows by MBs)."""

_Method = TypeVar("_Method", bound=Callable[..., Any])


def _connection_lost(error: BaseException) -> bool:
    """Whether ``error`` (or what it wraps: Optuna raises StorageInternalError from it) is the
    database being unreachable, which a later try can get past."""
    import sqlalchemy

    while error is not None:
        if isinstance(error, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
            return True
        if isinstance(error, sqlalchemy.exc.DBAPIError) and error.connection_invalidated:
            return True
        error = error.__cause__  # type: ignore[assignment]
    return False


def _retrying(call: Callable[[], Any], done: Callable[[], Any] | None = None) -> Any:
    """``call()``, tried again with backoff while the database is unreachable (for up to
    :data:`RECONNECT_SECONDS`). ``done()``, asked before each try after the first, returns the
    result when the lost try's write had committed (its reply lost), ``None`` when it had not."""
    deadline, delay, tried = time.monotonic() + RECONNECT_SECONDS, 0.25, False
    while True:
        try:
            if tried and done is not None:
                result = done()
                if result is not None:
                    return result
            return call()
        except Exception as error:
            if not _connection_lost(error) or time.monotonic() + delay > deadline:
                raise
            tried = True
            time.sleep(delay)  # pool_pre_ping then replaces the dead connections
            delay = min(2 * delay, 8.0)


def _reconnecting(method: _Method) -> _Method:
    @functools.wraps(method)
    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        return _retrying(lambda: method(self, *args, **kwargs))

    return call  # type: ignore[return-value]


CREATION_TOKEN = "sb3_ppo_variants:creation"
"""A new trial's system attribute: the token that finds it again when the reply to its creation was lost."""


class ReconnectingStorage(optuna.storages.RDBStorage):
    """Optuna's ``RDBStorage``, its every call retried with backoff while the database is unreachable.

    Writes that must not be applied twice check, before trying again, whether the lost try had
    committed: a new trial is found by its creation token (no extra trial), a state already written
    is success (a retried ``tell`` does not raise), and a claim (``WAITING -> RUNNING``) whose reply
    was lost leaves the trial with a heartbeat, so a stale-trial check fails it and its retry
    callback enqueues it again, instead of it staying RUNNING forever.
    """

    def _create_new_trial(self, study_id: int, template_trial: FrozenTrial | None = None) -> FrozenTrial:
        token = uuid.uuid4().hex
        template = _with_token(template_trial, token)

        def created() -> FrozenTrial | None:
            for trial in optuna.storages.RDBStorage.get_all_trials(self, study_id, deepcopy=False):
                if trial.system_attrs.get(CREATION_TOKEN) == token:
                    return trial
            return None

        return _retrying(lambda: optuna.storages.RDBStorage._create_new_trial(self, study_id, template), created)

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        def written() -> bool | None:
            trial = optuna.storages.RDBStorage.get_trial(self, trial_id)
            if state.is_finished() and trial.state == state:
                return True  # our tell committed before its reply was lost
            if state == TrialState.RUNNING and trial.state == TrialState.RUNNING:
                optuna.storages.RDBStorage.record_heartbeat(self, trial_id)  # stale unless someone beats
                return False  # whose claim it was cannot be told: let the stale check retry it
            return None

        return _retrying(
            lambda: optuna.storages.RDBStorage.set_trial_state_values(self, trial_id, state, values), written
        )


def _with_token(template: FrozenTrial | None, token: str) -> FrozenTrial:
    if template is None:  # what RDBStorage makes of no template: a RUNNING trial started now
        return FrozenTrial(
            number=0,
            state=TrialState.RUNNING,
            value=None,
            datetime_start=datetime.datetime.now(),
            datetime_complete=None,
            params={},
            distributions={},
            user_attrs={},
            system_attrs={CREATION_TOKEN: token},
            intermediate_values={},
            trial_id=0,
        )
    template = copy.deepcopy(template)
    template.system_attrs = {**template.system_attrs, CREATION_TOKEN: token}
    return template


RETRIED_STORAGE_API = (
    # optuna.storages.BaseStorage's methods (all but remove_session, which opens nothing) ...
    "check_trial_is_updatable",
    "create_new_study",
    "create_new_trial",
    "delete_study",
    "get_all_studies",
    "get_all_trials",
    "get_best_trial",
    "get_n_trials",
    "get_study_directions",
    "get_study_id_from_name",
    "get_study_name_from_id",
    "get_study_system_attrs",
    "get_study_user_attrs",
    "get_trial",
    "get_trial_id_from_study_id_trial_number",
    "get_trial_number_from_id",
    "get_trial_param",
    "get_trial_params",
    "get_trial_system_attrs",
    "get_trial_user_attrs",
    "set_study_system_attr",
    "set_study_user_attr",
    "set_trial_intermediate_value",
    "set_trial_param",
    "set_trial_system_attr",
    "set_trial_user_attr",
    # ... and its heartbeat methods (optuna.storages.BaseHeartbeat's public ones).
    "get_failed_trial_callback",
    "get_heartbeat_interval",
    "get_heartbeat_stale_trial_callback",
    "record_heartbeat",
)
"""The public storage API that :class:`ReconnectingStorage` retries as it is; ``set_trial_state_values``
and ``_create_new_trial`` have retries of their own, above. A test checks this list against
Optuna's ``BaseStorage`` and ``BaseHeartbeat``, so a method a new Optuna adds cannot go unretried."""
RETRIED_RDB_CALLS = ("_get_best_trial_id", "_get_stale_trial_ids", "_get_trials", "_set_trial_param")
"""``RDBStorage``'s own methods that Optuna's cache (the ``_CachedStorage`` a study puts around an
``RDBStorage``) and its heartbeat code call directly, bypassing the public API. They are Optuna's
private methods: the versions of Optuna this list was checked with are ``pyproject.toml``'s range,
and a test fails if one of them is missing."""
for _name in (*RETRIED_STORAGE_API, *RETRIED_RDB_CALLS):
    setattr(ReconnectingStorage, _name, _reconnecting(getattr(optuna.storages.RDBStorage, _name)))


def open_storage(url: str, heartbeat_interval: int | None = HEARTBEAT_INTERVAL) -> optuna.storages.BaseStorage:
    """A database storage with heartbeats and retries; a clear ``TuningError`` if it cannot be opened.

    A path ending in ``.log`` is a journal file instead (as the Zoo's ``--storage x.log``), for
    file systems where SQLite's locking fails (NFS); it has no heartbeats (see :data:`JOURNAL_WARNING`).
    """
    if url.endswith(".log"):
        return _journal_storage(Path(url), heartbeat_interval)
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
                    return ReconnectingStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
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


JOURNAL_WARNING = (
    "a journal-file storage has no heartbeats: the trial of a worker that is killed stays RUNNING "
    "and is not retried (a database storage retries it)"
)


def _journal_storage(path: Path, heartbeat_interval: int | None) -> optuna.storages.BaseStorage:
    from optuna.storages.journal import JournalFileBackend

    _check_folder(path.resolve(), str(path))
    if heartbeat_interval:
        warnings.warn(JOURNAL_WARNING, stacklevel=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.JournalStorage(JournalFileBackend(str(path)))


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
    _check_folder(path, f"sqlite:///{database}")
    for attempt in range(5):
        try:
            with sqlite3.connect(path, timeout=120) as connection:
                connection.execute("PRAGMA journal_mode=WAL")
            connection.close()
            return
        except sqlite3.OperationalError as error:
            # Two processes switching a new file to WAL at once can deadlock on its locks; SQLite
            # then fails one of them at once ("database is locked") instead of waiting the
            # timeout, and its next try finds the file already switched.
            if attempt == 4 or "locked" not in str(error):
                raise TuningError(f"cannot open storage sqlite:///{database}: {error}") from error
            time.sleep(0.1 * (attempt + 1))
        except sqlite3.Error as error:
            raise TuningError(f"cannot open storage sqlite:///{database}: {error}") from error


def _check_folder(path: Path, shown: str) -> None:
    """Refuse, before any training, a SQLite file that could not be written or could not grow."""
    folder = path.parent
    if not folder.exists():
        raise TuningError(f"cannot open storage {shown}: folder {folder} does not exist")
    probe = folder / f".{path.name}.{os.getpid()}.probe"
    try:
        probe.write_bytes(b"0")  # os.access says yes to root on a read-only file system
        probe.unlink()
    except OSError as error:
        raise TuningError(f"cannot open storage {shown}: folder {folder} is not writable ({error.strerror})") from error
    free = shutil.disk_usage(folder).free
    if free < MIN_FREE_BYTES:
        raise TuningError(
            f"cannot open storage {shown}: folder {folder} has {free / 2**20:.1f} MiB free, "
            f"a study needs at least {MIN_FREE_BYTES // 2**20} MiB"
        )


TASK_WAIT_S = 5.0
"""How long a study without a task and without trials is given to get its task: the worker that
created it records the task just after creating it."""


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
            pass  # another worker created it just now: load it below (and let it set the task)
        study_id = storage.get_study_id_from_name(study_name)
    directions = storage.get_study_directions(study_id)
    if directions != [optuna.study.StudyDirection.MAXIMIZE]:
        raise TuningError(
            f"study {study_name!r} exists with direction {[d.name.lower() for d in directions]}: tuning maximises "
            "the return; use another --study-name"
        )
    study = optuna.load_study(study_name=study_name, storage=storage, sampler=sampler, pruner=pruner)
    stored = storage.get_study_user_attrs(study_id).get("task")
    deadline = time.monotonic() + TASK_WAIT_S
    while stored is None and not storage.get_all_trials(study_id, deepcopy=False) and time.monotonic() < deadline:
        time.sleep(0.1)  # a worker started beside this one created the study and is about to record its task
        stored = storage.get_study_user_attrs(study_id).get("task")
    if stored is None:
        raise TuningError(f"study {study_name!r} was not made by python -m tuning (it has no task); use another name")
    stored = Task.from_dict(stored).as_dict()  # a study made before a field existed has its default
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
