"""The speed benchmark runs end to end on a tiny budget (it measures; tests never time)."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SPEED = Path(__file__).parents[2] / "benchmarks" / "speed.py"


def speed(*arguments: str) -> str:
    command = [sys.executable, str(SPEED), "--repeats", "1", "--timesteps", "256", *arguments]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def test_speed_benchmark_prints_a_row_per_contender_and_the_compilers_import():
    output = speed("--case", "cartpole-kl-penalty")
    rows = [line.split("|") for line in output.splitlines() if line.startswith("| cartpole-kl-penalty")]
    assert [row[2].strip() for row in rows] == ["SB3", "`PPOVariant` default", "`PPOVariant(compile=True)`"]
    assert [row[4].strip() for row in rows][1:] != ["", ""]  # the speed-up over SB3, per round
    assert "Importing torch's compiler adds" in output and "cartpole-kl-penalty" in output.splitlines()[-1]


def test_speed_benchmark_times_sbx_where_it_is_installed_and_says_so_where_not():
    output = speed("--case", "cartpole-default", "--contender", "sbx", "--contender", "ours")
    rows = [line.split("|")[2].strip() for line in output.splitlines() if line.startswith("| cartpole-default")]
    if importlib.util.find_spec("sbx") is None:
        assert "SBX's rows are skipped: sbx-rl is not installed" in output and rows == ["`PPOVariant` default"]
    else:
        assert rows == ["SBX `PPO`", "`PPOVariant` default"]


TRAIN_PROFILE = Path(__file__).parents[2] / "benchmarks" / "train_profile.py"


def test_the_train_profile_times_each_part_of_a_gradient_step():
    command = [sys.executable, str(TRAIN_PROFILE), "--calls", "1"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in output.splitlines() if line[:2] == "| "}
    assert float(rows["backward() (default path)"]) > 0 and float(rows["Adam's step"]) > 0
    assert float(rows["**a whole step**"].strip("*")) > float(rows["backward() (default path)"])


ROLLOUT_PROFILE = Path(__file__).parents[2] / "benchmarks" / "rollout_profile.py"


def test_the_rollout_profile_gives_each_part_its_ratio_to_the_floor():
    command = [sys.executable, str(ROLLOUT_PROFILE), "--case", "halfcheetah", "--steps", "20"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    rows = {line.split("|")[1].strip(): line.split("|")[3].strip() for line in output.splitlines() if line[:2] == "| "}
    assert rows["**the floor**"] == "1.0"
    assert float(rows["a whole step, our collect_rollouts"]) > 1  # no rollout beats its own floor
    assert "env.step (VecNormalize(DummyVecEnv), Monitor)" in rows
    assert "our route through it" in rows  # the exact route that our rollout takes through that stack
    assert float(rows["our forward, timed inside that loop"]) > 0  # the parts as the loop runs them
    assert float(rows["our route through the VecEnv stack, timed inside that loop"]) > 0


FAST_PATH = Path(__file__).parents[2] / "benchmarks" / "fast_path.py"


def test_fast_path_benchmark_compares_the_paths_over_seeds():
    command = [sys.executable, str(FAST_PATH), "--seeds", "0", "1", "--timesteps", "2048"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    assert "| 1 | compile=True |" in output and "| default |" in output
    assert "Welch's t-test, evaluation returns" in output


def test_the_cell_cost_benchmark_extrapolates_a_measured_run_to_the_tables_budget():
    command = [sys.executable, "-m", "benchmarks.grid.cost", "--envs", "CartPole-v1", "--paths", "sb3", "default"]
    command += ["--fraction", "0.01"]
    root = Path(__file__).parents[2]
    output = subprocess.run(command, cwd=root, check=True, capture_output=True, text=True).stdout
    (row,) = [line for line in output.splitlines() if line.startswith("| CartPole-v1 |")]
    measured, cell = row.split("|")[2].strip(), row.split("|")[5].strip()
    assert measured == "500" and len(cell.split(" / ")) == 2


ROOT = Path(__file__).parents[2]


def tuning_vs_zoo(tmp_path: Path, *studies: str) -> list[str]:
    command = [sys.executable, "-m", "benchmarks.tuning_vs_zoo", "--envs", "CartPole-v1", "--studies", *studies]
    command += ["--n-studies", "1", "--n-trials", "1", "--n-timesteps", "512", "--n-evaluations", "1"]
    command += ["--n-startup-trials", "1", "--seeds", "2", "--out", str(tmp_path)]
    subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True)
    return [line for line in (tmp_path / "results.md").read_text().splitlines() if line.startswith("| CartPole-v1")]


def test_the_tuning_throughput_benchmark_runs_a_study_and_retrains_its_best(tmp_path):
    row, side = tuning_vs_zoo(tmp_path, "ours")
    assert row.split("|")[2].strip() == "ours 0" and row.split("|")[-2].strip().endswith("(2)")  # 2 seeds retrained
    assert side.split("|")[2].strip() == "ours" and side.split("|")[3].strip() == "1"  # one study on that side
    saved = (tmp_path / "results.json").read_text()
    tuning_vs_zoo(tmp_path, "ours")  # the same settings again: the finished study is not run again
    assert (tmp_path / "results.json").read_text() == saved


@pytest.mark.slow  # the Zoo's first random trial (seed 0) is 8,192 steps at batch size 4: minutes
def test_the_tuning_throughput_benchmark_runs_the_zoos_study_beside_ours(tmp_path):
    rows = tuning_vs_zoo(tmp_path, "zoo", "ours")
    assert [row.split("|")[2].strip() for row in rows[:2]] == ["zoo 0", "ours 0"]
    assert all(row.split("|")[-2].strip().endswith("(2)") for row in rows[:2])
    assert rows[-1].split("|")[-2].strip().startswith(("+", "-"))  # ours less the Zoo's, with its interval


def test_the_two_level_bootstrap_counts_how_much_studies_differ():
    from benchmarks.tuning_vs_zoo import two_level_difference

    seeds_agree = [np.array([10.0, 10.5, 9.5])] * 3
    studies_differ = [np.array([0.0, 0.5, -0.5]), np.array([20.0, 20.5, 19.5]), np.array([10.0, 10.5, 9.5])]
    baseline = [np.array([0.0, 1.0, -1.0])] * 3
    narrow, wide = two_level_difference(seeds_agree, baseline), two_level_difference(studies_differ, baseline)
    assert narrow[0] == pytest.approx(wide[0]) == pytest.approx(10.0)
    assert 0 < narrow[1] < 10 < narrow[2] and wide[2] - wide[1] > 3 * (narrow[2] - narrow[1])


def test_the_round_trip_benchmark_counts_the_statements_of_a_study():
    command = [sys.executable, "-m", "benchmarks.storage_round_trips", "--n-trials", "1", "--n-timesteps", "256"]
    output = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    statements = int(output.split("statements per trial: ")[1].split()[0])
    assert statements > 10  # a trial is created, reports each evaluation and finishes
