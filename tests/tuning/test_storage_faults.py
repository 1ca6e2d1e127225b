"""Studies that survive their database: a restarted server, a worker killed mid-write, a bad folder.

Each test breaks the storage the way machines do and checks what the study lost: nothing, or
exactly the trials that were running.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from sb3_ppo_variants.tuning import TuningError, run_study

ROOT = Path(__file__).resolve().parents[2]
TINY = {"n_evaluations": 3, "n_eval_episodes": 2, "n_eval_envs": 2, "n_last_evaluations": 2, "progress": False}
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _states(storage: str, name: str) -> list[TrialState]:
    try:
        return [t.state for t in optuna.load_study(study_name=name, storage=storage).get_trials()]
    except KeyError:  # not created yet
        return []


def test_a_study_survives_a_postgresql_restart_with_two_workers_running(postgresql_server):
    url = postgresql_server.url
    command = [sys.executable, "-m", "tuning", "--env", "CartPole-v1", "--storage", url, "--study-name",
               "restarted", "--n-trials", "8", "--n-jobs", "2", "--n-timesteps", "3000", "--pruner", "none",
               "--quiet", "--n-evaluations", "3", "--n-eval-episodes", "2", "--n-last-evaluations", "2"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:  # restart once two trials are done and two are running
        states = _states(url, "restarted")
        if states.count(TrialState.COMPLETE) >= 2 and states.count(TrialState.RUNNING) == 2:
            break
        time.sleep(0.3)
    postgresql_server.restart(pause=3.0)
    assert process.wait(timeout=300) == 0, process.stdout.read()

    trials = optuna.load_study(study_name="restarted", storage=url).get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) >= 8  # the study finished
    failed = [t for t in trials if t.state == TrialState.FAIL]
    assert len(failed) <= 2 and not any("fail_reason" in t.user_attrs for t in failed)  # at most the running two


WRITER = """
import sys, optuna
from sb3_ppo_variants.tuning.storage import open_storage
study = optuna.load_study(study_name="killed", storage=open_storage(sys.argv[1], heartbeat_interval=1))
def objective(trial):  # writes without end, so the kill lands in the middle of one
    step = 0
    while True:
        trial.report(float(step), step)
        trial.set_user_attr(f"attribute {step}", "x" * 2000)
        step += 1
study.optimize(objective, n_trials=1)
"""


def test_a_sqlite_worker_killed_while_writing_leaves_a_study_the_next_command_resumes(tmp_path):
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    run_study("CartPole-v1", 1, n_timesteps=1_500, storage=storage, study_name="killed", heartbeat_interval=1, **TINY)
    writer = subprocess.Popen([sys.executable, "-c", WRITER, storage], cwd=ROOT)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # kill it once it is well into its writes
        running = optuna.load_study(study_name="killed", storage=storage).get_trials(states=(TrialState.RUNNING,))
        if running and len(running[0].intermediate_values) > 20:
            break
        time.sleep(0.2)
    writer.kill()
    writer.wait()
    assert (tmp_path / "study.db-wal").exists()  # what it was writing is in the journal

    time.sleep(3.0)  # SQLite's clock counts whole seconds: the killed trial is now stale (grace 2 s)
    study = run_study(
        "CartPole-v1", 3, n_timesteps=1_500, storage=storage, study_name="killed", heartbeat_interval=1, **TINY
    )
    with contextlib.closing(sqlite3.connect(tmp_path / "study.db")) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    trials = study.get_trials()
    assert trials[0].state == TrialState.COMPLETE  # the trial finished before the kill is kept
    assert trials[1].state == TrialState.FAIL and len(trials[1].intermediate_values) > 10  # the killed one
    assert sum(t.state == TrialState.COMPLETE for t in trials) == 3


@contextlib.contextmanager
def _mounted(folder: Path, options: str) -> Iterator[Path]:
    """A small tmpfs at ``folder`` (root only); the test is skipped where mounting is not allowed."""
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_a_read_only_storage_folder_fails_before_any_training(tmp_path):
    with _mounted(tmp_path / "read-only", "ro,size=16m") as folder:
        started = time.monotonic()
        with pytest.raises(TuningError, match=r"folder .*read-only is not writable \(Read-only file system\)"):
            run_study("CartPole-v1", 1, n_timesteps=1_500, storage=f"sqlite:///{folder / 'study.db'}", **TINY)
        assert time.monotonic() - started < 5  # refused at once: nothing trained


def test_a_nearly_full_disk_fails_before_any_training_for_tuning_and_the_grid(tmp_path):
    with _mounted(tmp_path / "full", "size=2m") as folder:
        with pytest.raises(TuningError, match=r"has 2\.0 MiB free, a study needs at least 64 MiB"):
            run_study("CartPole-v1", 1, n_timesteps=1_500, storage=f"sqlite:///{folder / 'study.db'}", **TINY)
        grid = [sys.executable, "-m", "benchmarks.grid", "--envs", "CartPole-v1", "--out", str(folder)]
        refused = subprocess.run(grid, cwd=ROOT, capture_output=True, text=True)
        assert refused.returncode == 2 and "has 2.0 MiB free" in refused.stderr
        assert list(folder.iterdir()) == []  # nothing written there


@contextlib.contextmanager
def _reply_lost_once(method: str, when=lambda *args: True) -> Iterator[list[int]]:
    """The storage's ``method`` commits, then its reply is lost once (a dropped connection)."""
    import sqlalchemy
    from optuna.storages import RDBStorage

    original, lost = getattr(RDBStorage, method), []

    def lossy(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        if not lost and when(*args):
            lost.append(1)
            raise sqlalchemy.exc.OperationalError("COMMIT", {}, Exception("server closed the connection unexpectedly"))
        return result

    setattr(RDBStorage, method, lossy)
    try:
        yield lost
    finally:
        setattr(RDBStorage, method, original)


def test_a_trial_created_before_its_reply_was_lost_is_not_created_twice(tmp_path):
    from sb3_ppo_variants.tuning.storage import open_storage

    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 's.db'}", None), study_name="s")
    with _reply_lost_once("_create_new_trial") as lost:
        trial = study.ask()
    assert lost and [t.number for t in study.get_trials()] == [trial.number] == [0]
    with _reply_lost_once("_create_new_trial") as lost:
        study.enqueue_trial({}, user_attrs={"cell": 1})  # an enqueued one too (the grid's cells)
    assert lost and len(study.get_trials(states=(TrialState.WAITING,))) == 1


def test_a_tell_retried_after_its_reply_was_lost_does_not_raise(tmp_path):
    from sb3_ppo_variants.tuning.storage import open_storage

    study = optuna.create_study(storage=open_storage(f"sqlite:///{tmp_path / 's.db'}", None), study_name="s")
    trial = study.ask()
    with _reply_lost_once("set_trial_state_values") as lost:
        study.tell(trial, 3.0)
    assert lost and study.get_trials()[0].state == TrialState.COMPLETE and study.get_trials()[0].value == 3.0


def test_a_grid_claim_whose_reply_was_lost_is_retried_instead_of_running_forever(tmp_path):
    from benchmarks.grid.cells import ENVS, Cell
    from benchmarks.grid.queue import GridSettings, cell_of, enqueue, open_grid, run_cells

    storage = f"sqlite:///{tmp_path / 'grid.db'}"
    settings = GridSettings(storage_url=storage, study_name="grid", heartbeat_interval=1)
    study = open_grid(settings, {"CartPole-v1": ENVS["CartPole-v1"].scaled(0.005)})
    enqueue(study, [Cell("CartPole-v1", "sb3-ppo", 0)])
    with _reply_lost_once("set_trial_state_values", when=lambda trial_id, state, *rest: state == TrialState.RUNNING):
        run_cells(settings)  # returns once no cell waits or runs
    lost_claim, retried = optuna.load_study(study_name="grid", storage=storage).get_trials()
    assert lost_claim.state == TrialState.FAIL and "fail_reason" not in lost_claim.user_attrs  # stale, not a result
    assert retried.state == TrialState.COMPLETE and cell_of(retried) == cell_of(lost_claim)
