"""Scoring a minibatch: evaluate the policy on it once, let each component add its term, sum.

All the arithmetic of an update before the gradient is here, so ``compile=True`` compiles
:meth:`MinibatchScorer.score` (see :mod:`sb3_ppo_variants.update.compiled`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch as th
from stable_baselines3.common.policies import BasePolicy

from sb3_ppo_variants.common.errors import HyperparameterError
from sb3_ppo_variants.components.hooks import TrainingHook
from sb3_ppo_variants.components.kl import kl_per_sample
from sb3_ppo_variants.components.protocol import LOG_RATIO_LIMIT, LossComponent, LossTerm, Minibatch
from sb3_ppo_variants.update.advantages import normalize_minibatch_advantages


class PolicyEvaluation(NamedTuple):
    """A policy on a minibatch's observations and actions (what ``evaluate_actions`` gives)."""

    values: th.Tensor
    log_prob: th.Tensor
    entropy: th.Tensor | None
    distribution: Any
    """The torch distribution (a list of them for ``MultiDiscrete``)."""


class ScoredMinibatch(NamedTuple):
    """What scoring a minibatch gives the loop."""

    batch: Minibatch | None
    """The evaluated minibatch, for components that stop early; ``None`` where none may (a
    compiled function pays for each output)."""
    terms: list[LossTerm]
    """Each component's term, in the loss's order."""
    loss: th.Tensor
    approx_kl: th.Tensor
    """SB3's ``approx_kl`` (the k3 estimate), without gradient."""
    flat_gradients: tuple[th.Tensor, ...] | None = None
    """The gradient, one flat tensor per parameter group, where it came with the loss (the
    compiled one-graph path); ``None``: the loop calls ``backward()``."""
    stepped_norm: th.Tensor | None = None
    """Where the graph also clipped the gradient and stepped the optimizer (see
    :func:`~sb3_ppo_variants.update.optimizer_step.clip_and_step`): the gradient's norm."""


Evaluate = Callable[[BasePolicy, Any, th.Tensor], PolicyEvaluation]


@dataclass
class MinibatchScorer:
    """How one algorithm scores a minibatch; it receives the functions that differ between
    algorithms instead of holding the algorithm."""

    policy: BasePolicy
    evaluate: Evaluate
    """``(policy, rollout_data, actions) -> PolicyEvaluation``."""
    distribution: Callable[[BasePolicy, Any, th.Tensor], Any]
    """The torch distribution of a policy on a minibatch (for the frozen pre-update policy)."""
    sample_mask: Callable[[Any], th.Tensor | None]
    """Which samples are real (``None``: all of them)."""
    discrete_actions: bool
    normalize_minibatch_advantages: bool
    value_transform: TrainingHook | None = None

    def minibatch(self, rollout_data: Any, old_policy: BasePolicy | None, progress_remaining: Any) -> Minibatch:
        """The minibatch every component reads: evaluated once under the current policy."""
        actions = rollout_data.actions
        if self.discrete_actions:
            actions = actions.long().flatten()
        old_distribution = None
        if old_policy is not None:
            with th.no_grad():
                old_distribution = self.distribution(old_policy, rollout_data, actions)
        evaluation = self.evaluate(self.policy, rollout_data, actions)
        mask = self.sample_mask(rollout_data)
        advantages = rollout_data.advantages
        if self.normalize_minibatch_advantages:
            advantages = normalize_minibatch_advantages(advantages, mask)
        returns, old_values = rollout_data.returns, rollout_data.old_values
        if self.value_transform is not None:  # the critic predicts normalised values
            returns = self.value_transform.normalize_values(returns)
            old_values = self.value_transform.normalize_values(old_values)
        log_ratio = th.clamp(evaluation.log_prob - rollout_data.old_log_prob, -LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
        return Minibatch(
            observations=rollout_data.observations,
            actions=actions,
            old_values=old_values,
            old_log_prob=rollout_data.old_log_prob,
            advantages=advantages,
            returns=returns,
            values=evaluation.values,
            log_prob=evaluation.log_prob,
            entropy=evaluation.entropy,
            log_ratio=log_ratio,
            ratio=th.exp(log_ratio),
            distribution=evaluation.distribution,
            old_distribution=old_distribution,
            mask=mask,
            progress_remaining=progress_remaining,
            policy=self.policy,
            log_prob_under=lambda other: self.evaluate(other, rollout_data, actions).log_prob,
        )

    def score(
        self,
        rollout_data: Any,
        old_policy: BasePolicy | None,
        progress_remaining: Any,
        components: Sequence[LossComponent],
        keep_batch: bool = False,
    ) -> ScoredMinibatch:
        """Evaluate the minibatch once, let each component add its term, and sum them."""
        batch = self.minibatch(rollout_data, old_policy, progress_remaining)
        terms = [component(batch) for component in components]
        with th.no_grad():
            approx_kl = batch.mean(kl_per_sample(batch, "k3"))
        return ScoredMinibatch(batch if keep_batch else None, terms, total(terms), approx_kl)


def total(terms: Sequence[LossTerm]) -> th.Tensor:
    """Sum the weighted terms left to right, in the components' order."""
    losses = [term.loss for term in terms if term.loss is not None]
    if not losses:
        raise HyperparameterError("loss has no component that adds a loss term: accepted values include at least one.")
    loss = losses[0]
    for term in losses[1:]:
        loss = loss + term
    return loss
