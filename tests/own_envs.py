"""An environment of a user's own package, for the tuning tests (``--gym-packages tests.own_envs``).

Importing the module registers ``CountDown-v0``: an episode lasts ``length`` steps (a required
keyword argument, so the environment cannot be made without ``--env-kwargs``) and every step
pays ``reward``, so an episode returns exactly ``length * reward``.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np


class CountDown(gym.Env):
    observation_space = gym.spaces.Box(0.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, length: int, reward: float = 1.0) -> None:
        self.length, self.reward, self.left = length, reward, length

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.left = self.length
        return np.array([1.0], np.float32), {}

    def step(self, action):
        self.left -= 1
        return np.array([self.left / self.length], np.float32), self.reward, self.left == 0, False, {}


gym.register("CountDown-v0", entry_point=CountDown)
