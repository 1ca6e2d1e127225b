"""Value normalisation and PopArt: the statistics and the preserved outputs."""

import math
from typing import Any

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_ppo_variants import MaskablePPOVariant, PPOVariant, RecurrentPPOVariant
from sb3_ppo_variants.components import (
    ValueNormalization,
)
from sb3_ppo_variants.variants import variant_arguments
from tests.conftest import FAST, masked_env, training_context


def _context(returns: np.ndarray) -> Any:
    class Buffer:
        pass

    buffer = Buffer()
    buffer.returns = returns
    return training_context(rollout_buffer=buffer)


def test_value_normalization_statistics_are_debiased_moving_averages():
    component = ValueNormalization(beta=0.9)
    first, second = np.array([[1.0], [3.0]]), np.array([[10.0], [14.0]])
    component.before_train(_context(first))
    mean, std = component.mean_and_std()
    assert (mean.item(), std.item()) == pytest.approx((2.0, 1.0))  # one update: the rollout's own
    component.before_train(_context(second))
    mean, std = component.mean_and_std()
    # Debiased: (0.1 * 0.9 * 2 + 0.1 * 12) / (0.1 * 0.9 + 0.1)
    expected_mean = (0.09 * 2 + 0.1 * 12) / 0.19
    expected_square = (0.09 * 5 + 0.1 * 148) / 0.19
    assert mean.item() == pytest.approx(expected_mean, rel=1e-5)
    assert std.item() == pytest.approx(math.sqrt(expected_square - expected_mean**2), rel=1e-5)
    values = th.tensor([-3.0, 0.0, 25.0])
    assert th.allclose(component.denormalize_values(component.normalize_values(values)), values, atol=1e-5)
    assert ValueNormalization().mean_and_std()[1].item() == pytest.approx(0.1)  # the variance floor, 1e-2


@pytest.mark.parametrize(
    ("cls", "policy", "env"),
    [
        (PPOVariant, "MlpPolicy", "CartPole-v1"),
        (MaskablePPOVariant, "MlpPolicy", masked_env),
        (RecurrentPPOVariant, "MlpLstmPolicy", "CartPole-v1"),
    ],
)
def test_value_normalization_trains_the_critic_on_normalised_returns(cls, policy, env, tmp_path):
    model = cls(policy, make_vec_env(env, n_envs=2, seed=0), **variant_arguments("value-norm", FAST))
    model.learn(128 * 2)
    logged = model.logger.name_to_value
    assert logged["train/value_norm_std"] > 0.1 and np.isfinite(logged["train/value_norm_mean"])
    assert model.value_transform is model.loss[4]
    model.save(tmp_path / "model.zip")
    loaded = cls.load(tmp_path / "model.zip", device="cpu")
    for original, restored in zip(model.loss[4].mean_and_std(), loaded.loss[4].mean_and_std(), strict=True):
        assert th.equal(original, restored)


def test_popart_rescales_the_value_head_so_return_scale_predictions_are_preserved():
    model = PPOVariant("MlpPolicy", "Pendulum-v1", **variant_arguments("popart", FAST)).learn(128)
    component = model.loss[4]
    observations = th.as_tensor(model.rollout_buffer.observations[:8])

    def return_scale_values():
        with th.no_grad():
            return component.denormalize_values(model.policy.predict_values(observations))

    before = return_scale_values()
    mean_before = component.mean_and_std()[0].item()
    context = _context(np.array([[500.0], [700.0]]))  # returns far from those seen so far
    context.policy = model.policy
    component.before_train(context)
    assert component.mean_and_std()[0].item() != pytest.approx(mean_before)  # the statistics moved
    assert th.allclose(return_scale_values(), before, rtol=1e-5, atol=1e-4)
