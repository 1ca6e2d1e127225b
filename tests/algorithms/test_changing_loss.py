"""Going on with another loss: load(..., loss=[...]) on SB3's and our zips, and model.loss = [...]."""

import pytest
from sb3_contrib import MaskablePPO, RecurrentPPO
from sb3_contrib.common.envs import InvalidActionEnvDiscrete
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from sb3_ppo_variants import HyperparameterError, MaskablePPOVariant, PPOVariant, RecurrentPPOVariant
from sb3_ppo_variants.components import ClippedSurrogate, EntropyBonus, KLPenalty, Surrogate, ValueLoss
from tests.conftest import FAST, parameters_equal

NEW_LOSS = [ClippedSurrogate(clip_range=0.1), ValueLoss(coef=0.25), EntropyBonus(coef=0.01), KLPenalty(target=0.02)]
CASES = {
    "ppo": (PPO, PPOVariant, "MlpPolicy", lambda: make_vec_env("CartPole-v1", n_envs=2, seed=0)),
    "masked": (
        MaskablePPO,
        MaskablePPOVariant,
        "MlpPolicy",
        lambda: make_vec_env(lambda: InvalidActionEnvDiscrete(dim=10, n_invalid_actions=3), n_envs=2, seed=0),
    ),
    "recurrent": (RecurrentPPO, RecurrentPPOVariant, "MlpLstmPolicy", lambda: make_vec_env("CartPole-v1", n_envs=2)),
}


def _assert_follows_new_loss(model):
    assert [type(c) for c in model.loss] == [ClippedSurrogate, ValueLoss, EntropyBonus, KLPenalty]
    assert model.clip_range(1.0) == 0.1 and model.vf_coef == 0.25 and model.ent_coef == 0.01
    assert model.clip_range_vf is None and model.target_kl is None


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("saved_by", ["sb3", "ours"])
def test_a_saved_model_goes_on_with_a_new_loss(case, saved_by, tmp_path):
    sb3, ours, policy, make_env = CASES[case]
    saver = sb3 if saved_by == "sb3" else ours
    trained = saver(policy, make_env(), clip_range=0.3, ent_coef=0.05, **FAST).learn(128)
    trained.save(tmp_path / "model.zip")

    model = ours.load(tmp_path / "model.zip", env=make_env(), device="cpu", loss=NEW_LOSS)
    assert parameters_equal(model.policy, trained.policy)  # the weights are the saved ones
    _assert_follows_new_loss(model)
    model.learn(128)
    assert model.logger.name_to_value["train/clip_range"] == 0.1 and "train/kl" in model.logger.name_to_value
    model.save(tmp_path / "again.zip")
    _assert_follows_new_loss(ours.load(tmp_path / "again.zip", device="cpu"))


def test_custom_objects_loss_means_the_same(tmp_path):
    PPOVariant("MlpPolicy", "CartPole-v1", **FAST).save(tmp_path / "model.zip")
    _assert_follows_new_loss(PPOVariant.load(tmp_path / "model.zip", custom_objects={"loss": NEW_LOSS}))
    with pytest.raises(HyperparameterError, match="both given"):
        PPOVariant.load(tmp_path / "model.zip", loss=NEW_LOSS, custom_objects={"loss": NEW_LOSS})


def test_an_invalid_new_loss_is_refused_before_loading(tmp_path):
    with pytest.raises(HyperparameterError, match="name='clipped' is unknown"):
        PPOVariant.load(tmp_path / "absent.zip", loss=["clipped", "value"])


def test_assigning_a_loss_validates_it_and_the_attributes_follow():
    model = PPOVariant("MlpPolicy", "CartPole-v1", ent_coef=0.05, target_kl=0.02, **FAST)
    with pytest.raises(HyperparameterError, match="accepted parameters are coef, clip_range"):
        model.loss = [ClippedSurrogate(), {"name": "value", "weight": 1.0}]
    assert model.ent_coef == 0.05  # a refused loss changes nothing

    model.loss = [Surrogate(), ValueLoss(coef=0.1), KLPenalty()]
    # No component mirrors clip_range, ent_coef or target_kl any more: they take their defaults.
    assert (model.clip_range(1.0), model.ent_coef, model.vf_coef, model.target_kl) == (0.2, 0.0, 0.1, None)
    model.learn(128)
    assert "train/kl_coef" in model.logger.name_to_value and "train/entropy_loss" not in model.logger.name_to_value
