"""Does the fast path learn what the default path learns? ``compile=True`` against the default, over seeds.

Each (seed, path) trains PPOVariant with SB3's defaults from the same seed, then evaluates the
deterministic policy on a separately seeded environment. The table gives each run's evaluation
return, the mean of its last 20 training episodes and its train() seconds (the fast path's
include compiling); the summary compares the two paths' returns with Welch's t-test.

    python benchmarks/fast_path.py                          # CartPole-v1, 100k steps, seeds 0-4
    python benchmarks/fast_path.py --seeds 0 1 --timesteps 20000
"""

from __future__ import annotations

import argparse
import statistics
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from speed import time_train_calls  # this folder is on sys.path when the script runs

PATHS = {"default": False, "compile=True": True}


def run(env_id: str, path: str, seed: int, timesteps: int) -> dict[str, Any]:
    import numpy as np
    import torch as th
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.evaluation import evaluate_policy

    from sb3_ppo_variants import PPOVariant

    th.set_num_threads(1)
    model = PPOVariant("MlpPolicy", make_vec_env(env_id, n_envs=8, seed=seed), seed=seed, compile=PATHS[path])
    train_seconds = time_train_calls(model)
    model.learn(timesteps)
    evaluation, _ = evaluate_policy(model, make_vec_env(env_id, n_envs=1, seed=seed + 1000), n_eval_episodes=20)
    training = [info["r"] for info in list(model.ep_info_buffer)[-20:]]
    return {
        "path": path,
        "seed": seed,
        "evaluation": float(evaluation),
        "training": float(np.mean(training)),
        "train_s": sum(train_seconds),
    }


def main() -> None:
    from scipy import stats

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3, 4])
    parser.add_argument("--timesteps", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=2, help="parallel processes (timings are per process)")
    args = parser.parse_args()

    cells = [(args.env, path, seed, args.timesteps) for seed in args.seeds for path in PATHS]
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        records = list(pool.map(run, *zip(*cells, strict=True)))

    print(f"{args.env}, SB3's default hyperparameters, {args.timesteps} steps per run\n")
    print("| seed | path | evaluation return (20 episodes) | last 20 training episodes | train() s |")
    print("|---|---|---|---|---|")
    for r in records:
        print(f"| {r['seed']} | {r['path']} | {r['evaluation']:.1f} | {r['training']:.1f} | {r['train_s']:.1f} |")
    print("\n| path | evaluation return, mean ± sd | training return, mean ± sd | train() s, median |")
    print("|---|---|---|---|")
    by_path = {path: [r for r in records if r["path"] == path] for path in PATHS}
    for path, runs in by_path.items():
        evaluation, training = [r["evaluation"] for r in runs], [r["training"] for r in runs]
        print(
            f"| {path} | {statistics.mean(evaluation):.1f} ± {statistics.pstdev(evaluation):.1f} "
            f"| {statistics.mean(training):.1f} ± {statistics.pstdev(training):.1f} "
            f"| {statistics.median(r['train_s'] for r in runs):.1f} |"
        )
    for key in ("evaluation", "training"):
        default, fast = ([r[key] for r in by_path[path]] for path in PATHS)
        test = stats.ttest_ind(fast, default, equal_var=False)
        print(f"\nWelch's t-test, {key} returns, compile=True vs default: ", end="")
        print(f"t = {test.statistic:.2f}, p = {test.pvalue:.2f}")


if __name__ == "__main__":
    main()
