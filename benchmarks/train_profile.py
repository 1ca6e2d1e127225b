"""Where a gradient step's time goes in ``train()``: each part of the trainer's minibatch step,
timed inside real ``train()`` calls.

    python benchmarks/train_profile.py                          # CartPole-v1, SB3's defaults, 8 envs
    python benchmarks/train_profile.py --case halfcheetah       # the Zoo's HalfCheetah-v5: 256x256
    python benchmarks/train_profile.py --compile                # the fast path

One torch thread. The model collects one rollout, then ``--calls`` ``train()`` calls run with a
timer around each part of the step (:class:`~sb3_ppo_variants.update.trainer.Trainer`): gathering
the minibatch, scoring it (the policy's forward and the loss components; on the fast path the
compiled graph, which takes the gradient, clips it and steps Adam too), autograd's ``backward()``
(default path), the gradient's norm and clipping, the divergence guard's check, Adam's step, and
the rest of the loop (hooks, statistics). Each timer costs about a microsecond, so the parts add
up to a little more than a step without them; ``benchmarks/speed.py`` gives the untouched figures.
The first call (compiling, on the fast path) is not counted; with ``--compile`` its own parts are
printed first: the compiler's import, and dynamo's phases of the call (tracing the Python,
inductor's part, which with a warm cache is loading the cached library, and building the guards).
"""

from __future__ import annotations

import argparse
import functools
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

import sb3_ppo_variants.update.trainer as trainer_module
from sb3_ppo_variants import PPOVariant
from sb3_ppo_variants.tuning.baselines import zoo_ppo_arguments
from sb3_ppo_variants.update.compiled import CompiledScorer
from sb3_ppo_variants.update.optimizer_step import FlatAdam, OptimizerStep
from sb3_ppo_variants.update.scoring import MinibatchScorer
from sb3_ppo_variants.update.trainer import DivergenceGuard

CASES = {
    "cartpole": {"env": "CartPole-v1", "n_envs": 8, "zoo": False},
    "halfcheetah": {"env": "HalfCheetah-v5", "n_envs": 1, "zoo": True},
}
SCORING = "score: forward and loss (compiled: the graph, with the gradient, its clipping and Adam's step)"
PARTS = {
    "gather the minibatch": None,
    SCORING: None,
    "backward() (default path)": (OptimizerStep, "backward"),
    "zero_grad / set the flat gradient": (FlatAdam, "zero_grad"),
    "gradient norm and clipping": (FlatAdam, "clip_grad_norm"),
    "divergence guard's check": (DivergenceGuard, "check"),
    "Adam's step": (FlatAdam, "step"),
}

FIRST_CALL_PHASES = {
    "_compile.compile_inner": "compiling, in all",
    "bytecode_tracing": "tracing the Python into a graph",
    "OutputGraph.call_user_compiler": "inductor (warm cache: loading the cached library)",
    "inductor_codecache_torch_key": "  hashing torch's sources for the cache key",
    "PyCodeCache.load_by_key_path": "  loading the library",
    "build_guards": "building the guards",
}


def timed(seconds: dict[str, float], part: str, function: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            seconds[part] += time.perf_counter() - start

    return wrapper


def timed_minibatches(seconds: dict[str, float], minibatches: Callable[..., Iterator[Any]]) -> Callable[..., Any]:
    def wrapper(*args: Any) -> Iterator[Any]:
        iterator = minibatches(*args)
        while True:
            start = time.perf_counter()
            try:
                batch = next(iterator)
            except StopIteration:
                return
            finally:
                seconds["gather the minibatch"] += time.perf_counter() - start
            yield batch

    return wrapper


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=list(CASES), default="cartpole")
    parser.add_argument("--compile", action="store_true", help="PPOVariant(compile=True)")
    parser.add_argument("--calls", type=int, default=3, help="train() calls timed after the first")
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    case = CASES[args.case]
    kwargs = zoo_ppo_arguments(case["env"]) if case["zoo"] else {}
    env = make_vec_env(case["env"], n_envs=case["n_envs"], seed=0)
    if case["zoo"]:
        env = VecNormalize(env, gamma=kwargs["gamma"])
    import_s = 0.0
    if args.compile:
        start = time.perf_counter()
        import torch._dynamo.utils
        import torch._inductor.compile_fx

        import_s = time.perf_counter() - start
    model = PPOVariant("MlpPolicy", env, seed=0, device="cpu", compile=args.compile, **kwargs)
    calls: list[float] = []
    train = model.train

    def timed_train() -> None:
        start = time.perf_counter()
        train()
        calls.append(time.perf_counter() - start)

    model.train = timed_train  # type: ignore[method-assign]
    model.learn(model.n_steps * model.n_envs)  # one rollout and the first train() (compiling)
    model.train, first_s = train, calls[0]  # type: ignore[method-assign]
    if args.compile:
        names, values = torch._dynamo.utils.compile_times(repr="csv", aggregate=True)
        phases = dict(zip(names, map(float, values), strict=True))
        print(f"The first train() call: {first_s:.2f} s. Before it, importing the compiler: {import_s:.2f} s.")
        print("| dynamo's phase of the first call | s |\n|---|---|")
        for phase, label in FIRST_CALL_PHASES.items():
            print(f"| {label} | {phases.get(phase, 0.0):.2f} |")
        print()

    seconds: dict[str, float] = defaultdict(float)
    originals = {part: getattr(*where) for part, where in PARTS.items() if where}
    originals["set"] = FlatAdam.set_flat_gradients
    score, for_call, minibatches = MinibatchScorer.score, CompiledScorer.for_call, trainer_module.minibatches
    try:
        if args.compile:  # the graph itself must stay untouched: time the function that calls it
            CompiledScorer.for_call = lambda *a, **k: timed(seconds, SCORING, for_call(*a, **k))  # type: ignore[method-assign]
        else:
            MinibatchScorer.score = timed(seconds, SCORING, score)  # type: ignore[method-assign]
        for part, where in PARTS.items():
            if where:
                setattr(*where, timed(seconds, part, originals[part]))
        FlatAdam.set_flat_gradients = timed(seconds, "zero_grad / set the flat gradient", originals["set"])
        trainer_module.minibatches = timed_minibatches(seconds, trainer_module.minibatches)
        start = time.perf_counter()
        for _ in range(args.calls):
            model.train()
        total = time.perf_counter() - start
    finally:
        for part, where in PARTS.items():
            if where:
                setattr(*where, originals[part])
        FlatAdam.set_flat_gradients = originals["set"]
        MinibatchScorer.score, CompiledScorer.for_call, trainer_module.minibatches = score, for_call, minibatches

    steps = args.calls * model.n_epochs * -(-model.n_steps * model.n_envs // model.batch_size)
    path = f"compile=True ({model.compiled_path})" if args.compile else "the default path"
    print(f"{case['env']}, {path}, {steps} gradient steps in {args.calls} train() calls")
    print("\n| part of a gradient step | µs per step | share |\n|---|---|---|")
    for part in PARTS:
        print(f"| {part} | {seconds[part] / steps * 1e6:.0f} | {seconds[part] / total:.0%} |")
    rest = total - sum(seconds.values())
    print(f"| the rest of the loop (hooks, statistics) | {rest / steps * 1e6:.0f} | {rest / total:.0%} |")
    print(f"| **a whole step** | **{total / steps * 1e6:.0f}** | 100% |")


if __name__ == "__main__":
    main()
