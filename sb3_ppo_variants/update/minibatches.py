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
    ``RolloutBuffer`` and ``DictRolloutBuffer`` this views the flattened arrays as tensors once
    per epoch and puts them in the epoch's order at once, so that each minibatch is a slice of
    them (above :data:`EPOCH_GATHER_BYTES` of observations, each minibatch is gathered by its
    own indices instead, so that peak memory stays SB3's). The permutation is drawn exactly as
    ``get()`` draws it. Other buffers (masks, sequences) use their ``get()``.
    ``batch_size=None`` is one minibatch of the whole buffer (sb3-contrib's convention).
    """
    if type(buffer) not in (RolloutBuffer, DictRolloutBuffer):
        yield from buffer.get(batch_size)
        return
    size = buffer.buffer_size * buffer.n_envs
    indices = th.from_numpy(np.random.permutation(size)).to(device)
    flatten_rollout(buffer)
    observations = buffer.observations
    if isinstance(observations, dict):
        observations = {key: th.as_tensor(value, device=device) for key, value in observations.items()}
        observation_bytes = sum(value.nbytes for value in buffer.observations.values())
    else:
        observations = th.as_tensor(observations, device=device)
        observation_bytes = buffer.observations.nbytes
    actions = th.as_tensor(buffer.actions.astype(np.float32, copy=False), device=device)
    flat = [th.as_tensor(a, device=device).flatten() for a in (buffer.values, buffer.log_probs)]
    flat += [th.as_tensor(a, device=device).flatten() for a in (buffer.advantages, buffer.returns)]
    whole_epoch = observation_bytes <= EPOCH_GATHER_BYTES
    if whole_epoch:
        observations = _take(observations, indices)
    actions, *flat = (tensor[indices] for tensor in (actions, *flat))  # small beside the observations
    samples = DictRolloutBufferSamples if isinstance(buffer, DictRolloutBuffer) else RolloutBufferSamples
    batch_size = batch_size or size
    for start in range(0, size, batch_size):
        rows = slice(start, start + batch_size)
        batch_observations = _take(observations, rows if whole_epoch else indices[rows])
        yield samples(batch_observations, actions[rows], *(tensor[rows] for tensor in flat))  # type: ignore[arg-type]


EPOCH_GATHER_BYTES = 16 * 2**20
"""Observations up to this size are put in an epoch's order at once (a copy of them for the
epoch); larger ones (images) are gathered minibatch by minibatch, as SB3 copies them."""


def _take(observations: Any, rows: th.Tensor | slice) -> Any:
    if isinstance(observations, dict):
        return {key: value[rows] for key, value in observations.items()}
    return observations[rows]
