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


GRID = Path(__file__).parents[1] / "benchmarks" / "grid.py"


def _grid(out: Path) -> str:
    command = [sys.executable, str(GRID), "--envs", "CartPole-v1", "--variants", "sb3-ppo", "spo", "--seeds", "0", "1"]
    command += ["--budget-scale", "0.02", "--jobs", "2", "--bootstrap", "50", "--out", str(out)]
    return subprocess.run(command, check=True, capture_output=True, text=True).stdout


def test_grid_runs_a_tiny_grid_writes_its_report_and_resumes(tmp_path):
    output = _grid(tmp_path)
    assert "4 cells to run, 0 already finished" in output
    for name in ("grid.csv", "results.md", "curves-CartPole-v1.png", "aggregate.png", "profiles.png"):
        assert (tmp_path / name).stat().st_size > 0
    rows = (tmp_path / "grid.csv").read_text().splitlines()
    assert rows[0] == "env,variant,seed,timesteps,mean_return,error"
    assert {tuple(row.split(",")[1:3]) for row in rows[1:]} == {
        ("sb3-ppo", "0"),
        ("sb3-ppo", "1"),
        ("spo", "0"),
        ("spo", "1"),
    }
    results = (tmp_path / "results.md").read_text()
    assert "| spo | " in results and "| sb3-ppo | " in results and "P(variant > SB3 PPO)" in results

    (tmp_path / "cells" / "CartPole-v1__spo__1.json").unlink()  # as if interrupted during that cell
    assert "1 cells to run, 3 already finished" in _grid(tmp_path)
