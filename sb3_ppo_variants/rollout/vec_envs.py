"""Stepping the user's VecEnv: SB3's ``DummyVecEnv``, alone or under ``VecNormalize``, in fewer
operations and with the same numbers.

A rollout step through SB3's wrappers pays for generality that these stacks do not use:
``np.mean`` and ``np.var`` handle every dtype, axis and mask before their few ufunc calls,
``deepcopy`` walks each info dict and the observation buffer's dict, and ``normalize_obs``
deep-copies an observation that it then replaces. For
``DummyVecEnv`` and ``VecNormalize(DummyVecEnv)`` with one observation array (not ``Dict`` or
``Tuple`` observations), :func:`vec_env_route` steps with the same numpy ufuncs in the same order,
and leaves every wrapper's state as its own ``step`` leaves it: the observation buffer,
``actions``, ``reset_infos``, the Monitor below, VecNormalize's running statistics, discounted
returns, ``old_obs`` and ``old_reward``. Observations, rewards, dones and infos are equal to theirs,
step by step (``tests/rollout/test_vec_envs.py``), and so are whole ``learn()`` calls.

Any other VecEnv (a subclass of these, ``SubprocVecEnv``, any other wrapper) is stepped through its
own ``step``: :attr:`VecEnvRoute.fast` says which route a model takes, and a model with
``verbose >= 1`` says so once.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecNormalize
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

# Values a deep copy of an info dict may share instead of copying: Python's and numpy's immutable
# scalars (``deepcopy`` returns such a value itself or an equal one).
_IMMUTABLE = frozenset({bool, int, float, complex, str, bytes, type(None)})


@dataclasses.dataclass(frozen=True)
class VecEnvRoute:
    """How a rollout steps ``env``: ``step(actions)`` returns what ``env.step(actions)`` returns."""

    step: Callable[[np.ndarray], VecEnvStepReturn]
    fast: bool
    """Whether ``step`` is this module's route (``False``: the VecEnv's own ``step``)."""
    stack: str
    """The VecEnv's wrappers, outermost first, e.g. ``"VecNormalize(DummyVecEnv)"``."""


def vec_env_route(env: VecEnv) -> VecEnvRoute:
    """The fastest exact way to step ``env``."""
    stack = _stack_name(env)
    if _plain_dummy(env):
        return VecEnvRoute(functools.partial(_dummy_step, env), True, stack)
    if (
        type(env) is VecNormalize
        and _plain_dummy(env.venv)
        and (not env.norm_obs or type(env.obs_rms) is RunningMeanStd)  # without norm_obs, it has none
        and type(env.ret_rms) is RunningMeanStd
    ):
        return VecEnvRoute(functools.partial(_normalized_step, env), True, stack)
    return VecEnvRoute(env.step, False, stack)


def _plain_dummy(env: VecEnv) -> bool:
    return type(env) is DummyVecEnv and env.keys == [None] and env.buf_obs[None].dtype != object


def _stack_name(env: Any) -> str:
    inner = getattr(env, "venv", None)
    return type(env).__name__ if inner is None else f"{type(env).__name__}({_stack_name(inner)})"


def _dummy_step(venv: DummyVecEnv, actions: np.ndarray) -> VecEnvStepReturn:
    """``DummyVecEnv.step``: the same calls to each environment, the same buffers and copies."""
    venv.actions = actions  # step_async
    observations, rewards, dones, infos = venv.buf_obs[None], venv.buf_rews, venv.buf_dones, venv.buf_infos
    for index, env in enumerate(venv.envs):
        obs, rewards[index], terminated, truncated, infos[index] = env.step(actions[index])
        dones[index] = terminated or truncated
        infos[index]["TimeLimit.truncated"] = truncated and not terminated
        if dones[index]:
            infos[index]["terminal_observation"] = obs
            obs, venv.reset_infos[index] = env.reset()
        observations[index] = obs
    return observations.copy(), rewards.copy(), dones.copy(), copy_infos(infos)


def copy_infos(infos: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``deepcopy(infos)`` without walking the immutable scalars that most info dicts hold only."""
    memo: dict[int, Any] = {}  # one memo for the list, as deepcopy's: shared objects stay shared
    copies = []
    for info in infos:
        if type(info) is not dict:
            copies.append(copy.deepcopy(info, memo))
            continue
        copies.append(
            {
                key: value
                if type(value) in _IMMUTABLE or isinstance(value, (np.number, np.bool_))
                else copy.deepcopy(value, memo)
                for key, value in info.items()
            }
        )
    return copies


def _normalized_step(vec_normalize: VecNormalize, actions: np.ndarray) -> VecEnvStepReturn:
    """``VecNormalize.step`` over a ``DummyVecEnv``: its statistics, in its order."""
    obs, rewards, dones, infos = _dummy_step(vec_normalize.venv, actions)  # type: ignore[arg-type]
    vec_normalize.old_obs = obs
    vec_normalize.old_reward = rewards
    if vec_normalize.training and vec_normalize.norm_obs:
        _update(vec_normalize.obs_rms, obs)  # type: ignore[arg-type]
    normalized = _normalize_obs(vec_normalize, obs)
    if vec_normalize.training:
        vec_normalize.returns = vec_normalize.returns * vec_normalize.gamma + rewards
        _update(vec_normalize.ret_rms, vec_normalize.returns)
    if vec_normalize.norm_reward:
        scale = np.sqrt(vec_normalize.ret_rms.var + vec_normalize.epsilon)
        rewards = np.clip(rewards / scale, -vec_normalize.clip_reward, vec_normalize.clip_reward)
    rewards = rewards.astype(np.float32)
    for index, done in enumerate(dones):
        if done and "terminal_observation" in infos[index]:
            infos[index]["terminal_observation"] = _normalize_obs(vec_normalize, infos[index]["terminal_observation"])
    vec_normalize.returns[dones] = 0
    return normalized, rewards, dones, infos


def _normalize_obs(vec_normalize: VecNormalize, obs: np.ndarray) -> np.ndarray:
    """``VecNormalize.normalize_obs``, without the deep copy that it replaces when it normalises."""
    if not vec_normalize.norm_obs:
        return copy.deepcopy(obs)
    statistics = vec_normalize.obs_rms
    clip = vec_normalize.clip_obs
    scaled = (obs - statistics.mean) / np.sqrt(statistics.var + vec_normalize.epsilon)  # type: ignore[union-attr]
    return np.clip(scaled, -clip, clip).astype(np.float32)


def _update(statistics: RunningMeanStd, batch: np.ndarray) -> None:
    """``RunningMeanStd.update``: numpy's ``mean`` and ``var`` along axis 0 as numpy computes them
    for float arrays (``numpy/_core/_methods.py``: a sum, a division by the count as an ``intp``,
    then the squared deviations' sum divided the same way), and SB3's own update from them."""
    if batch.dtype not in (np.float32, np.float64):  # numpy's mean and var cast these first
        statistics.update(batch)
        return
    count = np.intp(batch.shape[0])
    mean = np.add.reduce(batch, 0, keepdims=True)
    np.true_divide(mean, count, out=mean, casting="unsafe", subok=False)
    deviations = np.subtract(batch, mean)
    np.square(deviations, out=deviations)
    variance = np.add.reduce(deviations, 0)
    if isinstance(variance, np.ndarray):
        np.true_divide(variance, count, out=variance, casting="unsafe", subok=False)
    else:  # a 1-d batch: numpy returns scalars
        variance = variance.dtype.type(variance / count)
    statistics.update_from_moments(mean[0], variance, batch.shape[0])
