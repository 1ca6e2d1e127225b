"""The benchmark grid on Optuna: cells as enqueued trials, shared by processes and machines.

Budgets are tiny (a few hundred CartPole steps per cell): these tests check what the grid
records, survives and reports, not what the variants learn.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from benchmarks.grid import queue, readme, rows
from benchmarks.grid import report as report_module
from benchmarks.grid.__main__ import control_rows, recommended_rows, table_cells, table_rows
from benchmarks.grid.cells import ENVS, Cell
from benchmarks.grid.migrate import adopt_legacy_cells, migrate
from benchmarks.grid.queue import GridSettings, cell_of, enqueue, open_grid, run_cells, work
from benchmarks.grid.report import Run, compute_table, runs_of, superseded_cells, waiting_cells
from benchmarks.grid.rows import row_id

ROOT = Path(__file__).resolve().parents[2]


def tiny(seeds: tuple[str, ...] = ("0", "1"), budget_scale: str = "0.005") -> list[str]:
    """Two rows of CartPole cells at a sliver of the budget."""
    return ["--envs", "CartPole-v1", "--variants", "sb3-ppo", "spo", "--seeds", *seeds, "--budget-scale", budget_scale]


TINY = tiny()
optuna.logging.set_verbosity(optuna.logging.WARNING)


def grid(*arguments: str, check: bool = True) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "benchmarks.grid", "--bootstrap", "50", *arguments]
    return subprocess.run(command, cwd=ROOT, check=check, capture_output=True, text=True)


def trials(storage: str, name: str = "grid") -> list[optuna.trial.FrozenTrial]:
    return optuna.load_study(study_name=name, storage=storage).get_trials()


def finished_cells(storage: str, name: str = "grid") -> dict[Cell, int]:
    """Each finished cell and the trial number that finished it (every cell exactly once)."""
    done = [(cell_of(t), t.number) for t in trials(storage, name) if t.state == TrialState.COMPLETE]
    cells = dict(done)
    assert len(cells) == len(done), "a cell was trained twice"
    return cells


CELLS = {Cell("CartPole-v1", v, s) for v in ("sb3-ppo", "spo") for s in (0, 1)}


def test_a_tiny_grid_in_two_processes_reports_from_its_study_grows_and_resumes(tmp_path):
    storage = f"sqlite:///{tmp_path / 'grid.db'}"
    output = grid(*tiny(seeds=("0",)), "--jobs", "2", "--out", str(tmp_path)).stdout
    assert "2 cells: 0 finished, 2 to run (2 newly enqueued), 2 processes" in output
    first = finished_cells(storage)

    output = grid(*TINY, "--jobs", "2", "--out", str(tmp_path)).stdout  # one more seed of each row
    assert "4 cells: 2 finished, 2 to run (2 newly enqueued), 2 processes" in output
    assert set(finished_cells(storage)) == CELLS
    assert all(finished_cells(storage)[cell] == number for cell, number in first.items())  # not recomputed
    for trial in trials(storage):  # each cell keeps its learning curve, keyed by environment steps
        steps = sorted(trial.intermediate_values)
        assert len(steps) == 10 and 50 <= steps[0] < 100 and steps[-1] == 504  # every 500 / 10 steps of 8 envs
        assert trial.value == pytest.approx(sum(list(trial.intermediate_values.values())[-3:]) / 3)
        assert trial.user_attrs["seconds"] > 0 and ":" in trial.user_attrs["worker"]
        assert trial.user_attrs["cpu_seconds"] > 0  # the cell's cost, which a paused worker does not inflate
    for name in ("grid.csv", "results.md", "curves-CartPole-v1.png", "aggregate.png", "profiles.png"):
        assert (tmp_path / name).stat().st_size > 0
    rows = (tmp_path / "grid.csv").read_text().splitlines()
    assert rows[0] == "env,variant,seed,timesteps,mean_return,error" and len(rows) == 1 + 4 * 10
    results = (tmp_path / "results.md").read_text()
    assert "| spo | 2 |" in results and "| sb3-ppo | 2 |" in results and "P(variant > SB3 PPO)" in results

    before = finished_cells(storage)
    output = grid(*TINY, "--jobs", "2", "--out", str(tmp_path)).stdout
    assert "4 cells: 4 finished, 0 to run" in output and output.count("| spo |") == 2  # the report, again
    assert finished_cells(storage) == before and len(trials(storage)) == 4  # nothing recomputed


def test_a_study_made_with_another_protocol_is_refused_by_name(tmp_path):
    settings = GridSettings(storage_url=f"sqlite:///{tmp_path / 'grid.db'}", study_name="grid")
    open_grid(settings, {"CartPole-v1": ENVS["CartPole-v1"].scaled(0.005)})
    refused = grid(*tiny(budget_scale="0.01"), "--jobs", "1", "--out", str(tmp_path), check=False)
    assert refused.returncode == 2
    assert "ran CartPole-v1 with" in refused.stderr and "use the same --budget-scale" in refused.stderr


def test_an_unknown_row_is_refused_with_the_accepted_names(tmp_path):
    refused = grid("--variants", "nope", "--out", str(tmp_path), check=False)
    assert refused.returncode == 2 and "row 'nope' is unknown: accepted rows are sb3-ppo, ppo," in refused.stderr
    assert "ppg@recommended" in refused.stderr and "sb3-ppo@lr=<value>, sb3-ppo@max_grad_norm=<value>" in refused.stderr


def test_an_interrupted_grid_resumes_without_recomputing_a_finished_cell(tmp_path):
    storage = f"sqlite:///{tmp_path / 'grid.db'}"
    command = [sys.executable, "-m", "benchmarks.grid", *tiny(budget_scale="0.02"), "--jobs", "1"]
    process = subprocess.Popen([*command, "--out", str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    # Its first line comes once it has made the storage: reading it earlier races its schema creation.
    assert "cells:" in process.stdout.readline()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # interrupt it once a cell has finished and the next runs
        time.sleep(0.5)
        states = [t.state for t in trials(storage)]
        if TrialState.COMPLETE in states and TrialState.RUNNING in states:
            break
    process.send_signal(signal.SIGTERM)  # as kill or a job scheduler stops it; Ctrl-C takes the same path
    assert process.wait(timeout=60) == 130
    assert "interrupted: finished cells are kept" in process.stdout.read()
    first = finished_cells(storage)
    assert 1 <= len(first) < 4 and not any(t.state == TrialState.RUNNING for t in trials(storage))

    grid(*tiny(budget_scale="0.02"), "--jobs", "1", "--out", str(tmp_path))
    assert set(finished_cells(storage)) == CELLS
    assert all(finished_cells(storage)[cell] == number for cell, number in first.items())


def _tiny_grid(storage: str, name: str, seeds: tuple[int, ...] = (0, 1)) -> GridSettings:
    settings = GridSettings(storage_url=storage, study_name=name, heartbeat_interval=1)
    study = open_grid(settings, {"CartPole-v1": ENVS["CartPole-v1"].scaled(0.005)})
    enqueue(study, [Cell("CartPole-v1", v, s) for s in seeds for v in ("sb3-ppo", "spo")])
    return settings


def test_a_killed_workers_cell_is_retried_and_the_grid_completes(tmp_path):
    storage = f"sqlite:///{tmp_path / 'grid.db'}"
    settings = GridSettings(storage_url=storage, study_name="grid", heartbeat_interval=1)
    study = open_grid(settings, {"CartPole-v1": ENVS["CartPole-v1"].scaled(0.1)})  # a cell takes seconds
    enqueue(study, [Cell("CartPole-v1", "sb3-ppo", 0)])
    worker = multiprocessing.get_context("spawn").Process(target=work, args=(settings, 0))
    worker.start()
    deadline = time.monotonic() + 120
    while not any(t.state == TrialState.RUNNING for t in trials(storage)) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.5)  # it has trained a little and sent a heartbeat
    worker.kill()
    worker.join()

    # SQLite's clock counts whole seconds: the killed cell is stale within a few seconds.
    run_cells(GridSettings(storage_url=storage, study_name="grid", heartbeat_interval=1))
    killed, retried = trials(storage)
    assert killed.state == TrialState.FAIL and "fail_reason" not in killed.user_attrs
    assert retried.state == TrialState.COMPLETE and cell_of(retried) == Cell("CartPole-v1", "sb3-ppo", 0)
    assert retried.system_attrs["failed_trial"] == killed.number


def test_a_cell_enqueued_twice_is_trained_once(tmp_path):
    storage = f"sqlite:///{tmp_path / 'grid.db'}"
    settings = _tiny_grid(storage, "grid", seeds=(0,))
    study = optuna.load_study(study_name="grid", storage=storage)
    study.enqueue_trial({}, user_attrs=Cell("CartPole-v1", "spo", 0).as_attrs())  # as two commands at once would
    run_cells(settings)
    assert set(finished_cells(storage)) == {Cell("CartPole-v1", v, 0) for v in ("sb3-ppo", "spo")}
    (duplicate,) = [t for t in trials(storage) if t.state == TrialState.FAIL]
    assert duplicate.user_attrs["duplicate_of"] < duplicate.number


def test_a_cell_that_raises_is_a_result_not_the_end_of_the_grid(tmp_path):
    storage = f"sqlite:///{tmp_path / 'grid.db'}"
    settings = GridSettings(storage_url=storage, study_name="grid", heartbeat_interval=None)
    study = open_grid(settings, {"CartPole-v1": ENVS["CartPole-v1"].scaled(0.005)})
    enqueue(study, [Cell("CartPole-v1", "no-such-variant", 0), Cell("CartPole-v1", "sb3-ppo", 0)])
    run_cells(settings)
    failed, finished = trials(storage)
    assert failed.state == TrialState.FAIL
    assert "is unknown: accepted rows are sb3-ppo, ppo," in failed.user_attrs["fail_reason"]
    assert finished.state == TrialState.COMPLETE
    assert enqueue(study, [cell_of(failed), cell_of(finished)]) == (0, 2)  # neither runs again
    assert enqueue(study, [cell_of(failed)], retry_failed=True) == (1, 0)


def test_two_commands_share_a_postgresql_grid(postgresql_url, tmp_path):
    arguments = [*TINY, "--storage", postgresql_url, "--study-name", "shared", "--jobs", "1"]
    first = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.grid", "--bootstrap", "50", *arguments, "--out", str(tmp_path / "a")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    second = grid(*arguments, "--out", str(tmp_path / "b"))
    assert first.wait(timeout=300) == 0, first.stdout.read()
    assert set(finished_cells(postgresql_url, "shared")) == CELLS
    workers = {t.user_attrs["worker"] for t in trials(postgresql_url, "shared") if t.state == TrialState.COMPLETE}
    assert len(workers) == 2  # both commands trained cells
    assert "| spo |" in second.stdout and (tmp_path / "a" / "results.md").exists()


def test_the_earlier_runners_cell_files_migrate_into_a_study(tmp_path):
    cells = tmp_path / "cells"
    cells.mkdir()
    for variant, seed, returns in (("sb3-ppo", 0, [10.0, 20.0, 30.0, 40.0]), ("spo", 0, [10.0, 12.0, 14.0, 16.0])):
        record = {"env": "CartPole-v1", "variant": variant, "seed": seed, "timesteps": 400, "seconds": 2.5}
        record["evaluations"] = [[100 * (i + 1), r] for i, r in enumerate(returns)]
        (cells / f"CartPole-v1__{variant}__{seed}.json").write_text(json.dumps(record))
    failed = {"env": "CartPole-v1", "variant": "p3o", "seed": 0, "timesteps": 400, "seconds": 1.0}
    (cells / "CartPole-v1__p3o__0.json").write_text(json.dumps({**failed, "evaluations": [], "error": "boom"}))

    output = grid("--migrate", str(cells), "--out", str(tmp_path)).stdout
    assert "3 cells imported" in output
    storage = f"sqlite:///{tmp_path / 'grid.db'}"
    assert migrate(cells, optuna.load_study(study_name="grid", storage=storage)) == 0  # once only
    by_cell = {cell_of(t): t for t in trials(storage)}
    assert by_cell[Cell("CartPole-v1", "sb3-ppo", 0)].value == pytest.approx(30.0)
    assert by_cell[Cell("CartPole-v1", "p3o", 0)].user_attrs["fail_reason"] == "boom"
    assert "| sb3-ppo | 30.0 ± 0.0 (1) |" in output and "| p3o | –, 1 failed |" in output


def test_workers_take_cells_in_the_order_asked_and_a_retried_cell_keeps_its_place(tmp_path):
    storage = f"sqlite:///{tmp_path / 'grid.db'}"
    settings = GridSettings(storage_url=storage, study_name="grid", heartbeat_interval=None)
    study = open_grid(settings, {"CartPole-v1": ENVS["CartPole-v1"].scaled(0.005)})
    cells = [Cell("CartPole-v1", "sb3-ppo", seed) for seed in range(3)]
    enqueue(study, cells[1:])
    # What Optuna's retry callback leaves for a lost worker's cell: a new trial, numbered last.
    retried = {**cells[0].as_attrs(), "order": -1}
    study.add_trial(optuna.trial.create_trial(state=TrialState.WAITING, user_attrs=retried))
    run_cells(settings)
    started = sorted(trials(storage), key=lambda trial: trial.datetime_start)
    assert [cell_of(trial) for trial in started] == cells


def test_a_command_trains_its_own_selection_and_leaves_other_waiting_cells_waiting(tmp_path):
    storage = f"sqlite:///{tmp_path / 'grid.db'}"
    settings = _tiny_grid(storage, "grid", seeds=(0, 1))  # four cells wait, left by an earlier command
    selection = {Cell("CartPole-v1", "spo", 1): 0}
    run_cells(settings, selection)
    assert set(finished_cells(storage)) == set(selection)
    waiting = {cell_of(t) for t in trials(storage) if t.state == TrialState.WAITING}
    assert waiting == CELLS - set(selection)
    assert set(waiting_cells(optuna.load_study(study_name="grid", storage=storage))) == waiting  # the report's count


def test_the_report_shows_what_each_environment_cost_and_what_its_waiting_cells_would_cost():
    scored = [Run(Cell("Acrobot-v1", "sb3-ppo", seed), [], -80.0, 1800.0, None) for seed in (0, 1)]
    raised = Run(Cell("Acrobot-v1", "trgppo", 0), [], math.nan, 0.5, "raised at construction")
    waiting = [*(Cell("Acrobot-v1", "spo", seed) for seed in range(4)), Cell("Hopper-v5", "sb3-ppo", 0)]
    assert compute_table([*scored, raised], waiting, ["Acrobot-v1", "CartPole-v1", "Hopper-v5"])[2:] == [
        "| Acrobot-v1 | 3 | 1.00 | 1800 | 4 | 2.00 |",  # the raised cell counts as spent, not in the rate
        "| Hopper-v5 | 0 | 0.00 | – | 1 | not measured yet |",
        "| all | 3 | 1.00 | | 5 | 2.00 |",
    ]


def _one_cell(storage: str, cell: Cell, budget_scale: float = 0.005) -> optuna.Study:
    settings = GridSettings(storage_url=storage, study_name="grid", heartbeat_interval=None)
    study = open_grid(settings, {cell.env: ENVS[cell.env].scaled(budget_scale)})
    enqueue(study, [cell])
    run_cells(settings)
    return study


def test_a_cell_records_its_rows_identity_the_commit_and_the_package_versions(tmp_path):
    storage = f"sqlite:///{tmp_path / 'grid.db'}"
    _one_cell(storage, Cell("CartPole-v1", "spo", 0))
    (trial,) = trials(storage)
    assert trial.user_attrs["row_id"] == row_id("spo", "CartPole-v1")
    settings = trial.user_attrs["row"]
    assert settings["algorithm"] == "PPOVariant" and settings["arguments"]["n_steps"] == 32  # the Zoo's CartPole
    assert settings["arguments"]["loss"][0]["class"] == "SPOSurrogate"
    assert len(trial.user_attrs["commit"]) >= 40 or trial.user_attrs["commit"] == "unknown"
    assert {"python", "stable_baselines3", "torch", "gymnasium"} <= set(trial.user_attrs["versions"])


def test_a_row_whose_code_changes_is_trained_again_and_the_report_never_mixes_its_versions(tmp_path, monkeypatch):
    storage = f"sqlite:///{tmp_path / 'grid.db'}"
    cell = Cell("CartPole-v1", "spo", 0)
    study = _one_cell(storage, cell)
    assert [run.cell for run in runs_of(study)] == [cell]
    assert enqueue(study, [cell]) == (0, 1)  # unchanged: finished

    monkeypatch.setitem(rows.REVISIONS, "spo", 99)  # as a commit that changes what SPO computes
    queue._row_id.cache_clear()
    assert runs_of(study) == [] and [c for c, _ in superseded_cells(study)] == [cell]
    assert enqueue(study, [cell]) == (1, 0)
    run_cells(GridSettings(storage_url=storage, study_name="grid", heartbeat_interval=None))
    (new,) = runs_of(study)
    first, second = trials(storage)
    assert second.user_attrs["row_id"] == row_id("spo", "CartPole-v1") != first.user_attrs["row_id"]
    assert new.cell == cell and [c for c, _ in superseded_cells(study)] == [cell]
    queue._row_id.cache_clear()


def test_cells_from_before_row_identities_are_adopted_unless_their_row_changed(tmp_path):
    storage = f"sqlite:///{tmp_path / 'grid.db'}"
    settings = GridSettings(storage_url=storage, study_name="grid", heartbeat_interval=None)
    study = open_grid(settings, {"CartPole-v1": ENVS["CartPole-v1"].scaled(0.005)})
    for variant in ("spo", "ppo-ewma"):  # finished by an earlier version of the grid: no row_id
        study.add_trial(
            optuna.trial.create_trial(
                value=100.0, intermediate_values={64: 100.0}, user_attrs=Cell("CartPole-v1", variant, 0).as_attrs()
            )
        )
    assert adopt_legacy_cells(study) == 1 and adopt_legacy_cells(study) == 0  # once
    assert [r.cell.variant for r in runs_of(study)] == ["spo"]  # PPO-EWMA's code changed since: recomputed
    assert [c.variant for c, _ in superseded_cells(study)] == ["ppo-ewma"]
    assert enqueue(study, [Cell("CartPole-v1", v, 0) for v in ("spo", "ppo-ewma")]) == (1, 1)


def test_an_adaptive_learning_rate_row_records_the_rate_of_every_call(tmp_path):
    storage = f"sqlite:///{tmp_path / 'grid.db'}"
    study = _one_cell(storage, Cell("CartPole-v1", "kl-adaptive-lr", 0), budget_scale=0.02)
    (trial,) = trials(storage)
    rates = trial.user_attrs["learning_rates"]
    assert len(rates) == math.ceil(2000 / 256)  # one per train() call: 2,000 steps in rollouts of 8 x 32
    assert all(1e-5 <= rate <= 1e-2 for rate in rates) and len(set(rates)) > 1  # it adapts
    assert report_module.learning_rate_table(runs_of(study), ["CartPole-v1"])[2].startswith(
        "| CartPole-v1 | kl-adaptive-lr | 1 | 8 |"
    )
    sb3 = _one_cell(f"sqlite:///{tmp_path / 'sb3.db'}", Cell("CartPole-v1", "sb3-ppo", 0))
    assert "learning_rates" not in sb3.trials[0].user_attrs  # a fixed schedule records nothing


def test_a_control_row_is_sb3s_ppo_with_one_setting_changed():
    algorithm, policy, arguments = rows.row_setup(rows.control_row("lr", 0.0012), "Acrobot-v1")
    assert algorithm.__name__ == "PPO" and policy == "MlpPolicy" and arguments["learning_rate"] == 0.0012
    assert arguments["n_steps"] == 256  # the rest is the Zoo's Acrobot


def test_a_control_that_never_clips_trains_and_records_its_setting(tmp_path):
    unclipped = rows.control_row("max_grad_norm", math.inf)
    assert unclipped == "sb3-ppo@max_grad_norm=inf"
    storage = f"sqlite:///{tmp_path / 'grid.db'}"
    _one_cell(storage, Cell("CartPole-v1", unclipped, 0))
    (trial,) = trials(storage)
    assert trial.state == TrialState.COMPLETE and math.isfinite(trial.value)
    assert trial.user_attrs["row_id"] == row_id(unclipped, "CartPole-v1")
    assert trial.user_attrs["row"]["arguments"]["max_grad_norm"] == math.inf


def test_a_control_that_trains_more_epochs_is_sb3s_ppo_with_a_whole_number_of_them():
    algorithm, _, arguments = rows.row_setup(rows.control_row("n_epochs", 11), "Hopper-v5")
    assert rows.control_row("n_epochs", 11) == "sb3-ppo@n_epochs=11"
    assert algorithm.__name__ == "PPO" and arguments["n_epochs"] == 11 and type(arguments["n_epochs"]) is int
    assert arguments["batch_size"] == 32  # the rest is the Zoo's Hopper


@pytest.mark.parametrize(
    "row", ["sb3-ppo@lr=fast", "sb3-ppo@lr=0", "sb3-ppo@gamma=0.9", "sb3-ppo@lr", "sb3-ppo@n_epochs=2.5"]
)
def test_a_control_that_names_no_setting_it_may_change_is_refused_with_the_accepted_ones(row):
    with pytest.raises(ValueError, match="a control is one of sb3-ppo@lr=<value > 0>, sb3-ppo@max_grad_norm="):
        rows.check_row(row)


def test_the_table_computes_the_recomputed_rows_and_the_controls_before_the_new_rows_and_environments():
    order = [(c.env, c.variant) for c in table_cells()]
    first = {key: order.index(key) for key in dict.fromkeys(order)}
    assert first[("Acrobot-v1", "kl-adaptive-lr")] < first[("Acrobot-v1", "ppo-ewma")]
    assert first[("Pendulum-v1", "trgppo")] < first[("CartPole-v1", "ppg@recommended")]
    assert first[("Acrobot-v1", "ppg@recommended")] < first[("LunarLander-v3", "sb3-ppo")]
    lunar_controls = [first[("LunarLander-v3", c)] for c in control_rows("LunarLander-v3")]
    assert lunar_controls and max(lunar_controls) < first[("LunarLander-v3", "espo")]  # before the rows still waiting
    assert first[("LunarLander-v3", "outer-ppo")] < first[("LunarLander-v3", "ppg@recommended")]
    assert first[("LunarLander-v3", "ppg@recommended")] < first[("HalfCheetah-v5", "sb3-ppo")]  # a whole column
    assert first[("Hopper-v5", "outer-ppo")] < first[("HalfCheetah-v5", "ppg@recommended")]
    cells = table_cells()
    assert len(cells) == len(set(cells))
    seeds = {env: {c.seed for c in cells if c.env == env} for env in ENVS}
    assert seeds["CartPole-v1"] == set(range(10)) and seeds["Hopper-v5"] == set(range(5))


def test_every_row_of_a_plot_has_a_colour_of_its_own_and_sb3s_is_black():
    names = [rows.SB3, *table_rows()[1:], *recommended_rows()]
    colors = report_module.row_colors(names)
    assert colors[rows.SB3] == "#000000" and len(set(colors.values())) == len(names)


def test_the_report_sets_each_row_against_its_own_controls(tmp_path):
    (tmp_path / "random_scores.json").write_text(json.dumps({"Acrobot-v1": -500.0}))
    protocols = {"Acrobot-v1": ENVS["Acrobot-v1"]}
    controls = {"Acrobot-v1": {"kl-adaptive-lr": ["sb3-ppo@lr=0.0015"], "value-norm": ["sb3-ppo@max_grad_norm=inf"]}}

    def row(name: str, score: float) -> list[Run]:
        return [Run(Cell("Acrobot-v1", name, s), [], score - s * 0.1, 1.0, None) for s in range(5)]

    adaptive, unclipped = row("kl-adaptive-lr", -64.0), row("sb3-ppo@max_grad_norm=inf", -60.0)
    runs = [*adaptive, *row("sb3-ppo@lr=0.0015", -70.0), *row("value-norm", -64.0), *unclipped]
    lines = report_module.control_table(runs, ["Acrobot-v1"], protocols, tmp_path, 200, controls)
    assert lines[2:] == [
        "| Acrobot-v1 | kl-adaptive-lr | sb3-ppo@lr=0.0015 | 5 | 1.00 [1.00, 1.00] | **better** |",
        "| Acrobot-v1 | value-norm | sb3-ppo@max_grad_norm=inf | 5 | 0.00 [0.00, 0.00] | **worse** |",
    ]
    tied = [*adaptive, *row("sb3-ppo@lr=0.0015", -64.0)]  # and value-norm's control not run: no line
    lines = report_module.control_table(tied, ["Acrobot-v1"], protocols, tmp_path, 200, controls)
    assert len(lines) == 3 and lines[2].startswith("| Acrobot-v1 | kl-adaptive-lr | sb3-ppo@lr=0.0015 | 5 | 0.50 [")
    assert lines[2].endswith("| – |")


def test_a_rows_intervals_depend_on_its_cells_alone_not_on_the_rows_reported_beside_it(tmp_path):
    scores = np.random.default_rng(0).normal(1.0, 0.2, size=(3, 5, 2))
    matrices = {rows.SB3: scores[0], "spo": scores[1]}
    alone = report_module.aggregate(matrices, tmp_path, 300, "-pair")
    beside = report_module.aggregate({"ppo-penalty": scores[2], **matrices}, tmp_path, 300, "-pair")

    def line(lines: list[str], row: str) -> str:
        return next(line for line in lines if line.startswith(f"| {row} |"))

    assert line(beside, "spo") == line(alone, "spo") and line(beside, rows.SB3) == line(alone, rows.SB3)


def test_the_probability_of_improvement_is_rliables_with_ties_counting_half():
    from rliable import metrics

    generator = np.random.default_rng(1)
    for runs_x, runs_y, tasks in [(5, 5, 6), (10, 3, 2), (3, 4, 1)]:
        x = generator.integers(0, 4, size=(runs_x, tasks)).astype(float)  # few values: many ties
        y = generator.integers(0, 4, size=(runs_y, tasks)).astype(float)
        assert report_module.probability_of_improvement(x, y) == pytest.approx(metrics.probability_of_improvement(x, y))
    assert report_module.probability_of_improvement(x, x) == 0.5


def test_every_cell_of_the_committed_table_is_current_under_this_code(tmp_path):
    """The committed reference study resumes as it is: each cell its report shows (``grid.csv``, written
    with the study) still has its row's identity, so moving or reorganising code recomputes nothing."""
    import csv
    import sqlite3

    results = ROOT / "benchmarks" / "results" / "grid"
    copy = tmp_path / "grid.db"
    with sqlite3.connect(results / "grid.db") as source, sqlite3.connect(copy) as target:
        source.backup(target)  # a consistent copy, even while a grid writes to the original
    study = optuna.load_study(study_name="grid", storage=f"sqlite:///{copy}")
    current = {
        (cell.env, cell.variant, cell.seed)
        for trial in study.get_trials(deepcopy=False, states=[TrialState.COMPLETE, TrialState.FAIL])
        if (cell := cell_of(trial)) is not None and queue.is_current(study, trial)
    }
    with open(results / "grid.csv") as table:
        shown = {(row["env"], row["variant"], int(row["seed"])) for row in csv.DictReader(table)}
    assert len(shown) > 700 and shown <= current


def test_tuning_and_the_grid_never_claim_trials_of_one_study(tmp_path):
    """Two claim protocols never run on one study: each command refuses the other's study by name."""
    from sb3_ppo_variants.tuning import Task, TuningError, open_storage, open_study, run_study

    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    open_grid(GridSettings(storage_url=storage, study_name="grid"), {"CartPole-v1": ENVS["CartPole-v1"].scaled(0.005)})
    with pytest.raises(TuningError, match="'grid' was not made by python -m tuning"):
        open_study(open_storage(storage), "grid", Task.for_env("CartPole-v1", 512))
    run_study("CartPole-v1", n_trials=1, n_timesteps=256, storage=storage, study_name="tuned", n_evaluations=1,
              n_last_evaluations=1, n_eval_episodes=1, keep_models=False, progress=False)  # fmt: skip
    with pytest.raises(queue.GridError, match="tuned"):
        open_grid(GridSettings(storage_url=storage, study_name="tuned"), {"CartPole-v1": ENVS["CartPole-v1"]})


def test_the_committed_studys_waiting_cells_are_claimed_and_told_by_this_code(tmp_path, monkeypatch):
    """The committed study resumes with this code: a cell an earlier queue enqueued is claimed,
    trained (here by a stand-in for the hours a real cell takes) and told, under its current identity."""
    import sqlite3

    copy = tmp_path / "grid.db"
    with (
        sqlite3.connect(ROOT / "benchmarks" / "results" / "grid" / "grid.db") as source,
        sqlite3.connect(copy) as target,
    ):
        source.backup(target)
    settings = GridSettings(storage_url=f"sqlite:///{copy}", study_name="grid")
    study = optuna.load_study(study_name="grid", storage=settings.storage_url)
    waiting = [t for t in study.get_trials(deepcopy=False, states=[TrialState.WAITING]) if cell_of(t) is not None]
    if not waiting:
        pytest.skip("the committed table is complete: no waiting cell left")
    cell = cell_of(waiting[0])

    def stand_in(cell, protocol, compile=False, on_evaluation=None, records=None):
        steps = [protocol.timesteps * (i + 1) // protocol.n_evaluations for i in range(protocol.n_evaluations)]
        return [(step, 1.0) for step in steps]

    monkeypatch.setattr(queue, "train_cell", stand_in)
    run_cells(settings, {cell: 0})
    (told,) = [t for t in trials(settings.storage_url) if cell_of(t) == cell and t.state == TrialState.COMPLETE]
    assert told.value == 1.0 and told.user_attrs["row_id"] == queue.current_row_id(cell)
    assert "commit" in told.user_attrs and queue.is_current(study, told)


def test_a_cells_cost_is_its_cpu_seconds_where_it_recorded_them():
    def trial(**attrs):
        return optuna.trial.create_trial(value=1.0, user_attrs=attrs)

    assert report_module.cost_seconds(trial(seconds=9000.0, cpu_seconds=700.0)) == 700.0  # a worker paused for 8300 s
    assert report_module.cost_seconds(trial(seconds=700.0)) == 700.0  # cells from before CPU seconds were recorded
    assert math.isnan(report_module.cost_seconds(trial()))


def test_the_readme_quotes_the_committed_reports_tables_as_they_are():
    results = ROOT / "benchmarks" / "results" / "grid" / "results.md"
    code = readme.main(["--check", "--results", str(results), "--readme", str(ROOT / "README.md")])
    assert code == 0, "the README's reference section differs from results.md: run python -m benchmarks.grid.readme"


def test_the_readme_tool_copies_each_marked_part_and_names_the_ones_the_report_lacks(tmp_path):
    results = tmp_path / "results.md"
    results.write_text(
        "Controls: each row against SB3's PPO with ...:\n\n| a | b |\n|---|---|\n| x | 1 |\n| y | 2 |\n\n"
        "Multiplicity: the tables above make 3 comparisons.\n"
    )
    page = tmp_path / "README.md"
    page.write_text(
        "Our controls:\n<!-- report: controls -->\n| a | b |\n|---|---|\n| x | 0 |\nWhat it shows.\n"
        "<!-- report: multiplicity -->\nMultiplicity: old.\n<!-- report: compute -->\n| kept |\n"
    )
    assert readme.main(["--check", "--results", str(results), "--readme", str(page)]) == 1
    assert readme.main(["--results", str(results), "--readme", str(page)]) == 0
    assert page.read_text() == (
        "Our controls:\n<!-- report: controls -->\n| a | b |\n|---|---|\n| x | 1 |\n| y | 2 |\nWhat it shows.\n"
        "<!-- report: multiplicity -->\nMultiplicity: the tables above make 3 comparisons.\n"
        "<!-- report: compute -->\n| kept |\n"
    )
    assert readme.main(["--check", "--results", str(results), "--readme", str(page)]) == 1  # compute: no such part


def test_the_readme_check_names_a_figure_its_prose_quotes_that_the_report_no_longer_has(tmp_path, capsys):
    results = tmp_path / "results.md"
    results.write_text("| Variant | Acrobot-v1 |\n|---|---|\n| ppo-rb | -74.1 ± 2.0 (P 0.40 [0.10, 0.70]) |\n")
    page = tmp_path / "README.md"
    section = (
        "<!-- reference-table -->\n- PPO-RB ties ({}; P = 0.40 [0.10, 0.70]{}).\n<!-- /reference-table -->\n"
        "-1.0 ± 9.9\n"  # outside the section: not checked
    )
    page.write_text(section.format("-74.1 ± 2.0", "; on 3 seeds it read worse, 0.05 [0.00, 0.30]"))
    assert readme.main(["--check", "--results", str(results), "--readme", str(page)]) == 0

    page.write_text(section.format("-74.6 ± 2.0", ""))  # a score from before the report was regenerated
    assert readme.main(["--check", "--results", str(results), "--readme", str(page)]) == 1
    assert "quotes -74.6 ± 2.0" in capsys.readouterr().out
