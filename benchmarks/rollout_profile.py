"""Where a rollout step's time goes: each part of SB3's ``collect_rollouts`` step, timed alone.

    python benchmarks/rollout_profile.py                      # CartPole-v1, SB3's defaults, 8 envs
    python benchmarks/rollout_profile.py --env Pendulum-v1 --steps 2000

One torch thread. Each part runs ``--steps`` times on the same observations and its mean time per
call is printed, in microseconds per step of all environments: the policy's forward as SB3 runs it
(``policy(obs)``: the networks, then a torch distribution object, its sample and log-probability,
with torch's argument checks), the networks alone, our rollout forward
(:mod:`sb3_ppo_variants.rollout.inference`: the same numbers on the tensors directly), the same
with the networks compiled (``compile_options(True)``), and the rest of the step: converting the
observation, ``env.step``, the clip of Box actions, ``rollout_buffer.add`` and the callbacks'
``update_locals`` and ``on_step``. Whole rollouts, with the same totals, are
``benchmarks/speed.py``'s business; this says which part a change can win on.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import ConvertCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import obs_as_tensor

from sb3_ppo_variants.rollout.inference import policy_heads, rollout_forward
from sb3_ppo_variants.update.compiled import compile_options


def per_call_us(function: Callable[[], Any], steps: int) -> float:
    for _ in range(min(steps, 50)):  # warm-up (and compiling, for the compiled heads)
        function()
    start = time.perf_counter()
    for _ in range(steps):
        function()
    return (time.perf_counter() - start) / steps * 1e6


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--n-envs", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5_000)
    args = parser.parse_args(argv)
    th.set_num_threads(1)

    env = make_vec_env(args.env, n_envs=args.n_envs, seed=0)
    model = PPO("MlpPolicy", env, seed=0, device="cpu")
    policy, buffer = model.policy, model.rollout_buffer
    policy.set_training_mode(False)
    obs = env.reset()
    obs_tensor = obs_as_tensor(obs, "cpu")
    ours = rollout_forward(policy)
    # The networks as compile=True would compile them (the library's rollout keeps them eager).
    compiled = rollout_forward(policy, th.compile(policy_heads(policy), **compile_options(True)))
    with th.no_grad():
        actions, values, log_probs = policy(obs_tensor)
    actions = actions.numpy()
    box = hasattr(model.action_space, "low")
    stored = actions.reshape(-1, 1) if not box else actions
    rewards, dones = np.zeros(args.n_envs, dtype=np.float32), np.zeros(args.n_envs, dtype=bool)
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

    parts: dict[str, Callable[[], Any]] = {
        "policy(obs), SB3's forward": lambda: policy(obs_tensor),
        "  the networks alone": networks,
        "our rollout forward (same numbers)": lambda: ours(obs_tensor, None),
        "our rollout forward, compiled networks": lambda: compiled(obs_tensor, None),
        "obs_as_tensor": lambda: obs_as_tensor(obs, "cpu"),
        "env.step (DummyVecEnv)": lambda: env.step(actions),
        "np.clip of Box actions": lambda: np.clip(actions, model.action_space.low, model.action_space.high),
        "rollout_buffer.add": add,
        "callbacks (update_locals, on_step)": callbacks,
    }
    if not box:
        del parts["np.clip of Box actions"]
    print(f"{args.env}, {args.n_envs} environments, SB3's default MlpPolicy, {args.steps} calls each")
    print("\n| part of a rollout step | µs per step |\n|---|---|")
    with th.no_grad():
        for name, function in parts.items():
            print(f"| {name} | {per_call_us(function, args.steps):.0f} |", flush=True)


if __name__ == "__main__":
    main()
