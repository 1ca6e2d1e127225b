"""The RL Baselines3 Zoo's tuned PPO hyperparameters: the baseline a study must beat.

From ``hyperparams/ppo.yml`` of rl-baselines3-zoo (LunarLander-v2, HalfCheetah-v3 and Hopper-v3
there), written as the Zoo writes them: ``"lin_0.001"`` is a schedule decaying linearly from 0.001
to 0, read by the parser the Zoo launcher reads a Zoo YAML with
(:func:`~sb3_ppo_variants.common.schedules.linear_schedule`).
The benchmark grid (``python -m benchmarks.grid``) and ``python -m tuning retrain`` both read this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sb3_ppo_variants.common.schedules import is_linear_schedule, linear_schedule


@dataclass(frozen=True)
class ZooSetup:
    """How the Zoo trains PPO on one environment."""

    n_envs: int
    n_timesteps: int
    """The Zoo's training budget (its ``n_timesteps``)."""
    hyperparameters: dict[str, Any]
    normalize: bool = False
    """``VecNormalize`` on observations and rewards (evaluation uses the training statistics)."""
    policy_kwargs: dict[str, Any] = field(default_factory=dict)


_MUJOCO = {"mujoco": True}

ZOO_PPO: dict[str, ZooSetup] = {
    "CartPole-v1": ZooSetup(
        n_envs=8,
        n_timesteps=100_000,
        hyperparameters=dict(
            n_steps=32,
            batch_size=256,
            gae_lambda=0.8,
            gamma=0.98,
            n_epochs=20,
            ent_coef=0.0,
            learning_rate="lin_0.001",
            clip_range="lin_0.2",
        ),
    ),
    "Acrobot-v1": ZooSetup(
        n_envs=16,
        n_timesteps=1_000_000,
        hyperparameters=dict(n_steps=256, gae_lambda=0.94, gamma=0.99, n_epochs=4, ent_coef=0.0),
        normalize=True,
    ),
    "LunarLander-v3": ZooSetup(
        n_envs=16,
        n_timesteps=1_000_000,
        hyperparameters=dict(n_steps=1024, batch_size=64, gae_lambda=0.98, gamma=0.999, n_epochs=4, ent_coef=0.01),
    ),
    "Pendulum-v1": ZooSetup(
        n_envs=4,
        n_timesteps=100_000,
        hyperparameters=dict(
            n_steps=1024,
            gae_lambda=0.95,
            gamma=0.9,
            n_epochs=10,
            ent_coef=0.0,
            learning_rate=1e-3,
            clip_range=0.2,
            use_sde=True,
            sde_sample_freq=4,
        ),
    ),
    "HalfCheetah-v5": ZooSetup(
        n_envs=1,
        n_timesteps=1_000_000,
        hyperparameters=dict(
            batch_size=64,
            n_steps=512,
            gamma=0.98,
            learning_rate=2.0633e-05,
            ent_coef=0.000401762,
            clip_range=0.1,
            n_epochs=20,
            gae_lambda=0.92,
            max_grad_norm=0.8,
            vf_coef=0.58096,
        ),
        policy_kwargs=_MUJOCO,
        normalize=True,
    ),
    "Hopper-v5": ZooSetup(
        n_envs=1,
        n_timesteps=1_000_000,
        hyperparameters=dict(
            batch_size=32,
            n_steps=512,
            gamma=0.999,
            learning_rate=9.80828e-05,
            ent_coef=0.00229519,
            clip_range=0.2,
            n_epochs=5,
            gae_lambda=0.99,
            max_grad_norm=0.7,
            vf_coef=0.835671,
        ),
        policy_kwargs=_MUJOCO,
        normalize=True,
    ),
}


def zoo_ppo_arguments(env_id: str) -> dict[str, Any]:
    """The Zoo's hyperparameters for ``env_id`` as SB3 ``PPO`` keyword arguments (``{}`` if it has none)."""
    setup = ZOO_PPO.get(env_id)
    if setup is None:
        return {}
    arguments = {k: linear_schedule(v, k) if is_linear_schedule(v) else v for k, v in setup.hyperparameters.items()}
    if setup.policy_kwargs.get("mujoco"):
        import torch as th

        arguments["policy_kwargs"] = {
            "log_std_init": -2,
            "ortho_init": False,
            "activation_fn": th.nn.ReLU,
            "net_arch": {"pi": [256, 256], "vf": [256, 256]},
        }
    return arguments
