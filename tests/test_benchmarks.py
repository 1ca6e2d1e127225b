"""The speed benchmark runs end to end on a tiny budget (it measures; tests never time)."""

import subprocess
import sys
from pathlib import Path

SPEED = Path(__file__).parents[1] / "benchmarks" / "speed.py"


def test_speed_benchmark_prints_a_row_per_algorithm():
    command = [sys.executable, str(SPEED), "--case", "cartpole-kl-penalty", "--repeats", "1", "--timesteps", "256"]
    output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    rows = [line for line in output.splitlines() if line.startswith("| cartpole-kl-penalty")]
    assert [row.split("|")[2].strip() for row in rows] == ["SB3 PPO", "PPOVariant"]
