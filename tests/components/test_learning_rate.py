"""The KL-adaptive learning rate: its rule, bounds and effect."""

import pytest
from stable_baselines3.common.env_util import make_vec_env

from sb3_ppo_variants import HyperparameterError, MaskablePPOVariant, PPOVariant, RecurrentPPOVariant
from sb3_ppo_variants.components import (
    ClippedSurrogate,
    KLAdaptiveLearningRate,
    ValueLoss,
)
from tests.conftest import FAST, masked_env


def test_kl_adaptive_learning_rate_rule_and_bounds():
    component = KLAdaptiveLearningRate(target=0.01)
    assert component.learning_rate(3e-4) == pytest.approx(3e-4)
    component.after_train({"adaptive_lr_kl": 0.03})  # above 2 x target: / 1.5
    assert component.learning_rate(3e-4) == pytest.approx(2e-4)
    component.after_train({"adaptive_lr_kl": 0.01})  # within the band: unchanged
    assert component.scale == pytest.approx(1 / 1.5)
    component.after_train({"adaptive_lr_kl": 0.001})  # below target / 2: x 1.5
    assert component.scale == pytest.approx(1.0)
    assert component.learning_rate(0.009) == pytest.approx(0.009)
    for _ in range(5):  # bounded at 1e-2, without winding up past it
        component.after_train({"adaptive_lr_kl": 0.0001})
    assert component.learning_rate(0.009) == pytest.approx(0.01) and component.scale == pytest.approx(0.01 / 0.009)
    with pytest.raises(HyperparameterError, match="max_learning_rate=1e-06 is invalid"):
        KLAdaptiveLearningRate(max_learning_rate=1e-6)


@pytest.mark.parametrize(
    ("cls", "policy", "env"),
    [
        (PPOVariant, "MlpPolicy", "Pendulum-v1"),
        (MaskablePPOVariant, "MlpPolicy", masked_env),
        (RecurrentPPOVariant, "MlpLstmPolicy", "CartPole-v1"),
    ],
)
def test_kl_adaptive_learning_rate_lowers_the_rate_of_a_policy_that_moves_too_far(cls, policy, env, tmp_path):
    loss = [ClippedSurrogate(), ValueLoss(), KLAdaptiveLearningRate(target=1e-9)]
    model = cls(policy, make_vec_env(env, n_envs=2, seed=0), loss=loss, **FAST).learn(128 * 3)
    # The rule ran after each of the three calls; the learning rate of a call reflects the ones before it.
    assert model.loss[2].scale == pytest.approx(1.5**-3)
    assert model.policy.optimizer.param_groups[0]["lr"] == pytest.approx(3e-4 / 1.5**2)
    assert model.logger.name_to_value["train/learning_rate"] == pytest.approx(3e-4 / 1.5**2)
    model.save(tmp_path / "model.zip")
    assert cls.load(tmp_path / "model.zip").loss[2].scale == model.loss[2].scale
