"""The speed benchmark runs end to end on a tiny budget (it measures; tests never time)."""

import subprocess
import sys
from pathlib import Path

import pytest

SPEED = Path(__file__).parents[1] / "benchmarks" / "speed.py"


@pytest.mark.parametrize("case", ["cartpole-kl-penalty", "cartpole-compile"])
def test_speed_benchmark_prints_a_row_per_algorithm(case):
    command = [sys.executable, str(SPEED), "--case", case, "--repeats", "1", "--timesteps", "256"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    rows = [line for line in output.splitlines() if line.startswith(f"| {case}")]
    assert [row.split("|")[2].strip() for row in rows] == ["SB3 PPO", "PPOVariant"]


FAST_PATH = Path(__file__).parents[1] / "benchmarks" / "fast_path.py"


def test_fast_path_benchmark_compares_the_paths_over_seeds():
    command = [sys.executable, str(FAST_PATH), "--seeds", "0", "1", "--timesteps", "2048"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    assert "| 1 | compile=True |" in output and "| default |" in output
    assert "Welch's t-test, evaluation returns" in output


def test_the_cell_cost_benchmark_extrapolates_a_measured_run_to_the_tables_budget():
    command = [sys.executable, "-m", "benchmarks.grid.cost", "--envs", "CartPole-v1", "--paths", "sb3", "default"]
    command += ["--fraction", "0.01"]
    root = Path(__file__).parents[1]
    output = subprocess.run(command, cwd=root, check=True, capture_output=True, text=True).stdout
    (row,) = [line for line in output.splitlines() if line.startswith("| CartPole-v1 |")]
    measured, cell = row.split("|")[2].strip(), row.split("|")[5].strip()
    assert measured == "500" and len(cell.split(" / ")) == 2
