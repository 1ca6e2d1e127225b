"""Saved models keep the loss as plain data and resume exactly."""

import copy
import json
import zipfile

from stable_baselines3.common.env_util import make_vec_env

from sb3_ppo_variants import PPOVariant
from sb3_ppo_variants.components import ClippedSurrogate, EntropyBonus, KLPenalty, ValueLoss
from tests.conftest import FAST, _rng_state, _set_rng_state, parameters_equal

LOSS = [ClippedSurrogate(clip_range=0.15), ValueLoss(coef=0.4), EntropyBonus(coef=0.01), KLPenalty(target=0.001)]


def test_loss_is_saved_as_plain_data_with_the_adaptive_coefficient(tmp_path):
    model = PPOVariant("MlpPolicy", "CartPole-v1", loss=LOSS, **FAST).learn(128)
    coef = model.loss[3].coef
    assert coef != 0.2  # the adaptive rule moved it
    model.save(tmp_path / "model.zip")
    with zipfile.ZipFile(tmp_path / "model.zip") as archive:
        data = json.loads(archive.read("data"))
    assert data["loss_config"] == [
        {"name": "clipped_surrogate", "dual_clip": None, "clip_range_high": None, "log_symmetric": False},
        {"name": "value", "clip_mode": "prediction", "error": "squared", "huber_delta": 1.0},
        {"name": "entropy"},
        {
            "name": "kl_penalty",
            "coef": coef,
            "target": 0.001,
            "adaptive": True,
            "rule": "paper",
            "estimator": "exact",
            "direction": "forward",
        },
    ]
    loaded = PPOVariant.load(tmp_path / "model.zip", device="cpu")
    assert loaded.loss_config() == model.loss_config()
    assert (loaded.loss[0].clip_range(1.0), loaded.loss[1].coef, loaded.loss[2].coef) == (0.15, 0.4, 0.01)
    assert "loss_config" not in model.__dict__  # saving leaves the model as it was


def test_train_save_load_train_equals_training_straight_through(tmp_path):
    model = PPOVariant("MlpPolicy", make_vec_env("CartPole-v1", n_envs=2, seed=0), loss=LOSS, **FAST).learn(256)
    model.save(tmp_path / "model.zip")
    env_at_save, rng_at_save = copy.deepcopy(model.get_env()), _rng_state()

    model.learn(256, reset_num_timesteps=False)

    # Loading re-seeds the global RNGs (SB3's _setup_model); put them back where they were.
    resumed = PPOVariant.load(tmp_path / "model.zip", env=env_at_save, device="cpu", force_reset=False)
    _set_rng_state(rng_at_save)
    resumed.learn(256, reset_num_timesteps=False)

    assert parameters_equal(model.policy, resumed.policy)
    assert resumed.loss[3].coef == model.loss[3].coef
    assert resumed.num_timesteps == model.num_timesteps == 512


def test_default_model_round_trip_keeps_sb3_attributes(tmp_path):
    model = PPOVariant("MlpPolicy", "Pendulum-v1", clip_range_vf=0.3, ent_coef=0.01, target_kl=0.05, **FAST)
    model.learn(64).save(tmp_path / "model")
    loaded = PPOVariant.load(tmp_path / "model", env=make_vec_env("Pendulum-v1"), device="cpu")
    assert loaded.clip_range_vf(1.0) == 0.3 and loaded.ent_coef == 0.01 and loaded.target_kl == 0.05
    assert parameters_equal(model.policy, loaded.policy)
    loaded.learn(64)
