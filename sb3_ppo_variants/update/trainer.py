"""The ``train()`` loop every algorithm of this package shares: score, step, reduce statistics.

:class:`TrainingLoop` is mixed into each algorithm by
:class:`~sb3_ppo_variants.algorithms.base.LossComponentsMixin`; the algorithm says only how
a minibatch is evaluated and which of its samples are real.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.utils import explained_variance

from sb3_ppo_variants.common.errors import TrainingDivergedError
from sb3_ppo_variants.components.hooks import TrainingContext, TrainingHook
from sb3_ppo_variants.components.protocol import LossComponent, LossTerm, Stat, schedules_resolved
from sb3_ppo_variants.update.minibatches import minibatches
from sb3_ppo_variants.update.optimizer_step import OptimizerStep
from sb3_ppo_variants.update.scoring import ScoredMinibatch


class TrainingLoop:
    """``train()`` over the loss components and training hooks of an SB3 on-policy algorithm."""

    loss: list[LossComponent]

    def train(self) -> None:
        """Update the policy on the rollout buffer: ``n_epochs`` passes of minibatch steps."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        self._bind_linked_hyperparameters()
        progress = self._current_progress_remaining
        stoppers = [component for component in self.loss if component.stops_early]
        hooks = self._training_hooks()
        old_policy = self._pre_update_policy()
        stats: dict[str, list[Stat]] = defaultdict(list)
        scored: ScoredMinibatch | None = None
        stop_reason: str | None = None
        parameters = list(self.policy.parameters())
        with (
            _distribution_checks_off(),
            schedules_resolved(self.loss, progress) as schedules,
            self._optimizer_step(parameters) as optimizer,
        ):
            context = self._training_context(progress)
            score = self._scorer(optimizer, old_policy, progress, schedules, keep_batch=bool(stoppers))
            _call(hooks, "before_train", context)
            for epoch in range(self.n_epochs):
                _call(hooks, "before_epoch", context, epoch)
                approx_kl: list[Stat] = []  # SB3 reports the KL of the last epoch only
                for index, rollout_data in enumerate(minibatches(self.rollout_buffer, self.batch_size, self.device)):
                    scored = score(rollout_data)
                    _collect(stats, scored.terms)
                    approx_kl.append(scored.approx_kl)
                    stop_reason = next((r for c in stoppers if (r := c.stop_early(scored.batch)) is not None), None)
                    if stop_reason is not None:
                        if self.verbose >= 1:
                            print(f"Early stopping at step {epoch} due to {stop_reason}")
                        break
                    optimizer.zero_grad()
                    if scored.flat_gradients is None:
                        optimizer.backward(scored.loss)
                    else:  # the compiled graph computed the gradient with the loss
                        optimizer.set_flat_gradients(scored.flat_gradients)
                    grad_norm = optimizer.clip_grad_norm(self.max_grad_norm)
                    self._check_finite(scored.loss, grad_norm, scored.terms, f"epoch {epoch}, minibatch {index}")
                    optimizer.step()
                    _call(hooks, "after_step", context)
                self._n_updates += 1
                if stop_reason is not None:
                    break
        stats["approx_kl"] = [_mean(approx_kl)]
        phase_stats: dict[str, float] = {}
        for hook in hooks:
            phase_stats.update(hook.extra_phase(context))
        self._record_train_stats(stats, None if scored is None else scored.loss, phase_stats)

    def _optimizer_step(self, parameters: list[th.nn.Parameter]) -> OptimizerStep:
        return OptimizerStep.for_optimizer(self.policy.optimizer, parameters, fused=bool(self.compile))

    def _training_context(self, progress_remaining: float) -> TrainingContext:
        return TrainingContext(
            model=self,
            policy=self.policy,
            optimizer=self.policy.optimizer,
            rollout_buffer=self.rollout_buffer,
            progress_remaining=progress_remaining,
            step=self._gradient_step,
        )

    def _gradient_step(self, loss: th.Tensor) -> th.Tensor:
        """One update of an extra phase, with the loop's clipping and divergence guard."""
        optimizer = self.policy.optimizer
        optimizer.zero_grad()
        loss.backward()
        grad_norm = th.nn.utils.clip_grad_norm_(self.policy.parameters(), self.max_grad_norm)
        self._check_finite(loss, grad_norm, [], "an extra phase")
        optimizer.step()
        return grad_norm

    def _check_finite(self, loss: th.Tensor, grad_norm: th.Tensor, terms: Sequence[LossTerm], where: str) -> None:
        # One host read per minibatch: the guard that keeps NaN out of the weights.
        if th.isfinite(loss.detach() + grad_norm):
            return
        values = {c.name: t.loss.item() for c, t in zip(self.loss, terms, strict=False) if t.loss is not None}
        bad = [name for name, value in values.items() if not np.isfinite(value)]
        if bad:
            culprit = f"loss component(s) {', '.join(bad)}"
        elif terms:
            culprit = "the gradient (every loss term was finite)"
        else:
            culprit = f"the loss ({loss.item()}) or its gradient"
        raise TrainingDivergedError(
            f"Non-finite value from {culprit} in train() at update {self._n_updates} "
            f"({where}); terms: {values}, gradient norm: {grad_norm.item()}. "
            "The optimizer step was skipped: the policy keeps its last finite weights."
        )

    def _record_train_stats(
        self, stats: dict[str, list[Stat]], loss: th.Tensor | None, phase_stats: dict[str, float]
    ) -> None:
        keys = list(stats)
        reduced = [_mean(stats[key]) for key in keys]
        tensors = [i for i, value in enumerate(reduced) if isinstance(value, th.Tensor)]
        if tensors:  # one host transfer for every statistic of the call
            for i, value in zip(tensors, th.stack([reduced[i] for i in tensors]).tolist(), strict=True):
                reduced[i] = value
        means = dict(zip(keys, reduced, strict=True))
        for component in self.loss:
            means.update(component.after_train(means))
        means.update(phase_stats)
        for key, value in means.items():
            self.logger.record(f"train/{key}", value)
        if loss is not None:
            self.logger.record("train/loss", loss.item())
        self.logger.record(
            "train/explained_variance",
            explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten()),
        )
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    # Provided by LossComponentsMixin and SB3.
    _training_hooks: Callable[[], list[TrainingHook]]
    _scorer: Callable[..., Callable[[Any], ScoredMinibatch]]


@contextlib.contextmanager
def _distribution_checks_off() -> Iterator[None]:
    """Distribution argument checks cost a few ops and a host read per minibatch; the rollout
    already checked these parameters and the divergence guard checks every update."""
    validate = th.distributions.Distribution._validate_args
    th.distributions.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        th.distributions.Distribution.set_default_validate_args(validate)


def _call(hooks: Sequence[TrainingHook], method: str, *arguments: Any) -> None:
    for hook in hooks:
        getattr(hook, method)(*arguments)


def _collect(stats: dict[str, list[Stat]], terms: Sequence[LossTerm]) -> None:
    for term in terms:
        for key, value in term.stats.items():
            stats[key].append(value.detach() if isinstance(value, th.Tensor) else value)


def _mean(values: list[Stat]) -> Stat:
    if all(isinstance(v, float | int) for v in values):
        # A setting logged per minibatch (a clip range) is reported as itself, not re-averaged.
        return values[0] if min(values) == max(values) else float(np.mean(values))
    return th.stack(values).to(th.float64).mean()  # type: ignore[arg-type]
