"""Every SB3 policy, action space and training feature works with PPOVariant."""

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.callbacks import BaseCallback, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from sb3_ppo_variants import PPOVariant
from sb3_ppo_variants.components import ClippedSurrogate, EntropyBonus, KLPenalty, ValueLoss
from tests.conftest import FAST, DictEnv, ImageEnv

KL_LOSS = [ClippedSurrogate(), ValueLoss(), EntropyBonus(coef=0.01), KLPenalty(coef=0.2, target=0.01)]


def _assert_trained(model, before):
    after = model.policy.state_dict()
    assert any(not th.equal(before[k], after[k]) for k in before)
    assert all(th.isfinite(v).all() for v in after.values())


@pytest.mark.parametrize("loss", [None, KL_LOSS], ids=["default", "kl-penalty"])
def test_every_action_space_trains(space_env, loss):
    model = PPOVariant("MlpPolicy", space_env, loss=loss, **FAST)
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    model.learn(128)
    _assert_trained(model, before)
    if loss is not None:
        assert np.isfinite(model.logger.name_to_value["train/kl"])
        assert "train/kl_coef" in model.logger.name_to_value


@pytest.mark.parametrize("use_sde", [False, True])
def test_gsde_with_exact_kl(use_sde):
    model = PPOVariant("MlpPolicy", "Pendulum-v1", use_sde=use_sde, loss=KL_LOSS, **FAST)
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    _assert_trained(model.learn(128), before)


def test_cnn_policy_trains():
    model = PPOVariant("CnnPolicy", ImageEnv(), loss=KL_LOSS, **FAST)
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    _assert_trained(model.learn(128), before)


def test_multi_input_policy_trains():
    model = PPOVariant("MultiInputPolicy", DictEnv(), loss=KL_LOSS, **FAST)
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    _assert_trained(model.learn(128), before)


def test_vec_normalize_callbacks_progress_bar_tensorboard_and_evaluation(tmp_path):
    env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0))
    eval_env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=1), training=False)
    evaluation = EvalCallback(eval_env, eval_freq=64, n_eval_episodes=1, verbose=0)
    model = PPOVariant("MlpPolicy", env, tensorboard_log=str(tmp_path), loss=KL_LOSS, **FAST)
    model.learn(256, callback=evaluation, progress_bar=True)
    assert np.isfinite(evaluation.last_mean_reward)
    assert list(tmp_path.glob("PPOVariant_1/events.out.tfevents.*"))
    mean_reward, _ = evaluate_policy(model, eval_env, n_eval_episodes=2)
    assert np.isfinite(mean_reward)


class EntropySchedule(BaseCallback):
    """What SB3 users do to schedule the entropy bonus (SB3 issue #316)."""

    def _on_rollout_end(self) -> None:
        self.model.ent_coef = 0.5
        self.model.clip_range = lambda _: 0.05

    def _on_step(self) -> bool:
        return True


def test_callback_that_sets_ent_coef_and_clip_range_changes_the_loss():
    model = PPOVariant("MlpPolicy", "CartPole-v1", **FAST)
    model.learn(64, callback=EntropySchedule())
    entropy, surrogate = model.loss[1], model.loss[0]
    assert entropy.coef == 0.5
    assert model.logger.name_to_value["train/clip_range"] == 0.05
    assert surrogate.clip_range(1.0) == 0.05


def test_sb3_attributes_mirror_an_explicit_loss():
    model = PPOVariant(
        "MlpPolicy",
        "CartPole-v1",
        loss=[ClippedSurrogate(clip_range=0.1), ValueLoss(coef=0.7, clip_range=0.3), EntropyBonus(coef=0.02)],
        **FAST,
    )
    assert model.clip_range(1.0) == 0.1 and model.clip_range_vf(1.0) == 0.3
    assert (model.vf_coef, model.ent_coef, model.target_kl) == (0.7, 0.02, None)


def test_predict_matches_sb3_api():
    model = PPOVariant("MlpPolicy", DummyVecEnv([lambda: __import__("gymnasium").make("CartPole-v1")]), **FAST)
    obs = model.get_env().reset()
    action, state = model.predict(obs, deterministic=True)
    assert action.shape == (1,) and state is None
