"""The rollout: our collect_rollouts fills the buffer with what SB3's fills, and stops on NaN."""

import numpy as np
import pytest
from sb3_contrib import MaskablePPO
from sb3_contrib.common.envs import InvalidActionEnvDiscrete
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnvWrapper

from sb3_ppo_variants import MaskablePPOVariant, PPOVariant, RolloutDivergedError
from sb3_ppo_variants.rollout.inference import supports_rollout_forward

BUFFER_FIELDS = ("observations", "actions", "rewards", "episode_starts", "values", "log_probs", "advantages", "returns")


class LocalsSeen(BaseCallback):
    """Records the names of the rollout's locals that a callback can read at each step."""

    def __init__(self) -> None:
        super().__init__()
        self.names: set[str] = set()

    def _on_step(self) -> bool:
        self.names |= set(self.locals)
        return True


def one_rollout(cls, make_env, **kwargs):
    env = make_vec_env(make_env, n_envs=3, seed=1)
    model = cls("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0, **kwargs)
    callback = LocalsSeen()
    model.learn(32 * 3, callback=callback)  # one rollout, then one train(): the buffer keeps the rollout
    return model, callback.names


CASES = {
    "discrete": (PPO, PPOVariant, "CartPole-v1"),  # CartPole's time limit: the timeout bootstrap
    "continuous": (PPO, PPOVariant, "Pendulum-v1"),  # unbounded Gaussian actions, clipped
    "masked": (MaskablePPO, MaskablePPOVariant, lambda: InvalidActionEnvDiscrete(dim=10, n_invalid_actions=3)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_rollout_buffer_holds_exactly_what_sb3s_rollout_puts_there(case):
    sb3, ours, make_env = CASES[case]
    (reference, reference_locals), (model, model_locals) = one_rollout(sb3, make_env), one_rollout(ours, make_env)
    assert supports_rollout_forward(model.policy)  # the rollout compared is ours, not SB3's
    for field in BUFFER_FIELDS:
        np.testing.assert_array_equal(getattr(model.rollout_buffer, field), getattr(reference.rollout_buffer, field))
    if case == "masked":
        np.testing.assert_array_equal(model.rollout_buffer.action_masks, reference.rollout_buffer.action_masks)
    assert model_locals >= reference_locals  # a callback finds every local that SB3's rollout gives it


def test_gsde_keeps_sb3s_own_rollout():
    model = PPOVariant("MlpPolicy", "Pendulum-v1", use_sde=True, n_steps=16, batch_size=16)
    assert not supports_rollout_forward(model.policy)
    model.learn(16)


class NaNObservationAt(VecEnvWrapper):
    """Replaces the observations of environment 1 with NaN from the given step on."""

    def __init__(self, venv, step: int) -> None:
        super().__init__(venv)
        self.step_index, self.nan_from = 0, step

    def reset(self):
        return self.venv.reset()

    def step_wait(self):
        obs, rewards, dones, infos = self.venv.step_wait()
        self.step_index += 1
        if self.step_index >= self.nan_from:
            obs = obs.copy()
            obs[1] = np.nan
        return obs, rewards, dones, infos


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_a_nan_observation_stops_the_rollout_naming_the_step_and_the_environment(env_id):
    env = NaNObservationAt(make_vec_env(env_id, n_envs=2, seed=0), step=5)
    model = PPOVariant("MlpPolicy", env, n_steps=16, batch_size=16, seed=0)
    with pytest.raises(RolloutDivergedError, match=r"rollout step 5 \(timestep 10\).*environment\(s\) \[1\]"):
        model.learn(32)
    with pytest.raises(ValueError):  # what SB3's rollout raises there, from torch's argument checks
        PPO("MlpPolicy", NaNObservationAt(make_vec_env(env_id, n_envs=2, seed=0), step=5), n_steps=16).learn(32)
