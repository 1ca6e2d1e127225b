"""The rollout: our collect_rollouts fills the buffer with what SB3's fills, and stops on NaN."""

import numpy as np
import pytest
import torch as th
from sb3_contrib import MaskablePPO
from sb3_contrib.common.envs import InvalidActionEnvDiscrete
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecEnvWrapper

from sb3_ppo_variants import MaskablePPOVariant, PPOVariant, RolloutDivergedError
from sb3_ppo_variants.common.networks import policy_heads
from sb3_ppo_variants.rollout.inference import rollout_forward, supports_rollout_forward

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


NETWORKS = {
    "tanh-shared": ("Pendulum-v1", {}),
    "relu-separate-extractors": ("CartPole-v1", {"activation_fn": th.nn.ReLU, "share_features_extractor": False}),
    "elu-called-as-a-module": ("Pendulum-v1", {"activation_fn": th.nn.ELU, "net_arch": {"pi": [8], "vf": [16, 4]}}),
}


@pytest.mark.parametrize("case", list(NETWORKS))
def test_the_rollouts_networks_compute_what_the_policys_modules_compute(case):
    env_id, policy_kwargs = NETWORKS[case]
    policy = PPO("MlpPolicy", env_id, policy_kwargs=policy_kwargs, seed=0).policy
    obs = th.as_tensor(np.random.default_rng(0).normal(size=(5, *policy.observation_space.shape)))
    with th.no_grad():
        distribution_parameters, values = policy_heads(policy)(obs)
        features = policy.extract_features(obs)
        pi_features, vf_features = (features, features) if policy.share_features_extractor else features
        assert th.equal(distribution_parameters, policy.action_net(policy.mlp_extractor.forward_actor(pi_features)))
        assert th.equal(values, policy.value_net(policy.mlp_extractor.forward_critic(vf_features)))


def test_a_hook_on_the_policys_networks_runs_in_the_rollout():
    model = PPOVariant("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16, n_epochs=1, seed=0)
    calls = []
    model.policy.action_net.register_forward_hook(lambda module, inputs, output: calls.append(output.shape))
    model.learn(16)
    assert len(calls) >= 16  # every rollout step (and train()'s evaluations) went through the module


def test_the_gaussian_rollout_follows_log_std_when_it_changes():
    model = PPOVariant("MlpPolicy", "Pendulum-v1", seed=0)
    forward = rollout_forward(model.policy)
    obs = th.zeros(4, 3)
    with th.no_grad():
        th.manual_seed(0)
        before = forward(obs, None)
        model.policy.log_std.add_(1.5)  # what an optimizer step does to it, in place
        th.manual_seed(0)
        after = forward(obs, None)
        th.manual_seed(0)
        reference = model.policy(obs)
    for ours, theirs in zip(after, reference, strict=True):
        assert th.equal(ours, theirs)
    assert not th.equal(before[2], after[2])
