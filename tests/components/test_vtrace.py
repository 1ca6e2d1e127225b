"""V-trace: its advantages against SB3's GAE and by hand, and where it applies."""

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.buffers import RolloutBuffer

from sb3_ppo_variants import HyperparameterError, PPOVariant, RecurrentPPOVariant
from sb3_ppo_variants.components import (
    ClippedSurrogate,
    ValueLoss,
    VTraceAdvantages,
)
from sb3_ppo_variants.variants import variant_arguments
from tests.conftest import FAST


def test_vtrace_with_unit_ratios_is_sb3s_gae():
    rng = np.random.default_rng(0)
    n_steps, n_envs = 6, 2
    buffer = RolloutBuffer(n_steps, gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(2), n_envs=n_envs, gamma=0.9)
    buffer.rewards = rng.normal(size=(n_steps, n_envs)).astype(np.float32)
    buffer.values = rng.normal(size=(n_steps, n_envs)).astype(np.float32)
    buffer.episode_starts = (rng.random((n_steps, n_envs)) < 0.3).astype(np.float32)
    last_values, dones = rng.normal(size=n_envs).astype(np.float32), np.array([0.0, 1.0], dtype=np.float32)
    advantages = VTraceAdvantages().advantages(
        buffer.rewards, buffer.values, buffer.episode_starts, last_values, dones,
        np.zeros((n_steps, n_envs), dtype=np.float32), buffer.gamma, buffer.gae_lambda,
    )  # fmt: skip
    buffer.compute_returns_and_advantage(th.as_tensor(last_values), dones)
    np.testing.assert_allclose(advantages, buffer.advantages, rtol=1e-6)


def test_vtrace_truncates_the_td_error_and_the_trace_by_the_ratio():
    # Two steps of one env: ratios 2 (truncated to 1) and 0.5; gamma 0.9, lambda 0.8.
    advantages = VTraceAdvantages(rho_bar=1.0, c_bar=1.0).advantages(
        rewards=np.array([[1.0], [2.0]]), values=np.array([[0.5], [1.0]]), episode_starts=np.zeros((2, 1)),
        last_values=np.array([2.0]), dones=np.zeros(1), log_ratio=np.log(np.array([[2.0], [0.5]])),
        gamma=0.9, gae_lambda=0.8,
    )  # fmt: skip
    last = 0.5 * (2.0 + 0.9 * 2.0 - 1.0)
    first = 1.0 * (1.0 + 0.9 * 1.0 - 0.5) + 0.9 * 0.8 * 1.0 * last
    assert advantages[:, 0].tolist() == pytest.approx([first, last])


def test_vtrace_keeps_the_rollouts_advantages_in_the_first_epoch_and_refuses_an_lstm():
    arguments = {**FAST, "n_epochs": 1, "seed": 3}
    ppo = PPOVariant("MlpPolicy", "CartPole-v1", **arguments).learn(256)
    vtrace = PPOVariant("MlpPolicy", "CartPole-v1", loss=[ClippedSurrogate(), ValueLoss(), VTraceAdvantages()],
                        **arguments).learn(256)  # fmt: skip
    for a, b in zip(ppo.policy.parameters(), vtrace.policy.parameters(), strict=True):
        assert th.equal(a, b)
    two_epochs = PPOVariant("MlpPolicy", "CartPole-v1", **variant_arguments("vtrace", {**arguments, "n_epochs": 2}))
    assert two_epochs.learn(256).logger.name_to_value["train/vtrace_truncated_fraction"] > 0
    with pytest.raises(HyperparameterError, match="V-trace would need to replay the LSTM"):
        RecurrentPPOVariant("MlpLstmPolicy", "CartPole-v1", **variant_arguments("vtrace"))
