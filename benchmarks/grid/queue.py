"""The grid as an Optuna study: each cell an enqueued trial that one worker claims, trains and tells.

The study lives in ``tuning``'s storage (:func:`sb3_ppo_variants.tuning.storage.open_storage`): a SQLite file by
default, PostgreSQL when workers on many machines share it. A worker claims a waiting trial
with the storage's own atomic ``WAITING -> RUNNING`` transition, so two workers never train
the same cell, and sends a heartbeat while it trains. A worker that dies leaves a stale trial:
the next worker to look fails it, and Optuna's retry callback enqueues the same cell again
(the cell is in the trial's user attributes, which the retry keeps). A finished cell, whether
it scored (COMPLETE, its value the score) or raised (FAIL with ``fail_reason``: a diverging
variant is a result of the grid), is never trained again; the learning curve is the trial's
intermediate values, keyed by environment steps.

A cell is finished for its row's current identity only (``benchmarks.grid.rows``): the worker
records on the trial the row's identity and its hash (``row_id``), the commit and the package
versions it ran with, so a row whose code or settings changed is trained again and its older
cells are left out of the report. Cells from before rows had identities are adopted by
:func:`~benchmarks.grid.migrate.adopt_legacy_cells`.
"""

from __future__ import annotations

import functools
import os
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from benchmarks.grid.cells import Cell, EnvProtocol, cell_task, train_cell
from benchmarks.grid.provenance import provenance
from benchmarks.grid.rows import row_id, row_identity
from sb3_ppo_variants.tuning.errors import TuningError
from sb3_ppo_variants.tuning.progress import counts
from sb3_ppo_variants.tuning.storage import HEARTBEAT_INTERVAL, open_storage
from sb3_ppo_variants.tuning.workers import interrupt_on_terminate

POLL_SECONDS = 5.0
"""How often an idle worker looks again while other workers' cells are still running."""


class GridError(TuningError):
    """A grid that cannot run as asked (its study was made with another protocol, a bad cell)."""


@dataclass(frozen=True)
class GridSettings:
    """Where a grid lives and how its workers run (plain data: it travels to worker processes)."""

    storage_url: str
    study_name: str
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL


def cell_of(trial: FrozenTrial) -> Cell | None:
    return Cell.from_attrs(trial.user_attrs)


def is_result(trial: FrozenTrial) -> bool:
    """A cell's outcome: it scored, or it raised (a recorded failure, not a lost worker)."""
    return counts(trial) and cell_of(trial) is not None


SUPERSEDED = "superseded"
"""The row identity of a cell from before identities whose row has changed since (see ``migrate``)."""


def trial_row_id(study: optuna.Study, trial: FrozenTrial) -> str:
    """The row identity a trial's cell ran: its own record, or for a cell from before records the
    identity its row had when the study adopted it (:func:`~benchmarks.grid.migrate.adopt_legacy_cells`)."""
    recorded = trial.user_attrs.get("row_id")
    if recorded is not None:
        return str(recorded)
    cell = cell_of(trial)
    legacy = study.user_attrs.get(LEGACY_ROW_IDS, {})
    return legacy.get(legacy_key(cell), SUPERSEDED) if cell is not None else SUPERSEDED


LEGACY_ROW_IDS = "legacy_row_ids"
"""The study attribute mapping ``"env|row"`` to the identity of its cells from before records."""


def legacy_key(cell: Cell) -> str:
    return f"{cell.env}|{cell.variant}"


def is_current(study: optuna.Study, trial: FrozenTrial) -> bool:
    """Whether a trial ran its row as the row is defined now."""
    cell = cell_of(trial)
    return cell is not None and trial_row_id(study, trial) == current_row_id(cell)


def current_row_id(cell: Cell) -> str:
    return _row_id(cell.variant, cell.env)


@functools.cache
def _row_id(row: str, env_id: str) -> str:
    try:
        return row_id(row, env_id)
    except ValueError:  # a row this code no longer defines
        return SUPERSEDED + ":unknown-row"


def open_grid(
    settings: GridSettings, protocols: dict[str, EnvProtocol] | None = None, compile: bool | None = None
) -> optuna.Study:
    """Create the grid's study or load it; with ``protocols``, record them or check them.

    A study keeps the protocol of every environment it has cells of and whether its variants
    use the fast path; a command asking for another protocol is refused, naming the difference,
    so cells of one table are always comparable.
    """
    storage = open_storage(settings.storage_url, settings.heartbeat_interval)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        study = optuna.create_study(
            storage=storage, study_name=settings.study_name, direction="maximize", load_if_exists=True
        )
    if "task" in study.user_attrs:  # tuning's workers claim its trials with study.optimize
        raise GridError(
            f"study {settings.study_name!r} was made by python -m tuning (it has a task), not by the grid: "
            "use another --study-name"
        )
    stored = dict(study.user_attrs.get("protocols", {}))
    for env_id, protocol in (protocols or {}).items():
        if env_id in stored and stored[env_id] != protocol.as_dict():
            raise GridError(
                f"study {settings.study_name!r} ran {env_id} with {stored[env_id]}, not {protocol.as_dict()}: "
                "use the same --budget-scale, or another --study-name"
            )
        stored[env_id] = protocol.as_dict()
    if protocols:
        study.set_user_attr("protocols", stored)
    if compile is not None:
        previous = study.user_attrs.get("compile")
        if previous is not None and previous != compile:
            raise GridError(
                f"study {settings.study_name!r} ran its variants with compile={previous}: run it the same way, "
                "or use another --study-name"
            )
        study.set_user_attr("compile", compile)
    return study


def load_grid(settings: GridSettings) -> optuna.Study:
    """An existing grid's study (for its report), or a ``GridError`` naming the studies there are."""
    storage = open_storage(settings.storage_url, settings.heartbeat_interval)
    try:
        return optuna.load_study(study_name=settings.study_name, storage=storage)
    except KeyError:
        names = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage)) or "none"
        raise GridError(f"no grid study named {settings.study_name!r} there: studies there are {names}") from None


def protocol_of(study: optuna.Study, env_id: str) -> EnvProtocol:
    try:
        return EnvProtocol(**study.user_attrs["protocols"][env_id])
    except KeyError as error:
        raise GridError(f"study {study.study_name!r} has no protocol for {env_id}") from error


def enqueue(study: optuna.Study, cells: Iterable[Cell], retry_failed: bool = False) -> tuple[int, int]:
    """Enqueue every cell with no outcome and nobody working on it; return ``(enqueued, finished)``.

    ``retry_failed`` enqueues again the cells that raised (after fixing what made them raise).
    """
    _fail_stale(study)
    cells = list(cells)
    taken: set[Cell] = set()
    finished: set[Cell] = set()
    for trial in study.get_trials(deepcopy=False):
        cell = cell_of(trial)
        if cell is None:
            continue
        if trial.state in (TrialState.WAITING, TrialState.RUNNING):
            taken.add(cell)
        elif is_result(trial) and (trial.state == TrialState.COMPLETE or not retry_failed) and is_current(study, trial):
            finished.add(cell)
    todo = [(order, cell) for order, cell in enumerate(cells) if cell not in taken | finished]
    for order, cell in todo:  # "order": workers take cells in the command's order, retries included
        study.enqueue_trial({}, user_attrs={**cell.as_attrs(), "order": order})
    return len(todo), sum(cell in finished for cell in cells)


def run_cells(
    settings: GridSettings,
    cells: Mapping[Cell, int] | None = None,
    after_cell: Callable[[], None] | None = None,
) -> None:
    """Claim and train cells until none waits and none runs (a lost worker's cell comes back).

    ``cells``: only these (a command's selection), in the order their values give (a command's
    table, whatever order an earlier command enqueued them in); ``None``: every cell the study
    has waiting, in the order they were enqueued.
    """
    storage = open_storage(settings.storage_url, settings.heartbeat_interval)  # this worker's connections
    study = optuna.load_study(study_name=settings.study_name, storage=storage)
    while True:
        _fail_stale(study)
        claimed = _claim(study, storage, cells)
        if claimed is None:
            unfinished = study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
            if not any(cells is None or cell_of(trial) in cells for trial in unfinished):
                return
            time.sleep(POLL_SECONDS)
            continue
        trial, trial_id = claimed
        with _heartbeat(storage, trial_id, settings.heartbeat_interval):
            _run_trial(study, trial)
        if after_cell is not None:
            after_cell()


def work(settings: GridSettings, index: int, cells: Mapping[Cell, int] | None = None) -> None:
    """A worker process: one torch thread, its own connection; Ctrl-C marks its cell for a retry."""
    import torch as th

    interrupt_on_terminate()
    th.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:
        run_cells(settings, cells)
    except KeyboardInterrupt:
        pass


def _claim(
    study: optuna.Study, storage: optuna.storages.BaseStorage, cells: Mapping[Cell, int] | None
) -> tuple[optuna.Trial, int] | None:
    """The first waiting cell (of ``cells``, if given) this worker wins (the storage moves a
    trial out of WAITING once)."""
    study_id = storage.get_study_id_from_name(study.study_name)
    queue = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))

    def place(trial: FrozenTrial) -> tuple[float, int]:
        # In the order the cells were asked for: a retry (a new trial, numbered last) keeps its place.
        cell = cell_of(trial)
        order = cells.get(cell) if cells is not None and cell is not None else trial.user_attrs.get("order")
        return (float("inf") if order is None else order, trial.number)

    for waiting in sorted(queue, key=place):
        cell = cell_of(waiting)
        if cell is None or (cells is not None and cell not in cells):
            continue
        trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, waiting.number)
        if storage.set_trial_state_values(trial_id, TrialState.RUNNING):
            if isinstance(storage, optuna.storages.RDBStorage) and storage.get_heartbeat_interval():
                storage.record_heartbeat(trial_id)  # at once: a trial with no heartbeat never goes stale
            return optuna.Trial(study, trial_id), trial_id
    return None


def _run_trial(study: optuna.Study, trial: optuna.Trial) -> None:
    cell = Cell.from_attrs(trial.user_attrs)
    assert cell is not None  # _claim only takes trials that name a cell
    duplicate = _finished_or_earlier(study, cell, trial.number)
    if duplicate is not None:  # two commands enqueued it at the same moment
        trial.set_user_attr("duplicate_of", duplicate)
        study.tell(trial, state=TrialState.FAIL)
        return
    compile = bool(study.user_attrs.get("compile", False))

    def report(timesteps: int, mean_return: float) -> bool:
        trial.report(mean_return, timesteps)
        return True

    records: dict[str, Any] = {}
    start, cpu_start = time.perf_counter(), time.process_time()
    try:  # from the claim to the tell: an interruption anywhere in between fails the trial
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        trial.set_user_attr("row_id", current_row_id(cell))
        for key, value in provenance().items():
            trial.set_user_attr(key, value)
        protocol = protocol_of(study, cell.env)
        trial.set_user_attr("row", row_identity(cell.variant, cell.env))  # raises for a row nobody defines
        evaluations = train_cell(cell, protocol, compile, on_evaluation=report, records=records)
        _record_time(trial, start, cpu_start)
        for key, value in records.items():
            trial.set_user_attr(key, value)
        score = cell_task(cell, protocol).score(evaluations)
    except KeyboardInterrupt:
        study.tell(trial, state=TrialState.FAIL)  # no fail_reason: the next command runs it again
        raise
    except Exception as error:  # a diverging variant is a result of the grid, not its end
        trial.set_user_attr("fail_reason", f"{type(error).__name__}: {error}")
        _record_time(trial, start, cpu_start)
        study.tell(trial, state=TrialState.FAIL)
        return
    study.tell(trial, score)


def _record_time(trial: optuna.Trial, start: float, cpu_start: float) -> None:
    """The cell's wall seconds, and its process's CPU seconds: its cost, which a worker paused or
    sharing its core with other work does not inflate."""
    trial.set_user_attr("seconds", time.perf_counter() - start)
    trial.set_user_attr("cpu_seconds", time.process_time() - cpu_start)


def _finished_or_earlier(study: optuna.Study, cell: Cell, number: int) -> int | None:
    """Another trial of ``cell`` that has its outcome, or runs and was claimed from earlier."""
    for other in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL, TrialState.RUNNING)):
        if other.number == number or cell_of(other) != cell:
            continue
        if (is_result(other) and is_current(study, other)) or (
            other.state == TrialState.RUNNING and other.number < number
        ):
            return other.number
    return None


def _fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


@contextmanager
def _heartbeat(storage: Any, trial_id: int, interval: int | None) -> Iterator[None]:
    """Record the trial's heartbeat every ``interval`` seconds while the cell trains."""
    if not interval or not isinstance(storage, optuna.storages.RDBStorage):
        yield
        return
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            storage.record_heartbeat(trial_id)

    thread = threading.Thread(target=beat, name="grid-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
