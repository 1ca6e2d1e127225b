"""Speed and memory of PPOVariant next to SB3's PPO, same arguments, same machine.

Each run is its own subprocess (so peak resident memory is per run) with one torch thread;
runs alternate SB3, ours, SB3, ours, ... and the table shows medians over repetitions.
``rest s`` is learn() less train(): the rollouts, mostly. ``first train() s`` is the first call
alone: with ``compile=True`` it includes compiling.

    python benchmarks/speed.py                  # every case, 5 repetitions
    python benchmarks/speed.py --case cartpole-default --repeats 3 --timesteps 8192
    python benchmarks/speed.py --case cartpole-compile --fresh-compile-cache   # compiling from scratch
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

# SB3's defaults with an adaptive exact-KL penalty added (ours only; SB3 runs its plain loss).
KL_PENALTY_LOSS = ["clipped_surrogate", "entropy", "value", {"name": "kl_penalty", "target": 0.01}]
# The fast path (compile=True, ours only) on SB3's defaults, compile time included, 200k steps.
CARTPOLE_COMPILE = {
    "env": "CartPole-v1",
    "n_envs": 8,
    "timesteps": 200_000,
    "kwargs": {},
    "ours_kwargs": {"compile": True},
}

CASES: dict[str, dict[str, Any]] = {
    # SB3's defaults, 8 environments, as a new user runs them.
    "cartpole-default": {"env": "CartPole-v1", "n_envs": 8, "timesteps": 200_000, "kwargs": {}},
    "cartpole-compile": CARTPOLE_COMPILE,
    # The RL Baselines3 Zoo's tuned hyperparameters for CartPole-v1.
    "cartpole-zoo": {"env": "CartPole-v1", "n_envs": 8, "timesteps": 40_960, "zoo": True, "kwargs": {}},
    # SB3's PPO against ours with KL_PENALTY_LOSS, on the default path and on the fast path.
    "cartpole-kl-penalty": {
        "env": "CartPole-v1",
        "n_envs": 8,
        "timesteps": 40_960,
        "kwargs": {},
        "loss": KL_PENALTY_LOSS,
    },
    "cartpole-kl-penalty-compile": {**CARTPOLE_COMPILE, "loss": KL_PENALTY_LOSS},
    # The Zoo's tuned hyperparameters: 256x256 ReLU networks, one environment, VecNormalize.
    "halfcheetah-zoo": {"env": "HalfCheetah-v5", "n_envs": 1, "timesteps": 10_240, "zoo": True, "kwargs": {}},
    # The same on the fast path: its peak memory beside SB3's, with and without the compiler's import.
    "halfcheetah-zoo-compile": {
        "env": "HalfCheetah-v5",
        "n_envs": 1,
        "timesteps": 10_240,
        "zoo": True,
        "kwargs": {},
        "ours_kwargs": {"compile": True},
    },
    # sb3-contrib's MaskablePPO against MaskablePPOVariant, its defaults, an env with invalid actions.
    "masked-default": {
        "env": "invalid-actions",
        "n_envs": 8,
        "timesteps": 16_384,
        "algorithm": "maskable",
        "kwargs": {},
    },
    # sb3-contrib's RecurrentPPO against RecurrentPPOVariant, an LSTM policy, its defaults.
    "recurrent-default": {
        "env": "CartPole-v1",
        "n_envs": 8,
        "timesteps": 4_096,
        "algorithm": "recurrent",
        "kwargs": {},
    },
}


def make_model(algorithm: str, case: dict[str, Any]) -> Any:
    """SB3's (or sb3-contrib's) algorithm for ``algorithm="sb3"``, ours otherwise, same arguments."""
    from sb3_contrib import MaskablePPO, RecurrentPPO
    from sb3_contrib.common.envs import InvalidActionEnvDiscrete
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_ppo_variants import MaskablePPOVariant, PPOVariant, RecurrentPPOVariant
    from sb3_ppo_variants.tuning.baselines import ZOO_PPO, zoo_ppo_arguments

    if case["env"] == "invalid-actions":
        env = make_vec_env(
            lambda: InvalidActionEnvDiscrete(dim=40, n_invalid_actions=10), n_envs=case["n_envs"], seed=0
        )
    else:
        env = make_vec_env(case["env"], n_envs=case["n_envs"], seed=0)
    kwargs = dict(case["kwargs"])
    if case.get("zoo"):
        kwargs.update(zoo_ppo_arguments(case["env"]))
        if ZOO_PPO[case["env"]].normalize:
            env = VecNormalize(env, gamma=kwargs.get("gamma", 0.99))
    kind = case.get("algorithm", "ppo")
    sb3, ours, policy = {
        "ppo": (PPO, PPOVariant, "MlpPolicy"),
        "maskable": (MaskablePPO, MaskablePPOVariant, "MlpPolicy"),
        "recurrent": (RecurrentPPO, RecurrentPPOVariant, "MlpLstmPolicy"),
    }[kind]
    if algorithm == "sb3":
        return sb3(policy, env, seed=0, device="cpu", **kwargs)
    return ours(policy, env, seed=0, device="cpu", loss=case.get("loss"), **kwargs, **case.get("ours_kwargs", {}))


def time_train_calls(model: Any) -> list[float]:
    """Wrap ``model.train``; the returned list fills with the seconds of each call."""
    seconds: list[float] = []
    train = model.train

    def timed_train() -> None:
        start = time.perf_counter()
        train()
        seconds.append(time.perf_counter() - start)

    model.train = timed_train
    return seconds


def run_once(algorithm: str, case: dict[str, Any], timesteps: int) -> dict[str, float]:
    """One timed learn() in this process; train() is timed by wrapping the bound method."""
    import torch as th

    th.set_num_threads(1)
    model = make_model(algorithm, case)
    train_seconds = time_train_calls(model)
    start = time.perf_counter()
    model.learn(timesteps)
    learn_seconds = time.perf_counter() - start
    return {
        "learn_s": learn_seconds,
        "train_s": sum(train_seconds),
        "first_train_s": train_seconds[0] if train_seconds else 0.0,
        "steps_per_s": model.num_timesteps / learn_seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def compiler_import_mib() -> float:
    """Resident memory that importing torch's compiler adds to a process that has SB3 and ours."""
    import stable_baselines3  # noqa: F401

    import sb3_ppo_variants  # noqa: F401

    def rss_mib() -> float:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmRSS:")) / 1024

    before = rss_mib()
    import torch._dynamo
    import torch._inductor.compile_fx  # noqa: F401

    return rss_mib() - before


def main() -> None:
    parser = argparse.ArgumentParser(description="PPOVariant vs SB3 PPO: wall time and memory")
    parser.add_argument("--case", choices=list(CASES), action="append", help="default: every case")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timesteps", type=int, help="override each case's budget")
    parser.add_argument(
        "--fresh-compile-cache", action="store_true", help="an empty torch.compile cache for every run (cold compile)"
    )
    parser.add_argument("--single", nargs=2, metavar=("ALGORITHM", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single == ["import", "compiler"]:
        print(json.dumps({"compiler_import_mib": compiler_import_mib()}))
        return
    if args.single:
        algorithm, name = args.single
        print(json.dumps(run_once(algorithm, CASES[name], args.timesteps or CASES[name]["timesteps"])))
        return

    print(
        "| case | algorithm | learn() s | train() s | rest s | steps/s | peak RSS MiB | train() ours/SB3 "
        "| learn() ours/SB3 | first train() s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    compiled_cases = [name for name in args.case or list(CASES) if CASES[name].get("ours_kwargs", {}).get("compile")]
    peaks: dict[str, float] = {}
    for name in args.case or list(CASES):
        results: dict[str, list[dict[str, float]]] = {"sb3": [], "ours": []}
        for _ in range(args.repeats):
            for algorithm in ("sb3", "ours"):
                command = [sys.executable, __file__, "--single", algorithm, name]
                if args.timesteps:
                    command += ["--timesteps", str(args.timesteps)]
                environment = dict(os.environ)
                with tempfile.TemporaryDirectory() as cache:
                    if args.fresh_compile_cache:  # torch.compile's caches and headers live in TMPDIR
                        environment["TMPDIR"] = cache
                    run = subprocess.run(command, check=True, capture_output=True, text=True, env=environment)
                results[algorithm].append(json.loads(run.stdout.strip().splitlines()[-1]))
        medians = {
            algorithm: {key: statistics.median(run[key] for run in runs) for key in runs[0]}
            for algorithm, runs in results.items()
        }
        peaks[name] = medians["ours"]["peak_rss_mib"]
        for algorithm in ("sb3", "ours"):
            m = medians[algorithm]
            ratios = ""
            if algorithm == "ours":
                train_ratio = m["train_s"] / medians["sb3"]["train_s"]
                learn_ratio = m["learn_s"] / medians["sb3"]["learn_s"]
                ratios = f" {train_ratio:.2f} | {learn_ratio:.2f} |"
            else:
                ratios = " | |"
            label = "SB3 PPO" if algorithm == "sb3" else "PPOVariant"
            print(
                f"| {name} | {label} | {m['learn_s']:.2f} | {m['train_s']:.2f} | {m['learn_s'] - m['train_s']:.2f} "
                f"| {m['steps_per_s']:.0f} "
                f"| {m['peak_rss_mib']:.0f} |{ratios} {m['first_train_s']:.2f} |",
                flush=True,
            )

    if compiled_cases:
        command = [sys.executable, __file__, "--single", "import", "compiler"]
        run = subprocess.run(command, check=True, capture_output=True, text=True)
        imported = json.loads(run.stdout.strip().splitlines()[-1])["compiler_import_mib"]
        print(
            f"\nImporting torch's compiler adds {imported:.0f} MiB of resident memory; the compile=True rows' "
            f"peak without it: {', '.join(f'{name} {peaks[name] - imported:.0f} MiB' for name in compiled_cases)}."
        )


if __name__ == "__main__":
    main()
