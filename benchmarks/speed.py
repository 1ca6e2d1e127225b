"""Speed and memory of PPOVariant beside SB3's PPO and SBX's, same arguments, same machine.

Each run is its own process (so its seconds and peak resident memory are the whole process's, as a
user pays them) with one thread; every round runs each contender once, in turn (SB3, SBX, ours,
ours with ``compile=True``), and the table shows medians over rounds, with each ratio taken per
round. Per run it reports:

- ``process s``: the whole process, from its start to its exit (imports, building, learn(), exit);
- ``learn() s`` and, within it, ``train()`` per gradient step and the rest of learn() (the rollouts,
  mostly) per environment step: one step of all ``n_envs`` environments, as the policy sees them;
- ``fixed s``: the process less learn(): what every run pays whatever its budget;
- ``first train() s``: the first call alone; on a compiled path it includes compiling.

Compiled contenders run with their compile caches warm (torch's inductor cache in ``TMPDIR``, JAX's
persistent cache in ``JAX_COMPILATION_CACHE_DIR``): an unrecorded run of one rollout fills them
first. ``--fresh-compile-cache`` gives every run empty caches instead: the first-ever figures.

SBX (``pip install sbx-rl``; measured with sbx-rl 0.28.0, jax 0.10.2, flax 0.12.8, optax 0.2.8)
runs at the same hyperparameters with what SBX is: its own initialisation (no orthogonal init), an
actor and a critic with their own Adam and their own gradient clipping to ``max_grad_norm``, the
clipped surrogate with the analytic entropy and an unclipped value loss, each minibatch's update
jit-compiled by XLA; it reads SB3's rollout buffer. Where ``sbx-rl`` is not installed its rows are
skipped with a message. Gradient steps are counted as ``n_epochs`` x minibatches per call (no case
stops early).

For figures that compare, pin one core: ``--cpu 1`` runs each process under ``taskset -c 1`` (JAX
otherwise uses a second core whatever its flags say).

    python benchmarks/speed.py --cpu 1 --repeats 3                      # every case
    python benchmarks/speed.py --case cartpole-default --repeats 3 --timesteps 8192
    python benchmarks/speed.py --case cartpole-default --contender ours-compile --fresh-compile-cache
    python benchmarks/speed.py --case halfcheetah-zoo --device cuda      # a GPU, where there is one
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

# SB3's defaults with an adaptive exact-KL penalty added (ours only; SB3 runs its plain loss).
KL_PENALTY_LOSS = ["clipped_surrogate", "entropy", "value", {"name": "kl_penalty", "target": 0.01}]
EVERY_PATH = ("sb3", "sbx", "ours", "ours-compile")
LABELS = {
    "sb3": "SB3",
    "sbx": "SBX `PPO`",
    "ours": "`PPOVariant` default",
    "ours-compile": "`PPOVariant(compile=True)`",
}

CASES: dict[str, dict[str, Any]] = {
    # SB3's defaults, 8 environments, as a new user runs them.
    "cartpole-default": {"env": "CartPole-v1", "n_envs": 8, "timesteps": 200_000, "contenders": EVERY_PATH},
    # The RL Baselines3 Zoo's tuned hyperparameters: 256x256 ReLU networks, one environment, VecNormalize.
    "halfcheetah-zoo": {
        "env": "HalfCheetah-v5",
        "n_envs": 1,
        "timesteps": 100_000,
        "zoo": True,
        "contenders": EVERY_PATH,
    },
    # The RL Baselines3 Zoo's tuned hyperparameters for CartPole-v1.
    "cartpole-zoo": {"env": "CartPole-v1", "n_envs": 8, "timesteps": 40_960, "zoo": True},
    # SB3's PPO against ours with KL_PENALTY_LOSS, on the default path and on the fast path.
    "cartpole-kl-penalty": {
        "env": "CartPole-v1",
        "n_envs": 8,
        "timesteps": 40_960,
        "loss": KL_PENALTY_LOSS,
        "contenders": ("sb3", "ours", "ours-compile"),
    },
    # sb3-contrib's MaskablePPO against MaskablePPOVariant, its defaults, an env with invalid actions.
    "masked-default": {"env": "invalid-actions", "n_envs": 8, "timesteps": 16_384, "algorithm": "maskable"},
    # sb3-contrib's RecurrentPPO against RecurrentPPOVariant, an LSTM policy, its defaults.
    "recurrent-default": {"env": "CartPole-v1", "n_envs": 8, "timesteps": 4_096, "algorithm": "recurrent"},
}


def make_env(case: dict[str, Any], gamma: float) -> Any:
    """The case's vectorised environment, wrapped as the Zoo wraps it where the case says so."""
    from sb3_contrib.common.envs import InvalidActionEnvDiscrete
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_ppo_variants.tuning.baselines import ZOO_PPO

    if case["env"] == "invalid-actions":
        return make_vec_env(
            lambda: InvalidActionEnvDiscrete(dim=40, n_invalid_actions=10), n_envs=case["n_envs"], seed=0
        )
    env = make_vec_env(case["env"], n_envs=case["n_envs"], seed=0)
    if case.get("zoo") and ZOO_PPO[case["env"]].normalize:
        env = VecNormalize(env, gamma=gamma)
    return env


def make_model(contender: str, case: dict[str, Any], device: str) -> Any:
    """The contender's model of the case: the same environment and hyperparameters for each."""
    from sb3_contrib import MaskablePPO, RecurrentPPO
    from stable_baselines3 import PPO

    from sb3_ppo_variants import MaskablePPOVariant, PPOVariant, RecurrentPPOVariant
    from sb3_ppo_variants.tuning.baselines import zoo_ppo_arguments

    kwargs = zoo_ppo_arguments(case["env"]) if case.get("zoo") else {}
    env = make_env(case, kwargs.get("gamma", 0.99))
    if contender == "sbx":
        return sbx_model(env, kwargs)
    sb3, ours, policy = {
        "ppo": (PPO, PPOVariant, "MlpPolicy"),
        "maskable": (MaskablePPO, MaskablePPOVariant, "MlpPolicy"),
        "recurrent": (RecurrentPPO, RecurrentPPOVariant, "MlpLstmPolicy"),
    }[case.get("algorithm", "ppo")]
    if contender == "sb3":
        return sb3(policy, env, seed=0, device=device, **kwargs)
    compile_ = contender == "ours-compile"
    return ours(policy, env, seed=0, device=device, loss=case.get("loss"), compile=compile_, **kwargs)


def sbx_model(env: Any, kwargs: dict[str, Any]) -> Any:
    """SBX's PPO at the same hyperparameters; torch activations become their flax counterparts."""
    import flax.linen
    import torch as th
    from sbx import PPO as SBXPPO

    policy_kwargs = dict(kwargs.pop("policy_kwargs", {}))
    if "activation_fn" in policy_kwargs:
        activations = {th.nn.ReLU: flax.linen.relu, th.nn.Tanh: flax.linen.tanh}
        policy_kwargs["activation_fn"] = activations[policy_kwargs["activation_fn"]]
    return SBXPPO("MlpPolicy", env, seed=0, policy_kwargs=policy_kwargs, **kwargs)


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


def run_once(contender: str, case: dict[str, Any], timesteps: int, device: str) -> dict[str, float]:
    """One timed learn() in this process; train() is timed by wrapping the bound method."""
    import torch as th

    th.set_num_threads(1)
    model = make_model(contender, case, device)
    train_seconds = time_train_calls(model)
    start = time.perf_counter()
    model.learn(timesteps)
    learn_seconds = time.perf_counter() - start
    minibatches = math.ceil(model.n_steps * model.n_envs / model.batch_size)
    env_steps = model.num_timesteps / model.n_envs
    return {
        "learn_s": learn_seconds,
        "train_s": sum(train_seconds),
        "train_ms_per_step": sum(train_seconds) / (len(train_seconds) * model.n_epochs * minibatches) * 1e3
        if train_seconds
        else 0.0,
        "rollout_us_per_step": (learn_seconds - sum(train_seconds)) / env_steps * 1e6,
        "first_train_s": train_seconds[0] if train_seconds else 0.0,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_process(
    contender: str, name: str, timesteps: int | None, args: argparse.Namespace, caches: dict[str, str]
) -> dict[str, float]:
    """One contender's run in its own process; its whole-process seconds beside what it reports."""
    command = [sys.executable, __file__, "--single", contender, name, "--device", args.device]
    if timesteps:
        command += ["--timesteps", str(timesteps)]
    if args.cpu is not None:
        command = ["taskset", "-c", str(args.cpu), *command]
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
        "TMPDIR": caches["torch"],  # torch.compile's caches and headers live in TMPDIR
        "JAX_COMPILATION_CACHE_DIR": caches["jax"],
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",  # every compiled function, not only slow ones
    }
    start = time.perf_counter()
    run = subprocess.run(command, check=True, capture_output=True, text=True, env=environment)
    return {"process_s": time.perf_counter() - start, **json.loads(run.stdout.strip().splitlines()[-1])}


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


def speedup(rounds: list[dict[str, dict[str, float]]], reference: str, contender: str) -> str:
    """The median over rounds of the reference's process seconds over the contender's ("" for itself)."""
    if reference not in rounds[0] or reference == contender:
        return ""
    return f"{statistics.median(r[reference]['process_s'] / r[contender]['process_s'] for r in rounds):.2f}x"


def main() -> None:
    parser = argparse.ArgumentParser(description="PPOVariant beside SB3's PPO and SBX's: wall time and memory")
    parser.add_argument("--case", choices=list(CASES), action="append", help="default: every case")
    parser.add_argument(
        "--contender", choices=EVERY_PATH, action="append", help="default: each case's contenders (see CASES)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="rounds; each runs every contender once")
    parser.add_argument("--timesteps", type=int, help="override each case's budget")
    parser.add_argument("--device", default="cpu", help="torch's device for SB3 and ours (SBX: JAX's default)")
    parser.add_argument("--cpu", type=int, help="pin every run to this core (taskset -c CPU)")
    parser.add_argument(
        "--fresh-compile-cache", action="store_true", help="empty compile caches for every run (the first-ever run)"
    )
    parser.add_argument("--single", nargs=2, metavar=("CONTENDER", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.single == ["import", "compiler"]:
        print(json.dumps({"compiler_import_mib": compiler_import_mib()}))
        return
    if args.single:
        contender, name = args.single
        print(json.dumps(run_once(contender, CASES[name], args.timesteps or CASES[name]["timesteps"], args.device)))
        return
    import torch as th

    if args.device.startswith("cuda") and not th.cuda.is_available():
        parser.error(f"--device {args.device}: torch sees no CUDA device on this machine (accepted here: cpu)")
    if args.cpu is not None and not shutil.which("taskset"):
        parser.error("--cpu needs taskset (Debian: util-linux)")
    have_sbx = importlib.util.find_spec("sbx") is not None
    if not have_sbx:
        print("SBX's rows are skipped: sbx-rl is not installed (pip install sbx-rl).")

    print(
        "| case | contender | process s | vs SB3 | vs SBX | learn() s | train() ms per gradient step "
        "| rollout µs per env step | fixed s | peak RSS MiB | first train() s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    peaks: dict[str, float] = {}
    warm = {"torch": tempfile.gettempdir(), "jax": os.path.join(tempfile.gettempdir(), "speed-jax-cache")}
    for name in args.case or list(CASES):
        case = CASES[name]
        contenders = [
            c
            for c in case.get("contenders", ("sb3", "ours"))
            if (not args.contender or c in args.contender) and (c != "sbx" or have_sbx)
        ]
        if not args.fresh_compile_cache:  # one rollout and one train() compile what the timed runs need
            for contender in ("sbx", "ours-compile"):
                if contender in contenders:
                    run_process(contender, name, 1, args, warm)
        rounds: list[dict[str, dict[str, float]]] = []
        for _ in range(args.repeats):
            runs = {}
            for contender in contenders:
                with tempfile.TemporaryDirectory() as torch_cache, tempfile.TemporaryDirectory() as jax_cache:
                    fresh = {"torch": torch_cache, "jax": jax_cache}
                    runs[contender] = run_process(
                        contender, name, args.timesteps, args, fresh if args.fresh_compile_cache else warm
                    )
            rounds.append(runs)
        for contender in contenders:
            m = {key: statistics.median(r[contender][key] for r in rounds) for key in rounds[0][contender]}
            if contender == "ours-compile":
                peaks[name] = m["peak_rss_mib"]
            print(
                f"| {name} | {LABELS[contender]} | {m['process_s']:.1f} "
                f"| {speedup(rounds, 'sb3', contender)} | {speedup(rounds, 'sbx', contender)} "
                f"| {m['learn_s']:.1f} | {m['train_ms_per_step']:.2f} | {m['rollout_us_per_step']:.0f} "
                f"| {m['process_s'] - m['learn_s']:.2f} | {m['peak_rss_mib']:.0f} | {m['first_train_s']:.2f} |",
                flush=True,
            )

    if peaks:
        command = [sys.executable, __file__, "--single", "import", "compiler"]
        run = subprocess.run(command, check=True, capture_output=True, text=True)
        imported = json.loads(run.stdout.strip().splitlines()[-1])["compiler_import_mib"]
        print(
            f"\nImporting torch's compiler adds {imported:.0f} MiB of resident memory; the compile=True rows' "
            f"peak without it: {', '.join(f'{name} {peak - imported:.0f} MiB' for name, peak in peaks.items())}."
        )


if __name__ == "__main__":
    main()
