"""Where a rollout step's time goes: each part of a ``collect_rollouts`` step, timed alone, and its
ratio to the step's practical floor.

    python benchmarks/rollout_profile.py                       # CartPole-v1, SB3's defaults, 8 envs
    python benchmarks/rollout_profile.py --case halfcheetah    # the Zoo's HalfCheetah-v5: 256x256, VecNormalize
    python benchmarks/rollout_profile.py --env Pendulum-v1 --steps 2000

One torch thread. Each part runs ``--steps`` times on the same observations and its mean time per
call (the calling thread's CPU time, so that other work on the machine slows a figure less than it
would slow wall time) is printed in microseconds per step of all environments. The **floor** is
what a step cannot do without: the environments' own ``step`` as ``gym.make`` gives them (one after the other, no
Monitor, no vectorisation, no normalisation) plus the networks' matrix products at their exact
shapes (``torch.addmm``, nothing else). The parts: whole steps of SB3's and of our
``collect_rollouts`` (a rollout divided by its steps: the figure a change must move), our forward
and our route through the ``VecEnv`` stack timed inside that loop (where each runs between the
others, with the caches they leave: compare with the same parts timed alone below), the policy's
forward as SB3 runs it (``policy(obs)``: the networks, a torch distribution object, its sample and
log-probability, torch's argument checks), the networks alone (as modules, and as our rollout calls
them), our rollout forward (:mod:`sb3_ppo_variants.rollout.inference`: the same numbers on the
tensors directly), the same with the networks compiled, and the rest of the step: converting the
observation, the user's ``VecEnv`` stack's ``step`` (Monitor, DummyVecEnv and, for the Zoo's
HalfCheetah, VecNormalize) and our exact route through it (:mod:`sb3_ppo_variants.rollout.vec_envs`),
the clip of Box actions, ``rollout_buffer.add`` and the callbacks' ``update_locals`` and ``on_step``.
Whole ``learn()`` calls are ``benchmarks/speed.py``'s business; this says which part a change can
win on.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import ConvertCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import obs_as_tensor
from stable_baselines3.common.vec_env import VecNormalize

from sb3_ppo_variants import PPOVariant
from sb3_ppo_variants.common.networks import policy_heads
from sb3_ppo_variants.rollout.collect import collect_rollouts
from sb3_ppo_variants.rollout.inference import rollout_forward
from sb3_ppo_variants.rollout.vec_envs import vec_env_route
from sb3_ppo_variants.tuning.baselines import ZOO_PPO, zoo_ppo_arguments
from sb3_ppo_variants.update.compiled import compile_options

CASES = {
    "cartpole": {"env": "CartPole-v1", "n_envs": 8, "zoo": False},
    "halfcheetah": {"env": "HalfCheetah-v5", "n_envs": 1, "zoo": True},
}


def per_call_us(function: Callable[[], Any], steps: int) -> float:
    for _ in range(min(steps, 50)):  # warm-up (and compiling, for the compiled heads)
        function()
    start = time.thread_time()
    for _ in range(steps):
        function()
    return (time.thread_time() - start) / steps * 1e6


def whole_step_us(algorithm: type, env_id: str, n_envs: int, zoo: bool, steps: int) -> float:
    """A rollout of ``steps`` steps by ``algorithm``'s own ``collect_rollouts``, per step."""
    kwargs = {**zoo_ppo_arguments(env_id), "n_steps": steps} if zoo else {"n_steps": steps}
    model = algorithm("MlpPolicy", make_env(env_id, n_envs, zoo, kwargs.get("gamma", 0.99)), seed=0, device="cpu")
    model._setup_learn(steps * n_envs, callback=None)
    callback = ConvertCallback(None)
    callback.init_callback(model)
    collect = lambda: model.collect_rollouts(model.env, callback, model.rollout_buffer, steps)  # noqa: E731
    collect()  # warm-up
    start = time.thread_time()
    collect()
    return (time.thread_time() - start) / steps * 1e6


def in_loop_us(env_id: str, n_envs: int, zoo: bool, steps: int) -> dict[str, float]:
    """Our rollout's forward and its route through the ``VecEnv`` stack, each timed inside a real
    ``collect_rollouts`` of ``steps`` steps (per step): what they cost between the other parts."""
    kwargs = {**zoo_ppo_arguments(env_id), "n_steps": steps} if zoo else {"n_steps": steps}
    model = PPOVariant("MlpPolicy", make_env(env_id, n_envs, zoo, kwargs.get("gamma", 0.99)), seed=0, device="cpu")
    model._setup_learn(steps * n_envs, callback=None)
    callback = ConvertCallback(None)
    callback.init_callback(model)
    spent = {"forward": 0.0, "route": 0.0}

    def timed(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
        def call(*arguments: Any) -> Any:
            start = time.thread_time()
            result = function(*arguments)
            spent[name] += time.thread_time() - start
            return result

        return call

    forward = timed("forward", rollout_forward(model.policy))
    route = timed("route", vec_env_route(model.env).step)
    collect = lambda: collect_rollouts(model, model.env, callback, model.rollout_buffer, steps, forward, env_step=route)  # noqa: E731
    collect()  # warm-up
    spent.update(forward=0.0, route=0.0)
    collect()
    return {name: seconds / steps * 1e6 for name, seconds in spent.items()}


def make_env(env_id: str, n_envs: int, zoo: bool, gamma: float) -> Any:
    env = make_vec_env(env_id, n_envs=n_envs, seed=0)
    return VecNormalize(env, gamma=gamma) if zoo and ZOO_PPO[env_id].normalize else env


def raw_env_step(env_id: str, n_envs: int) -> Callable[[], Any]:
    """The environments' own step, as ``gym.make`` gives them, one after the other."""
    envs = [gym.make(env_id) for _ in range(n_envs)]
    for index, env in enumerate(envs):
        env.reset(seed=index)
        env.action_space.seed(index)
    actions = [env.action_space.sample() for env in envs]

    def step() -> None:
        for env, action in zip(envs, actions, strict=True):
            _, _, terminated, truncated, _ = env.step(action)
            if terminated or truncated:
                env.reset()

    return step


def matmuls(policy: Any, n_envs: int) -> Callable[[], Any]:
    """The policy's matrix products at their exact shapes, and nothing else."""
    layers = [m for m in policy.modules() if isinstance(m, th.nn.Linear)]
    inputs = [th.randn(n_envs, layer.in_features) for layer in layers]
    return lambda: [th.addmm(layer.bias, x, layer.weight.t()) for layer, x in zip(layers, inputs, strict=True)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=list(CASES), default="cartpole")
    parser.add_argument("--env", help="another environment, SB3's defaults (overrides --case)")
    parser.add_argument("--n-envs", type=int, help="default: the case's")
    parser.add_argument("--steps", type=int, default=5_000)
    args = parser.parse_args(argv)
    th.set_num_threads(1)
    case = dict(CASES[args.case]) if not args.env else {"env": args.env, "n_envs": 8, "zoo": False}
    env_id, zoo = case["env"], case["zoo"]
    n_envs = args.n_envs or case["n_envs"]

    kwargs = zoo_ppo_arguments(env_id) if zoo else {}
    env = make_env(env_id, n_envs, zoo, kwargs.get("gamma", 0.99))
    model = PPO("MlpPolicy", env, seed=0, device="cpu", **kwargs)
    policy, buffer = model.policy, model.rollout_buffer
    policy.set_training_mode(False)
    obs = env.reset()
    obs_tensor = obs_as_tensor(obs, "cpu")
    ours = rollout_forward(policy)
    heads = policy_heads(policy)
    route = vec_env_route(env)
    # The networks as compile=True would compile them (the library's rollout keeps them eager).
    compiled = rollout_forward(policy, th.compile(policy_heads(policy), **compile_options(True)))
    with th.no_grad():
        actions, values, log_probs = policy(obs_tensor)
    actions = actions.numpy()
    box = hasattr(model.action_space, "low")
    stored = actions.reshape(-1, 1) if not box else actions
    rewards, dones = np.zeros(n_envs, dtype=np.float32), np.zeros(n_envs, dtype=bool)
    callback = ConvertCallback(None)
    callback.init_callback(model)

    def networks() -> Any:
        features = policy.extract_features(obs_tensor)
        latent_pi, latent_vf = policy.mlp_extractor(features)
        return policy.action_net(latent_pi), policy.value_net(latent_vf)

    def add() -> None:
        if buffer.full:
            buffer.reset()
        buffer.add(obs, stored, rewards, dones, values, log_probs)

    def callbacks() -> bool:
        callback.update_locals({"obs": obs, "actions": actions, "rewards": rewards, "dones": dones})
        return callback.on_step()

    with th.no_grad():
        floor = {
            "the environments' own step (gym.make)": per_call_us(raw_env_step(env_id, n_envs), args.steps),
            "the networks' matrix products (addmm)": per_call_us(matmuls(policy, n_envs), args.steps),
        }
    rollout_steps = min(args.steps, 2048)
    in_loop = in_loop_us(env_id, n_envs, zoo, rollout_steps)
    parts: dict[str, Callable[[], Any] | float] = {
        "a whole step, SB3's collect_rollouts": whole_step_us(PPO, env_id, n_envs, zoo, rollout_steps),
        "a whole step, our collect_rollouts": whole_step_us(PPOVariant, env_id, n_envs, zoo, rollout_steps),
        "  our forward, timed inside that loop": in_loop["forward"],
        "  our route through the VecEnv stack, timed inside that loop": in_loop["route"],
        "policy(obs), SB3's forward": lambda: policy(obs_tensor),
        "  the networks alone, as modules": networks,
        "  the networks alone, as our rollout calls them": lambda: heads(obs_tensor),
        "our rollout forward (same numbers)": lambda: ours(obs_tensor, None),
        "our rollout forward, compiled networks": lambda: compiled(obs_tensor, None),
        "obs_as_tensor": lambda: obs_as_tensor(obs, "cpu"),
        f"env.step ({route.stack}, Monitor)": lambda: env.step(actions),
        "  our route through it": lambda: route.step(actions),
        "np.clip of Box actions": lambda: np.clip(actions, model.action_space.low, model.action_space.high),
        "rollout_buffer.add": add,
        "callbacks (update_locals, on_step)": callbacks,
    }
    if not box:
        del parts["np.clip of Box actions"]
    if not route.fast:
        del parts["  our route through it"]
    total_floor = sum(floor.values())
    network = "the Zoo's" if zoo else "SB3's default"
    print(f"{env_id}, {n_envs} environment(s), {network} MlpPolicy, {args.steps} calls each")
    print("\n| part of a rollout step | µs per step | ratio to the floor |\n|---|---|---|")
    for name, us in floor.items():
        print(f"| floor: {name} | {us:.0f} | |")
    print(f"| **the floor** | **{total_floor:.0f}** | 1.0 |", flush=True)
    with th.no_grad():
        for name, part in parts.items():
            us = part if isinstance(part, float) else per_call_us(part, args.steps)
            print(f"| {name} | {us:.0f} | {us / total_floor:.1f} |", flush=True)


if __name__ == "__main__":
    main()
