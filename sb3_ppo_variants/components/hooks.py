"""Extension points of the training loop, for variants that change more than one minibatch's loss.

Every loss component is a :class:`TrainingHook`; so are the loop's own options (advantage
recomputation is a ``before_epoch`` hook; V-trace is a component that recomputes them in its own).
Hooks run on the call's components, whose hyperparameters hold their values this call (see
:mod:`~sb3_ppo_variants.update.hyperparameters`); what a hook changes is kept. Each method does
nothing unless overridden, so a component overrides only the ones it needs and declares nothing else.
The loop calls them in this order in every ``train()`` call, on all three algorithms:

1. :meth:`~TrainingHook.learning_rate` for each parameter group, when the learning rate is set;
2. :meth:`~TrainingHook.before_train`, once;
3. :meth:`~TrainingHook.before_epoch`, before each epoch (the algorithm's own advantage
   recomputation first, its batch normalisation of advantages after every hook);
4. :meth:`~TrainingHook.after_step`, after each optimizer step;
5. :meth:`~TrainingHook.extra_phase`, once, after the epochs;
6. ``after_train`` (on loss components), once, from the call's mean statistics.

:meth:`~TrainingHook.normalize_values` and :meth:`~TrainingHook.denormalize_values` are a
transform of value predictions: the critic predicts ``normalize_values(v)`` for a return-scale
value ``v``. Rollouts, time-limit bootstrapping and GAE see ``denormalize_values`` of the
critic's output; the loss sees the critic's output and ``normalize_values`` of the returns and
of the rollout's values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch as th


@dataclass
class TrainingContext:
    """What a hook may read or use during a ``train()`` call."""

    policy: Any
    """The policy being trained (``model.policy``)."""
    optimizer: th.optim.Optimizer
    """The policy's optimizer."""
    rollout_buffer: Any
    """The rollout being trained on. Its arrays are flat (``n_steps * n_envs`` rows, env-major)
    once the first epoch has started."""
    progress_remaining: float
    """From 1 at the start of ``learn()`` to 0 at its end."""
    step: Callable[[th.Tensor], th.Tensor]
    """``step(loss)``: one gradient step on ``loss`` as the loop takes them (zero the gradients,
    backward, clip to ``max_grad_norm``, stop on a non-finite value, step); returns the
    gradient norm. For an extra phase's own updates."""
    policy_copy: Callable[[], Any]
    """``policy_copy()``: a new frozen policy built like ``policy``, with its weights now (for a
    component that keeps another policy: an average of the weights, the pre-phase policy)."""
    value_transform: TrainingHook | None
    """The component that normalises value predictions this call, if any (see the module docstring)."""
    updates_per_epoch: int
    """Optimizer steps in one epoch of this call (the rollout's size over the minibatch size)."""
    n_epochs: int
    """Epochs in this call (``n_epochs``; early stopping may end it sooner)."""
    minibatch_size: int
    """Samples per minibatch (the whole rollout where the algorithm's ``batch_size`` is ``None``)."""
    evaluate_rollout: Callable[..., RolloutEvaluation]
    """``evaluate_rollout(log_ratio=True)``: the whole rollout under the policy as it is now (values
    in return units, and log-ratios to the rollout's policy unless ``log_ratio=False``), for
    recomputing advantages before an epoch."""


@dataclass
class RolloutEvaluation:
    """The rollout under the current policy, as ``(n_steps, n_envs)`` arrays in time order."""

    values: np.ndarray
    """Value predictions in return units."""
    log_ratio: np.ndarray | None
    """``log pi(a|s) - log pi_old(a|s)`` of the rollout's actions (``None`` where not asked for)."""
    last_values: np.ndarray
    """``(n_envs,)``: the values of the observations after the rollout's last step."""
    last_episode_starts: np.ndarray
    """``(n_envs,)``: whether those observations start an episode (SB3's ``dones`` for GAE)."""


class TrainingHook:
    """The extension points of the training loop; every method is optional."""

    def learning_rate(self, learning_rate: float) -> float:
        """The learning rate to use this call, given the scheduled one (called once per parameter
        group at the start of each call; keep it a function of state, e.g. set in ``after_train``)."""
        return learning_rate

    def before_train(self, context: TrainingContext) -> None:
        """Once per call, before the first epoch: read or keep the rollout, refresh state."""

    def before_epoch(self, context: TrainingContext, epoch: int) -> None:
        """Before each epoch (``epoch`` from 0): recompute advantages, reweight the buffer."""

    def after_step(self, context: TrainingContext) -> None:
        """After each optimizer step: e.g. move an average of the policy's weights."""

    def extra_phase(self, context: TrainingContext) -> dict[str, float]:
        """After the call's epochs: another phase of updates (``context.step``), e.g. every N
        calls over data kept by ``before_train``. Returns statistics to log under ``train/``."""
        return {}

    def normalize_values(self, values: th.Tensor) -> th.Tensor:
        """Return-scale values -> what the critic predicts (see the module docstring)."""
        return values

    def denormalize_values(self, values: th.Tensor) -> th.Tensor:
        """What the critic predicts -> return-scale values."""
        return values

    @property
    def recomputes_advantages(self) -> bool:
        """Whether this hook may change the advantages before an epoch (derived: it overrides
        :meth:`before_epoch`); the algorithm then normalises them over the batch after it, where asked."""
        return type(self).before_epoch is not TrainingHook.before_epoch

    @property
    def transforms_values(self) -> bool:
        """Whether this hook overrides the value transform (derived, not declared)."""
        return type(self).denormalize_values is not TrainingHook.denormalize_values


def value_transform_of(hooks: Iterable[TrainingHook]) -> TrainingHook | None:
    """The hook among ``hooks`` that transforms value predictions, if any (a loss has at most one)."""
    return next((hook for hook in hooks if hook.transforms_values), None)
