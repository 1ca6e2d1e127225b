"""Extension points of the training loop, for variants that change more than one minibatch's loss.

Every loss component is a :class:`TrainingHook`; so are the loop's own options (advantage
recomputation is a ``before_epoch`` hook). Each method does nothing unless overridden, so a
component overrides only the ones it needs and declares nothing else. The loop calls them in
this order in every ``train()`` call, on all three algorithms:

1. :meth:`~TrainingHook.learning_rate` for each parameter group, when the learning rate is set;
2. :meth:`~TrainingHook.before_train`, once;
3. :meth:`~TrainingHook.before_epoch`, before each epoch;
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

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch as th


@dataclass
class TrainingContext:
    """What a hook may read or use during a ``train()`` call."""

    model: Any
    """The algorithm (``PPOVariant``, ...), as SB3's callbacks see it."""
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
    def transforms_values(self) -> bool:
        """Whether this hook overrides the value transform (derived, not declared)."""
        return type(self).denormalize_values is not TrainingHook.denormalize_values
