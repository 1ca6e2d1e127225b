"""Shared helpers: small environments and a hand-built minibatch."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from hypothesis import settings

from sb3_ppo_variants.components import Minibatch, TrainingContext

# Property tests (tests/properties/test_properties.py): fewer examples in CI, where the suite's time is budgeted.
settings.register_profile("ci", max_examples=15, deadline=None)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

# Small, fast settings: a few iterations of a tiny buffer.
FAST = dict(n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu")


def training_context(**fields: Any) -> TrainingContext:
    """A ``TrainingContext`` for calling a hook by hand: the given fields, the others empty
    (a stand-in policy copy, one epoch of one update)."""
    defaults: dict[str, Any] = dict(
        policy=None,
        optimizer=None,
        rollout_buffer=None,
        progress_remaining=1.0,
        step=None,
        policy_copy=lambda: th.nn.Linear(1, 1),
        value_transform=None,
        updates_per_epoch=1,
        n_epochs=1,
        minibatch_size=1,
        evaluate_rollout=None,
    )
    return TrainingContext(**{**defaults, **fields})


def grad_of(term: Any, tensor: th.Tensor) -> list[float]:
    """The gradient of a loss term's loss with respect to ``tensor``, as a list."""
    (grad,) = th.autograd.grad(term.loss, tensor)
    return grad.tolist()


def masked_env() -> gym.Env:
    """A Discrete environment with invalid actions, for the masked algorithm."""
    from sb3_contrib.common.envs import InvalidActionEnvDiscrete

    return InvalidActionEnvDiscrete(dim=10, n_invalid_actions=3)


def make_batch(**tensors: Any) -> Minibatch:
    """A minibatch from hand-chosen tensors; ``log_ratio`` becomes a leaf that needs grad."""
    n = len(next(iter(v for v in tensors.values() if isinstance(v, list | th.Tensor))))
    zeros = th.zeros(n)
    log_ratio = tensors.pop("log_ratio", None)
    if log_ratio is None:
        log_ratio = th.log(th.as_tensor(tensors.pop("ratio", [1.0] * n), dtype=th.float32))
    log_ratio = th.as_tensor(log_ratio, dtype=th.float32).clone().requires_grad_(True)
    fields: dict[str, Any] = dict(
        observations=zeros,
        actions=zeros,
        old_values=zeros,
        old_log_prob=zeros,
        advantages=zeros,
        returns=zeros,
        values=zeros,
        log_prob=zeros,
        entropy=None,
        distribution=None,
        old_distribution=None,
        mask=None,
        progress_remaining=1.0,
        policy=th.nn.Identity(),
    )
    for key, value in tensors.items():
        fields[key] = th.as_tensor(value, dtype=th.float32) if isinstance(value, list) else value
    return Minibatch(log_ratio=log_ratio, ratio=th.exp(log_ratio), **fields)


class ImageEnv(gym.Env):
    """A tiny image-observation task for CnnPolicy: reward for matching the brighter half."""

    observation_space = gym.spaces.Box(0, 255, (36, 36, 1), dtype=np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        return self._observe(), {}

    def _observe(self) -> np.ndarray:
        self._side = int(self.np_random.integers(2))
        obs = np.zeros((36, 36, 1), dtype=np.uint8)
        obs[:, self._side * 18 : (self._side + 1) * 18] = 255
        return obs

    def step(self, action):
        reward = float(action == self._side)
        self._t += 1
        return self._observe(), reward, False, self._t >= 20, {}


class DictEnv(gym.Env):
    """A Dict-observation task for MultiInputPolicy: steer a point to a goal."""

    observation_space = gym.spaces.Dict(
        {"position": gym.spaces.Box(-1, 1, (2,), np.float32), "goal": gym.spaces.Box(-1, 1, (2,), np.float32)}
    )
    action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        self._pos = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        self._goal = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        return self._obs(), {}

    def _obs(self) -> dict:
        return {"position": self._pos.copy(), "goal": self._goal.copy()}

    def step(self, action):
        self._pos = np.clip(self._pos + 0.1 * np.asarray(action, np.float32), -1, 1)
        self._t += 1
        return self._obs(), -float(np.linalg.norm(self._pos - self._goal)), False, self._t >= 20, {}


class SpaceEnv(gym.Env):
    """A one-step-reward task with any action space, to train every distribution type."""

    observation_space = gym.spaces.Box(-1, 1, (3,), np.float32)

    def __init__(self, action_space: gym.Space):
        self.action_space = action_space

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self._t += 1
        reward = float(np.sum(np.asarray(action, dtype=np.float32)))
        return self.observation_space.sample(), reward, False, self._t >= 16, {}


ACTION_SPACES = {
    "Discrete": gym.spaces.Discrete(3),
    "Box": gym.spaces.Box(-1, 1, (2,), np.float32),
    "MultiDiscrete": gym.spaces.MultiDiscrete([2, 3]),
    "MultiBinary": gym.spaces.MultiBinary(3),
}


@pytest.fixture(params=list(ACTION_SPACES))
def space_env(request: pytest.FixtureRequest) -> SpaceEnv:
    return SpaceEnv(ACTION_SPACES[request.param])


def parameters_equal(a: th.nn.Module, b: th.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(th.equal(sa[k], sb[k]) for k in sa)


class CueRecallEnv(gym.Env):
    """A partially observed task that needs memory: a cue (+1 or -1) is shown on the first step
    only; after ``delay`` blank steps, the action that matches the cue earns +1."""

    observation_space = gym.spaces.Box(-1, 1, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, delay: int = 3):
        self.delay = delay

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        self._cue = int(self.np_random.integers(2))
        return np.array([2 * self._cue - 1, 0], np.float32), {}

    def step(self, action):
        self._t += 1
        if self._t <= self.delay:
            return np.zeros(2, np.float32), 0.0, False, False, {}
        reward = 1.0 if int(action) == self._cue else -1.0
        return np.array([0, 1], np.float32), reward, True, False, {}


def _rng_state() -> tuple[Any, Any, Any]:
    """The global random streams (torch, numpy, random), for :func:`_set_rng_state`."""
    import random

    return th.get_rng_state(), np.random.get_state(), random.getstate()


def _set_rng_state(state: tuple[Any, Any, Any]) -> None:
    import random

    th.set_rng_state(state[0])
    np.random.set_state(state[1])
    random.setstate(state[2])


def save_continue_and_resume(model: Any, path: Any, timesteps: int) -> tuple[Any, Any]:
    """Save ``model``, then train it ``timesteps`` further; load the save and train that as far,
    from the same environment state and random streams. Returns ``(straight, resumed)``: equal
    weights and state mean training resumes exactly."""
    import copy

    model.save(path)
    env_at_save, rng_at_save = copy.deepcopy(model.get_env()), _rng_state()
    model.learn(timesteps, reset_num_timesteps=False)
    resumed = type(model).load(path, env=env_at_save, device="cpu", force_reset=False)
    # Loading re-seeds the global RNGs (SB3's _setup_model); put them back where they were.
    _set_rng_state(rng_at_save)
    resumed.learn(timesteps, reset_num_timesteps=False)
    return model, resumed


def rewritten_model(path: Path | io.BytesIO, drop: tuple[str, ...] = (), **changes) -> io.BytesIO:
    """A copy of a saved model whose ``data`` has ``changes`` and lacks ``drop``."""
    copy = io.BytesIO()
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(copy, "w") as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "data":
                data = {key: value for key, value in json.loads(content).items() if key not in drop}
                data.update(changes)
                content = json.dumps(data).encode()
            target.writestr(item, content)
    copy.seek(0)
    return copy


# --- a real PostgreSQL server, started on 127.0.0.1 by the tests that need one ------------------


def _postgres_binaries() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return versions[-1].parent if versions else None


@dataclass
class PostgresServer:
    """A throwaway server on 127.0.0.1 that a test may restart."""

    url: str
    pg_ctl: list[Any]

    def restart(self, pause: float = 2.0) -> None:
        """Stop the server (its clients' connections die), wait ``pause`` seconds, start it again."""
        subprocess.run([*self.pg_ctl, "-m", "fast", "stop"], check=True, capture_output=True)
        time.sleep(pause)
        subprocess.run([*self.pg_ctl, "-w", "start"], check=True, capture_output=True)


@pytest.fixture(scope="module")
def postgresql_server():
    """A throwaway server; as root it runs as the ``postgres`` user (the server refuses root)."""
    binaries = _postgres_binaries()
    if binaries is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed: .ci/run installs it from Debian's packages")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    folder = Path(tempfile.mkdtemp(prefix="tuning-pg-"))
    if as_postgres:
        shutil.chown(folder, "postgres")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data, log = folder / "data", folder / "log"
    subprocess.run([*as_postgres, binaries / "initdb", "-D", data, "-U", "postgres", "-A", "trust", "--no-sync"],
                   check=True, capture_output=True)  # fmt: skip
    options = f"-p {port} -c listen_addresses=127.0.0.1 -k {folder} -F"
    pg_ctl = [*as_postgres, binaries / "pg_ctl", "-D", data, "-o", options, "-l", log]
    subprocess.run([*pg_ctl, "-w", "start"], check=True, capture_output=True)
    try:
        yield PostgresServer(f"postgresql://postgres@127.0.0.1:{port}/postgres", pg_ctl)
    finally:
        subprocess.run([*pg_ctl, "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="module")
def postgresql_url(postgresql_server):
    return postgresql_server.url
