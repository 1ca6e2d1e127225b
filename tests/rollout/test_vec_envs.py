"""The rollout's route through DummyVecEnv and VecNormalize gives what their own step gives, and
leaves them in the state their own step leaves them; other VecEnvs keep their own step."""

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecNormalize

from sb3_ppo_variants import PPOVariant
from sb3_ppo_variants.rollout.vec_envs import copy_infos, vec_env_route
from tests.conftest import DictEnv, parameters_equal


class Drift(gym.Env):
    """float64 observations, terminations, a time limit, and infos holding an array and a list."""

    observation_space = gym.spaces.Box(-np.inf, np.inf, (3,), np.float64)
    action_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.state = self.np_random.normal(size=3)
        return self.state.copy(), {"start": self.state.copy()}

    def step(self, action):
        self.state = self.state + action + self.np_random.normal(size=3) * 0.1
        reward = float(self.state.sum()) * 10.0
        info = {"scale": np.float64(2.5), "history": [1, 2], "position": self.state.copy()}
        return self.state.copy(), reward, bool(np.abs(self.state).max() > 4.0), False, info


def drift() -> gym.Env:
    return gym.wrappers.TimeLimit(Drift(), max_episode_steps=25)


STACKS = {
    "dummy-cartpole": ("CartPole-v1", {}),  # float32 observations, Discrete actions
    "dummy-drift": (drift, {}),
    "normalize-pendulum": ("Pendulum-v1", {"normalize": {}}),  # the time limit's terminal observations
    "normalize-drift": (drift, {"normalize": {"gamma": 0.9, "clip_obs": 2.0, "clip_reward": 1.0}}),
    "normalize-one-env": (drift, {"normalize": {}, "n_envs": 1}),
    "normalize-obs-only": (drift, {"normalize": {"norm_reward": False}}),
    "normalize-reward-only": ("CartPole-v1", {"normalize": {"norm_obs": False}}),
    "normalize-not-training": (drift, {"normalize": {"training": False}}),
}


def make_stack(make_env, normalize=None, n_envs=3):
    env = make_vec_env(make_env, n_envs=n_envs, seed=7)
    return env if normalize is None else VecNormalize(env, **normalize)


def assert_same_infos(ours, theirs):
    assert len(ours) == len(theirs)
    for mine, reference in zip(ours, theirs, strict=True):
        assert mine.keys() == reference.keys()
        for key, value in reference.items():
            if key == "episode":  # Monitor's episode time "t" is wall-clock time
                assert {k: mine[key][k] for k in "rl"} == {k: value[k] for k in "rl"}
            else:
                np.testing.assert_array_equal(mine[key], value)
                assert type(mine[key]) is type(value)


@pytest.mark.parametrize("name", list(STACKS))
def test_the_fast_route_steps_exactly_as_the_stacks_own_step(name):
    make_env, kwargs = STACKS[name]
    ours, theirs = make_stack(make_env, **kwargs), make_stack(make_env, **kwargs)
    route = vec_env_route(ours)
    assert route.fast
    np.testing.assert_array_equal(ours.reset(), theirs.reset())
    rng = np.random.default_rng(0)
    n_dones = 0
    for _ in range(450):
        actions = np.stack([theirs.action_space.sample() for _ in range(theirs.num_envs)])
        if isinstance(theirs.action_space, gym.spaces.Box):
            actions = rng.uniform(-1, 1, actions.shape).astype(np.float32)
        mine, reference = route.step(actions), theirs.step(actions)
        for got, expected in zip(mine[:3], reference[:3], strict=True):
            assert got.dtype == expected.dtype
            np.testing.assert_array_equal(got, expected)
        assert_same_infos(mine[3], reference[3])
        n_dones += int(reference[2].sum())
    assert n_dones > 3  # episodes ended (terminal observations, resets) along the way

    dummy, reference_dummy = getattr(ours, "venv", ours), getattr(theirs, "venv", theirs)
    np.testing.assert_array_equal(dummy.buf_obs[None], reference_dummy.buf_obs[None])
    np.testing.assert_array_equal(dummy.actions, reference_dummy.actions)
    for monitor, reference_monitor in zip(dummy.envs, reference_dummy.envs, strict=True):
        assert monitor.episode_returns == reference_monitor.episode_returns
        assert monitor.rewards == reference_monitor.rewards
    if isinstance(theirs, VecNormalize):
        for attribute in ("obs_rms", "ret_rms") if theirs.norm_obs else ("ret_rms",):  # no obs_rms without norm_obs
            statistics, reference_statistics = getattr(ours, attribute), getattr(theirs, attribute)
            for field in ("mean", "var", "count"):
                assert type(getattr(statistics, field)) is type(getattr(reference_statistics, field))
                np.testing.assert_array_equal(getattr(statistics, field), getattr(reference_statistics, field))
        for attribute in ("returns", "old_obs", "old_reward"):
            np.testing.assert_array_equal(getattr(ours, attribute), getattr(theirs, attribute))


def test_copied_infos_are_deep_copies():
    position = np.zeros(2)
    infos = [{"position": position, "history": [1], "also_position": position, "x": np.float64(1.0)}]
    copies = copy_infos(infos)
    copies[0]["position"][0] = 5.0
    copies[0]["history"].append(2)
    assert position[0] == 0.0 and infos[0]["history"] == [1]
    assert copies[0]["also_position"] is copies[0]["position"]  # shared objects stay shared, as deepcopy keeps them


@pytest.mark.parametrize(
    "make",
    [
        lambda: VecFrameStack(make_vec_env("CartPole-v1", n_envs=2), 2),  # another wrapper
        lambda: VecNormalize(make_vec_env(DictEnv, n_envs=2)),  # Dict observations
        lambda: type("MyDummyVecEnv", (DummyVecEnv,), {})([lambda: gym.make("CartPole-v1")]),  # a subclass
    ],
    ids=["frame-stack", "dict-observations", "subclass"],
)
def test_other_vec_envs_keep_their_own_step(make):
    env = make()
    route = vec_env_route(env)
    assert not route.fast and route.step == env.step


def test_a_model_says_once_when_its_env_keeps_its_own_step(capsys):
    env = VecFrameStack(make_vec_env("CartPole-v1", n_envs=2), 2)
    model = PPOVariant("MlpPolicy", env, n_steps=16, batch_size=16, n_epochs=1, verbose=1)
    model.learn(64)
    out = capsys.readouterr().out
    assert out.count("VecFrameStack(DummyVecEnv) is stepped through its own step()") == 1
    assert not model.rollout_env_route.fast
    fast = PPOVariant("MlpPolicy", "CartPole-v1", n_steps=16, batch_size=16, n_epochs=1).learn(16)
    assert fast.rollout_env_route.fast and fast.rollout_env_route.stack == "DummyVecEnv"


def test_learning_under_vec_normalize_is_bit_identical_to_sb3():
    def train(cls):
        env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=2, seed=0), gamma=0.98)
        return cls("MlpPolicy", env, n_steps=128, batch_size=64, n_epochs=2, gamma=0.98, seed=0).learn(128 * 2 * 3)

    ours, reference = train(PPOVariant), train(PPO)
    assert ours.rollout_env_route.fast
    assert parameters_equal(ours.policy, reference.policy)
    np.testing.assert_array_equal(ours.rollout_buffer.observations, reference.rollout_buffer.observations)
    np.testing.assert_array_equal(ours.env.obs_rms.var, reference.env.obs_rms.var)
    np.testing.assert_array_equal(ours.env.ret_rms.var, reference.env.ret_rms.var)
