"""The loss components on sb3-contrib's masked and recurrent PPO."""

import math
import re

import numpy as np
import pytest
import torch as th
from sb3_contrib.common.envs import InvalidActionEnvDiscrete, InvalidActionEnvMultiBinary, InvalidActionEnvMultiDiscrete
from sb3_contrib.common.maskable.distributions import MaskableCategorical
from sb3_contrib.common.maskable.evaluation import evaluate_policy as evaluate_masked
from sb3_contrib.common.maskable.utils import get_action_masks
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_ppo_variants import MaskablePPOVariant, RecurrentPPOVariant
from sb3_ppo_variants.components import ClippedSurrogate, EntropyBonus, KLPenalty, ValueLoss, exact_kl
from tests.conftest import CueRecallEnv, parameters_equal

VARIANTS = {
    "clipped": [ClippedSurrogate(), ValueLoss(), EntropyBonus(coef=0.01)],
    "dual-clip": [ClippedSurrogate(dual_clip=3.0), ValueLoss(), EntropyBonus(coef=0.01)],
    "kl-penalty": [ClippedSurrogate(), ValueLoss(), KLPenalty(coef=0.2, target=0.01)],
    "penalty-only": [{"name": "value"}, {"name": "kl_penalty", "rule": "rllib", "estimator": "k3"}],
}
SMALL = {"n_steps": 64, "batch_size": 32, "n_epochs": 2, "seed": 0, "device": "cpu"}


def test_exact_kl_between_masked_distributions_ignores_invalid_actions():
    masks = th.tensor([[True, True, False]])
    old = MaskableCategorical(logits=th.tensor([[0.0, 0.0, 5.0]]), masks=masks)
    new = MaskableCategorical(logits=th.tensor([[0.0, math.log(3.0), -5.0]]), masks=masks)
    kl = exact_kl(old, new)
    # Over the valid actions: old = [1/2, 1/2], new = [1/4, 3/4].
    assert th.isfinite(kl).all()
    assert kl.item() == pytest.approx(0.5 * math.log(2) + 0.5 * math.log(0.5 / 0.75), rel=1e-5)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize(
    "make_env",
    [
        lambda: InvalidActionEnvDiscrete(dim=8, n_invalid_actions=3),
        lambda: InvalidActionEnvMultiDiscrete(dims=[3, 4], n_invalid_actions=2),
        lambda: InvalidActionEnvMultiBinary(dims=4, n_invalid_actions=2),
    ],
    ids=["discrete", "multidiscrete", "multibinary"],
)
def test_maskable_variants_train_with_masks(variant, make_env):
    model = MaskablePPOVariant("MlpPolicy", make_vec_env(make_env, n_envs=2, seed=0), loss=VARIANTS[variant], **SMALL)
    model.learn(256)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
    if variant != "clipped":
        assert np.isfinite(model.logger.name_to_value["train/kl"])
    env = model.get_env()
    obs = env.reset()
    action, _ = model.predict(obs, action_masks=get_action_masks(env), deterministic=True)
    assert env.action_space.contains(action[0])
    mean, _ = evaluate_masked(model, env, n_eval_episodes=2)
    assert np.isfinite(mean)


def test_maskable_learns_without_masking_when_asked():
    env = make_vec_env(lambda: InvalidActionEnvDiscrete(dim=8, n_invalid_actions=3), n_envs=2, seed=0)
    model = MaskablePPOVariant("MlpPolicy", env, loss=VARIANTS["kl-penalty"], **SMALL).learn(128, use_masking=False)
    assert np.isfinite(model.logger.name_to_value["train/kl"])


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_recurrent_variants_train_with_an_lstm(variant):
    env = make_vec_env(CueRecallEnv, n_envs=2, seed=0)
    model = RecurrentPPOVariant(
        "MlpLstmPolicy", env, loss=VARIANTS[variant], policy_kwargs={"lstm_hidden_size": 16}, **SMALL
    )
    model.learn(256)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
    obs = env.reset()
    action, lstm_states = model.predict(obs, episode_start=np.ones(2, dtype=bool))
    action, lstm_states = model.predict(obs, state=lstm_states, episode_start=np.zeros(2, dtype=bool))
    assert lstm_states[0].shape == (1, 2, 16) and env.action_space.contains(action[0])
    mean, _ = evaluate_policy(model, env, n_eval_episodes=2)
    assert np.isfinite(mean)


@pytest.mark.slow
def test_recurrent_kl_variant_learns_to_remember_the_cue():
    env = make_vec_env(CueRecallEnv, n_envs=8, seed=0)
    model = RecurrentPPOVariant(
        "MlpLstmPolicy", env, loss=VARIANTS["kl-penalty"], n_steps=64, batch_size=128, learning_rate=3e-3, seed=0
    ).learn(60_000)
    mean, _ = evaluate_policy(model, make_vec_env(CueRecallEnv, seed=1), n_eval_episodes=50)
    assert mean > 0.8  # a memoryless policy scores 0 in expectation


@pytest.mark.parametrize(
    ("cls", "make_env", "policy", "kwargs"),
    [
        (MaskablePPOVariant, lambda: InvalidActionEnvDiscrete(dim=8, n_invalid_actions=3), "MlpPolicy", {}),
        (RecurrentPPOVariant, CueRecallEnv, "MlpLstmPolicy", {"policy_kwargs": {"lstm_hidden_size": 16}}),
    ],
    ids=["maskable", "recurrent"],
)
def test_save_load_round_trip_keeps_the_loss_and_the_weights(tmp_path, cls, make_env, policy, kwargs):
    loss = [ClippedSurrogate(clip_range=0.1), ValueLoss(), KLPenalty(target=0.001)]
    model = cls(policy, make_vec_env(make_env, n_envs=2, seed=0), loss=loss, **SMALL, **kwargs).learn(256)
    model.save(tmp_path / "model.zip")
    loaded = cls.load(tmp_path / "model.zip", env=make_vec_env(make_env, n_envs=2, seed=1), device="cpu")
    assert parameters_equal(model.policy, loaded.policy)
    assert loaded.loss_config() == model.loss_config() and loaded.clip_range(1.0) == 0.1
    loaded.learn(128)


@pytest.mark.parametrize(("cls", "policy"), [(MaskablePPOVariant, "MlpPolicy"), (RecurrentPPOVariant, "MlpLstmPolicy")])
def test_bad_input_gets_the_same_errors(cls, policy):
    env = make_vec_env(lambda: InvalidActionEnvDiscrete(dim=8, n_invalid_actions=3))
    with pytest.raises(ValueError, match=re.escape("clip_range=-0.1 is invalid: accepted values are numbers > 0.0")):
        cls(policy, env, clip_range=-0.1)
    with pytest.raises(ValueError, match=re.escape("n_epochs=0 is invalid: accepted values are integers >= 1.")):
        cls(policy, env, n_epochs=0)
    with pytest.raises(ValueError, match=re.escape("loss component name='dual_clip_typo' is unknown")):
        cls(policy, env, loss=["dual_clip_typo"])
    with pytest.raises(AssertionError, match=re.escape("clip_range_vf=-1 is invalid")):
        cls(policy, env, clip_range_vf=-1)


@pytest.mark.parametrize(
    ("cls", "make_env", "policy"),
    [
        (MaskablePPOVariant, lambda: InvalidActionEnvDiscrete(dim=8, n_invalid_actions=3), "MlpPolicy"),
        (RecurrentPPOVariant, CueRecallEnv, "MlpLstmPolicy"),
    ],
    ids=["maskable", "recurrent"],
)
def test_callback_that_sets_ent_coef_reaches_the_loss(cls, make_env, policy):
    from tests.algorithms.test_policies_and_spaces import EntropySchedule

    model = cls(policy, make_vec_env(make_env, n_envs=2, seed=0), **SMALL).learn(64, callback=EntropySchedule())
    assert model.loss[1].coef == 0.5 and model.logger.name_to_value["train/clip_range"] == 0.05
