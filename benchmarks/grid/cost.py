"""What a grid cell costs: one measured run per environment, extrapolated to the table's budget.

    python -m benchmarks.grid.cost                  # every environment, SB3 / default / compile=True
    python -m benchmarks.grid.cost --envs CartPole-v1 --paths sb3 default

For each environment it trains SB3's ``PPO``, ``PPOVariant`` on its default path and on
``compile=True`` for ``MEASURED_STEPS`` steps from the Zoo's hyperparameters (one torch thread,
2 evaluations of 5 episodes), prints the seconds, and scales them linearly to the reference
table's budget (``cells.ENVS``) to plan the table's CPU-hours. Run it on an idle machine: it
measures wall time.
"""

from __future__ import annotations

import argparse
import time

from stable_baselines3 import PPO

from benchmarks.grid.cells import ENVS
from sb3_ppo_variants import PPOVariant
from sb3_ppo_variants.tuning.baselines import zoo_ppo_arguments
from sb3_ppo_variants.tuning.objective import Task, train_and_evaluate

MEASURED_STEPS = {
    "CartPole-v1": 50_000,
    "Pendulum-v1": 50_000,
    "Acrobot-v1": 100_000,
    "LunarLander-v3": 100_000,
    "HalfCheetah-v5": 30_000,
    "Hopper-v5": 30_000,
}
PATHS = ("sb3", "default", "compile")


def measure(env_id: str, steps: int, path: str) -> float:
    """Seconds to train ``steps`` steps of ``env_id`` on ``path`` (with two small evaluations)."""

    task = Task.for_env(env_id, steps, n_evaluations=2, n_eval_episodes=5, n_eval_envs=1, n_last_evaluations=1)
    arguments = {**zoo_ppo_arguments(env_id), **({"compile": True} if path == "compile" else {})}
    start = time.perf_counter()
    train_and_evaluate(task, arguments, 0, algorithm=PPO if path == "sb3" else PPOVariant)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grid.cost", description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(MEASURED_STEPS), choices=list(MEASURED_STEPS))
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=PATHS)
    parser.add_argument("--fraction", type=float, default=1.0, help="of the measured steps (a quick look)")
    args = parser.parse_args(argv)
    print("| environment | measured steps | " + " | ".join(args.paths) + " | one cell of the table (s) |")
    print("|---|---|" + "---|" * len(args.paths) + "---|")
    for env_id in args.envs:
        steps = max(int(MEASURED_STEPS[env_id] * args.fraction), 2)
        seconds = {path: measure(env_id, steps, path) for path in args.paths}
        scale = ENVS[env_id].timesteps / steps
        cell = " / ".join(f"{seconds[p] * scale:.0f}" for p in args.paths)
        print(f"| {env_id} | {steps:,} | " + " | ".join(f"{seconds[p]:.1f}" for p in args.paths) + f" | {cell} |")


if __name__ == "__main__":
    main()
