"""Outer-PPO: the call's update scaled and given momentum."""

import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_ppo_variants import MaskablePPOVariant, PPOVariant
from sb3_ppo_variants.components import (
    ClippedSurrogate,
    OuterUpdate,
    ValueLoss,
)
from tests.conftest import FAST, masked_env, parameters_equal, save_continue_and_resume, training_context


def _outer_call(component, policy, update):
    """One train() call as the loop makes it: the epochs move the weights by ``update``."""
    context = training_context(policy=policy)
    component.before_train(context)
    with th.no_grad():
        policy.weight.add_(update)
    return component.extra_phase(context)


def test_outer_update_scales_the_calls_update_and_adds_nesterov_momentum():
    policy = th.nn.Linear(1, 1, bias=False)
    with th.no_grad():
        policy.weight.fill_(1.0)
    plain = OuterUpdate(outer_learning_rate=2.0)
    stats = _outer_call(plain, policy, 0.5)
    assert policy.weight.item() == pytest.approx(1.0 + 2.0 * 0.5) and stats["outer_update_norm"] == 0.5
    nesterov = OuterUpdate(outer_learning_rate=1.0, momentum=0.5)
    with th.no_grad():
        policy.weight.fill_(0.0)
    _outer_call(nesterov, policy, 1.0)  # m = 1, step g + mu m = 1.5
    assert policy.weight.item() == pytest.approx(1.5)
    _outer_call(nesterov, policy, 2.0)  # m = 0.5 + 2 = 2.5, step 2 + 1.25
    assert policy.weight.item() == pytest.approx(1.5 + 3.25)
    heavy_ball = OuterUpdate(momentum=0.5, nesterov=False)
    _outer_call(heavy_ball, policy, 1.0)
    _outer_call(heavy_ball, policy, 1.0)  # m = 0.5 + 1
    assert policy.weight.item() == pytest.approx(4.75 + 1.0 + 1.5)
    assert set(heavy_ball.state_dict()) == {"momentum_buffer.weight"}  # the start of a call is not state


def test_an_outer_learning_rate_of_one_is_ppo():
    arguments = {**FAST, "seed": 1}
    ppo = PPOVariant("MlpPolicy", "Pendulum-v1", **arguments).learn(128)
    outer = PPOVariant("MlpPolicy", "Pendulum-v1", loss=[ClippedSurrogate(), ValueLoss(), OuterUpdate()], **arguments)
    outer.learn(128)
    for a, b in zip(ppo.policy.parameters(), outer.policy.parameters(), strict=True):
        assert th.allclose(a, b, atol=1e-7)
    assert outer.logger.name_to_value["train/outer_update_norm"] > 0


@pytest.mark.parametrize("cls", [PPOVariant, MaskablePPOVariant])
def test_outer_momentum_survives_save_load_and_continued_training_bit_for_bit(cls, tmp_path):
    env = "Pendulum-v1" if cls is PPOVariant else masked_env
    loss = [ClippedSurrogate(), ValueLoss(), OuterUpdate(outer_learning_rate=1.5, momentum=0.9)]
    model = cls("MlpPolicy", make_vec_env(env, n_envs=2, seed=0), loss=loss, **FAST).learn(256)
    model, resumed = save_continue_and_resume(model, tmp_path / "model.zip", 256)
    assert parameters_equal(model.policy, resumed.policy)
    for key, tensor in model.loss[2].momentum_buffer.items():
        assert th.equal(resumed.loss[2].momentum_buffer[key], tensor), key
