"""Advantages: normalisation (per minibatch or over the batch) and recomputation before an epoch.

The algorithm's own ``before_epoch`` hooks (:class:`~sb3_ppo_variants.components.hooks.TrainingHook`)
are here: :class:`RecomputeAdvantages` (GAE again with the current values) runs before the
components' hooks, :class:`NormalizeBatchAdvantages` after them, so it normalises whatever
recomputed the advantages (V-trace is a component that does, in its own ``before_epoch``).
:func:`evaluate_rollout` is the rollout under the current policy, which both read.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.utils import obs_as_tensor

from sb3_ppo_variants.components.hooks import RolloutEvaluation, TrainingContext, TrainingHook


def normalize_minibatch_advantages(advantages: th.Tensor, mask: th.Tensor | None) -> th.Tensor:
    """SB3's per-minibatch normalisation, over the real samples of a padded batch."""
    # A single sample has no spread to normalise by (SB3 issue #325).
    if len(advantages) < 2:
        return advantages
    real = advantages if mask is None else advantages[mask]
    return (advantages - real.mean()) / (real.std() + 1e-8)


def normalize_batch_advantages(advantages: np.ndarray) -> None:
    """Over the whole rollout, once (RLlib, Spinning Up), rather than per minibatch (SB3); in place."""
    advantages -= advantages.mean()
    advantages /= advantages.std(ddof=1) + 1e-8


@dataclass
class RecomputeAdvantages(TrainingHook):
    """GAE(lambda) again with the current value function, before each epoch after the first
    (``recompute_advantages=True``).

    Andrychowicz et al. 2021 (arXiv:2006.05990) recommend it; SB3 issue #445. The targets move
    with the value function; ``old_values`` (for value clipping) and the rewards, already
    bootstrapped at time limits, stay those of the rollout.
    """

    enabled: bool

    def before_epoch(self, context: TrainingContext, epoch: int) -> None:
        if not self.enabled or epoch == 0:  # epoch 0 has the rollout's own
            return
        buffer = context.rollout_buffer
        evaluation = context.evaluate_rollout(log_ratio=False)
        rollout_values = buffer.values
        buffer.values = evaluation.values  # GAE reads (n_steps, n_envs) values
        buffer.advantages = np.zeros_like(evaluation.values)
        last_values = th.as_tensor(evaluation.last_values)
        buffer.compute_returns_and_advantage(last_values=last_values, dones=evaluation.last_episode_starts)
        buffer.advantages = buffer.swap_and_flatten(buffer.advantages)
        buffer.returns = buffer.swap_and_flatten(buffer.returns)
        buffer.values = rollout_values


@dataclass
class NormalizeBatchAdvantages(TrainingHook):
    """``normalize_advantage="batch"``: normalise the advantages over the rollout, before the first
    epoch and, where something recomputes them (``every_epoch``), before each later one."""

    enabled: bool
    every_epoch: bool

    def before_epoch(self, context: TrainingContext, epoch: int) -> None:
        if self.enabled and (epoch == 0 or self.every_epoch):
            normalize_batch_advantages(context.rollout_buffer.advantages)


def evaluate_rollout(
    buffer: Any,
    chunk_size: int,
    values_and_log_ratio: Callable[[Any], tuple[th.Tensor, th.Tensor]],
    policy: Any,
    last_obs: Any,
    last_episode_starts: np.ndarray,
    in_return_units: Callable[[], AbstractContextManager[None]],
    log_ratio: bool = True,
) -> RolloutEvaluation:
    """The rollout under ``policy`` as it is now, in chunks of ``chunk_size`` samples: the values
    (``policy.predict_values``, or with the log-ratios ``values_and_log_ratio(rollout_data)``), in
    return units, as ``(n_steps, n_envs)`` arrays."""
    n_steps, n_envs = buffer.buffer_size, buffer.n_envs
    device = policy.device
    with th.no_grad(), in_return_units():
        values, log_ratios = [], []
        for start in range(0, n_steps * n_envs, chunk_size):
            stop = min(start + chunk_size, n_steps * n_envs)
            if log_ratio:
                chunk_values, chunk_log_ratio = values_and_log_ratio(buffer._get_samples(np.arange(start, stop)))
                log_ratios.append(chunk_log_ratio)
            else:
                observations = buffer.observations
                if isinstance(observations, dict):
                    chunk = {key: value[start:stop] for key, value in observations.items()}
                else:
                    chunk = observations[start:stop]
                chunk_values = policy.predict_values(obs_as_tensor(chunk, device))
            values.append(chunk_values.flatten())
        last_values = policy.predict_values(obs_as_tensor(last_obs, device))

    def time_major(chunks: list[th.Tensor]) -> np.ndarray:
        # The buffer's arrays are env-major and flat; GAE runs on (n_steps, n_envs) arrays.
        return th.cat(chunks).cpu().numpy().reshape(n_envs, n_steps).T

    return RolloutEvaluation(
        values=time_major(values),
        log_ratio=time_major(log_ratios) if log_ratio else None,
        last_values=last_values.cpu().numpy().flatten(),
        last_episode_starts=last_episode_starts,
    )
