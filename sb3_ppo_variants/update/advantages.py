"""Advantages: normalisation (per minibatch or per batch) and recomputation before each epoch.

:class:`PrepareAdvantages` is the loop's own ``before_epoch`` hook
(:class:`~sb3_ppo_variants.components.hooks.TrainingHook`); a component can recompute or reweight
advantages the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.utils import obs_as_tensor

from sb3_ppo_variants.components.hooks import TrainingContext, TrainingHook
from sb3_ppo_variants.components.vtrace import VTraceAdvantages


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
class PrepareAdvantages(TrainingHook):
    """Before an epoch: recompute the advantages (GAE, or V-trace with a
    :class:`~sb3_ppo_variants.components.VTraceAdvantages` component) and normalise them over the
    batch, if asked."""

    recompute: bool
    normalize_batch: bool
    last_obs: Any
    last_episode_starts: np.ndarray
    chunk_size: int | None
    device: th.device
    values_in_return_units: Callable[[], AbstractContextManager[None]]
    vtrace: VTraceAdvantages | None = None
    score: Callable[[Any], tuple[th.Tensor, th.Tensor]] | None = None
    """For V-trace: ``rollout_data -> (values in return units, log_ratio)`` under the current policy."""

    def before_epoch(self, context: TrainingContext, epoch: int) -> None:
        recompute = (self.recompute or self.vtrace is not None) and epoch > 0  # epoch 0 has the rollout's own
        if recompute:
            self.recompute_advantages(context.policy, context.rollout_buffer)
        if self.normalize_batch and (epoch == 0 or recompute):
            normalize_batch_advantages(context.rollout_buffer.advantages)

    def recompute_advantages(self, policy: Any, buffer: Any) -> None:
        """GAE(lambda) (or V-trace) again with the current value function, before each epoch after
        the first.

        Andrychowicz et al. 2021 (arXiv:2006.05990) recommend it; SB3 issue #445.
        The targets move with the value function; ``old_values`` (for value clipping) and the
        rewards, already bootstrapped at time limits, stay those of the rollout.
        """
        n_steps, n_envs = buffer.buffer_size, buffer.n_envs
        chunk_size = self.chunk_size or n_steps * n_envs  # MaskablePPO's batch_size=None: the whole buffer
        with th.no_grad(), self.values_in_return_units():
            values, log_ratios = [], []
            for start in range(0, n_steps * n_envs, chunk_size):
                stop = min(start + chunk_size, n_steps * n_envs)
                if self.vtrace is not None:
                    assert self.score is not None
                    chunk_values, log_ratio = self.score(buffer._get_samples(np.arange(start, stop)))
                    log_ratios.append(log_ratio)
                else:
                    observations = buffer.observations
                    if isinstance(observations, dict):
                        chunk = {key: value[start:stop] for key, value in observations.items()}
                    else:
                        chunk = observations[start:stop]
                    chunk_values = policy.predict_values(obs_as_tensor(chunk, self.device))
                values.append(chunk_values.flatten())
            last_values = policy.predict_values(obs_as_tensor(self.last_obs, self.device))

        def time_major(chunks: list[th.Tensor]) -> np.ndarray:
            # The buffer's arrays are env-major and flat; GAE runs on (n_steps, n_envs) arrays.
            return th.cat(chunks).cpu().numpy().reshape(n_envs, n_steps).T

        rollout_values = buffer.values
        buffer.values = time_major(values)
        if self.vtrace is None:
            buffer.advantages = np.zeros((n_steps, n_envs), dtype=np.float32)
            buffer.compute_returns_and_advantage(last_values=last_values, dones=self.last_episode_starts)
        else:
            buffer.advantages = self.vtrace.advantages(
                buffer.rewards,
                buffer.values,
                buffer.episode_starts,
                last_values.cpu().numpy().flatten(),
                self.last_episode_starts,
                time_major(log_ratios),
                buffer.gamma,
                buffer.gae_lambda,
            )
            buffer.returns = buffer.advantages + buffer.values
        buffer.advantages = buffer.swap_and_flatten(buffer.advantages)
        buffer.returns = buffer.swap_and_flatten(buffer.returns)
        buffer.values = rollout_values
