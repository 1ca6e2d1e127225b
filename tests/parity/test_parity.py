"""Without loss=, PPOVariant is SB3's PPO: the same seed and arguments give the same bits."""

import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env

from sb3_ppo_variants import PPOVariant
from sb3_ppo_variants.update.optimizer_step import FlatAdam
from tests.conftest import parameters_equal

CASES = {
    "discrete": ("CartPole-v1", {}),
    "continuous": ("Pendulum-v1", {}),
    "continuous-gsde": ("Pendulum-v1", {"use_sde": True, "sde_sample_freq": 4}),
    "vf-clip-and-target-kl": (
        "CartPole-v1",
        {"clip_range_vf": 0.2, "target_kl": 0.003, "ent_coef": 0.01, "learning_rate": 3e-3},
    ),
    "schedules-and-odd-batches": ("Pendulum-v1", {"clip_range": lambda p: 0.1 + 0.2 * p, "batch_size": 48}),
}


def _train(cls, env_id, kwargs):
    env = make_vec_env(env_id, n_envs=2, seed=0)
    model = cls("MlpPolicy", env, **{"n_steps": 128, "batch_size": 64, "n_epochs": 4, "seed": 0, **kwargs})
    return model.learn(128 * 2 * 3)  # three training iterations


@pytest.mark.filterwarnings("ignore:You have specified a mini-batch size")
@pytest.mark.parametrize("case", list(CASES))
def test_default_loss_is_bit_identical_to_sb3(case):
    env_id, kwargs = CASES[case]
    reference, ours = _train(PPO, env_id, kwargs), _train(PPOVariant, env_id, kwargs)
    # The fast exact step (FlatAdam) is what ran, so these bits are its bits.
    assert FlatAdam.supports(ours.policy.optimizer, list(ours.policy.parameters()))
    assert ours._n_updates == reference._n_updates
    assert parameters_equal(ours.policy, reference.policy)
    if "target_kl" in kwargs:  # the case must actually stop early to test early stopping
        assert reference._n_updates < 3 * 4
    for key in ("train/policy_gradient_loss", "train/value_loss", "train/approx_kl", "train/clip_fraction"):
        assert ours.logger.name_to_value[key] == pytest.approx(reference.logger.name_to_value[key], rel=1e-5)


def test_dict_observations_are_bit_identical_to_sb3():
    """The minibatches are gathered from DictRolloutBuffer's arrays as SB3's get() would."""
    from tests.conftest import DictEnv

    def train(cls):
        env = make_vec_env(DictEnv, n_envs=2, seed=0)
        return cls("MultiInputPolicy", env, n_steps=64, batch_size=32, n_epochs=3, seed=0).learn(64 * 2 * 2)

    assert parameters_equal(train(PPOVariant).policy, train(PPO).policy)


def test_image_observations_too_large_to_copy_per_epoch_are_bit_identical_to_sb3():
    """Above EPOCH_GATHER_BYTES of observations each minibatch is gathered by its own indices."""
    from sb3_ppo_variants.update.minibatches import EPOCH_GATHER_BYTES
    from tests.conftest import ImageEnv

    n_envs, n_steps = 4, 1024
    assert n_envs * n_steps * 36 * 36 * 4 > EPOCH_GATHER_BYTES  # the buffer keeps float32 observations

    def train(cls):
        env = make_vec_env(ImageEnv, n_envs=n_envs, seed=0)
        return cls("CnnPolicy", env, n_steps=n_steps, batch_size=512, n_epochs=2, seed=0).learn(n_envs * n_steps)

    assert parameters_equal(train(PPOVariant).policy, train(PPO).policy)
