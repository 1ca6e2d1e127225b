"""Minibatches of the rollout buffer, gathered as ``rollout_buffer.get(batch_size)`` gives them."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.type_aliases import DictRolloutBufferSamples, RolloutBufferSamples

_FLAT_ARRAYS = ("actions", "values", "log_probs", "advantages", "returns")


def flatten_rollout(buffer: RolloutBuffer) -> None:
    """What ``get()`` does on its first call after a rollout: every array env-major and flat."""
    if buffer.generator_ready:
        return
    if isinstance(buffer, DictRolloutBuffer):
        for key, observation in buffer.observations.items():
            buffer.observations[key] = buffer.swap_and_flatten(observation)
    else:
        buffer.observations = buffer.swap_and_flatten(buffer.observations)
    for name in _FLAT_ARRAYS:
        buffer.__dict__[name] = buffer.swap_and_flatten(buffer.__dict__[name])
    buffer.generator_ready = True


def minibatches(buffer: RolloutBuffer, batch_size: int | None, device: th.device) -> Iterator[Any]:
    """``buffer.get(batch_size)``, bit for bit, with less work per minibatch.

    SB3 copies six numpy slices into new tensors for every minibatch; for SB3's own
    ``RolloutBuffer`` and ``DictRolloutBuffer`` this views the flattened arrays as tensors
    once per epoch and gathers each minibatch with one index tensor. The permutation is
    drawn exactly as ``get()`` draws it. Other buffers (masks, sequences) use their ``get()``.
    ``batch_size=None`` is one minibatch of the whole buffer (sb3-contrib's convention).
    """
    if type(buffer) not in (RolloutBuffer, DictRolloutBuffer):
        yield from buffer.get(batch_size)
        return
    size = buffer.buffer_size * buffer.n_envs
    indices = th.from_numpy(np.random.permutation(size))
    flatten_rollout(buffer)
    observations = buffer.observations
    if isinstance(observations, dict):
        observations = {key: th.as_tensor(value, device=device) for key, value in observations.items()}
    else:
        observations = th.as_tensor(observations, device=device)
    actions = th.as_tensor(buffer.actions.astype(np.float32, copy=False), device=device)
    flat = [th.as_tensor(a, device=device).flatten() for a in (buffer.values, buffer.log_probs)]
    flat += [th.as_tensor(a, device=device).flatten() for a in (buffer.advantages, buffer.returns)]
    samples = DictRolloutBufferSamples if isinstance(buffer, DictRolloutBuffer) else RolloutBufferSamples
    batch_size = batch_size or size
    for start in range(0, size, batch_size):
        index = indices[start : start + batch_size].to(device)
        if isinstance(observations, dict):
            batch_observations: Any = {key: value[index] for key, value in observations.items()}
        else:
            batch_observations = observations[index]
        yield samples(batch_observations, actions[index], *(tensor[index] for tensor in flat))  # type: ignore[arg-type]
