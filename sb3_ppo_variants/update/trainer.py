"""One ``train()`` call's loop: epochs of minibatch steps, the hooks around them, the divergence guard.

The algorithm builds a :class:`Trainer` for each call from what it owns (the rollout buffer, its
settings, how a minibatch is scored, the call's components and hooks) and runs it; the trainer
holds no model. See :meth:`~sb3_ppo_variants.algorithms.base.LossComponentsMixin.train`.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch as th

from sb3_ppo_variants.common.errors import TrainingDivergedError
from sb3_ppo_variants.components.hooks import TrainingContext, TrainingHook
from sb3_ppo_variants.components.protocol import LossComponent, LossTerm, Stat
from sb3_ppo_variants.update.minibatches import minibatches
from sb3_ppo_variants.update.optimizer_step import OptimizerStep
from sb3_ppo_variants.update.scoring import ScoredMinibatch


@dataclass
class CallResult:
    """What a call leaves for the algorithm to log."""

    stats: dict[str, Stat]
    """Each statistic's mean over the call's minibatches (``approx_kl``: over the last epoch, as SB3)."""
    loss: th.Tensor | None
    """The last minibatch's loss (SB3 logs it as ``train/loss``)."""
    epochs: int
    """Epochs begun (SB3 counts them in ``_n_updates``)."""
    phase_stats: dict[str, float] = field(default_factory=dict)
    """What the hooks' extra phases logged."""


@dataclass
class Trainer:
    """``n_epochs`` passes over the rollout in minibatches: score, stop early or step, call the hooks."""

    rollout_buffer: Any
    n_epochs: int
    batch_size: int | None
    device: th.device
    make_score: Callable[[], Callable[[Any], ScoredMinibatch]]
    """Builds the call's ``score(rollout_data)`` (the minibatch's loss, its terms and, on the compiled
    path, its gradient) once the hooks' ``before_train`` has run: the compiled path copies the
    components as they are then (a policy copy a hook made included)."""
    optimizer: OptimizerStep
    guard: DivergenceGuard
    hooks: Sequence[TrainingHook]
    """In call order: the algorithm's advantage recomputation, the components, batch normalisation."""
    stoppers: Sequence[LossComponent]
    """The components that may stop the call early (``LossComponent.stops_early``)."""
    verbose: int = 0

    def run(self, context: TrainingContext) -> CallResult:
        stats: dict[str, list[Stat]] = defaultdict(list)
        scored: ScoredMinibatch | None = None
        approx_kl: list[Stat] = []
        epochs = 0
        optimizer = self.optimizer
        _call(self.hooks, "before_train", context)
        score = self.make_score()
        for epoch in range(self.n_epochs):
            epochs += 1
            _call(self.hooks, "before_epoch", context, epoch)
            approx_kl = []  # SB3 reports the KL of the last epoch only
            stop_reason: str | None = None
            for index, rollout_data in enumerate(minibatches(self.rollout_buffer, self.batch_size, self.device)):
                scored = score(rollout_data)
                _collect(stats, scored.terms)
                approx_kl.append(scored.approx_kl)
                stop_reason = next((r for c in self.stoppers if (r := c.stop_early(scored.batch)) is not None), None)
                if stop_reason is not None:
                    if self.verbose >= 1:
                        print(f"Early stopping at step {epoch} due to {stop_reason}")
                    break
                optimizer.zero_grad()
                if scored.flat_gradients is None:
                    optimizer.backward(scored.loss)
                else:  # the compiled graph computed the gradient with the loss (and may have stepped)
                    optimizer.set_flat_gradients(scored.flat_gradients, scored.stepped_norm)
                grad_norm = optimizer.clip_grad_norm(self.guard.max_grad_norm)
                self.guard.check(scored.loss, grad_norm, scored.terms, f"epoch {epoch}, minibatch {index}")
                optimizer.step()
                _call(self.hooks, "after_step", context)
            self.guard.n_updates += 1
            if stop_reason is not None:
                break
        reduced = {key: _mean(values) for key, values in stats.items()}
        reduced["approx_kl"] = _mean(approx_kl)
        phase_stats: dict[str, float] = {}
        for hook in self.hooks:
            phase_stats.update(hook.extra_phase(context))
        return CallResult(reduced, None if scored is None else scored.loss, epochs, phase_stats)


@dataclass
class DivergenceGuard:
    """Stops a call before a non-finite loss or gradient reaches the weights, naming the culprit."""

    components: Sequence[LossComponent]
    max_grad_norm: float
    n_updates: int
    """The algorithm's update count (SB3's ``_n_updates``, one per epoch begun), for the message."""

    def check(self, loss: th.Tensor, grad_norm: th.Tensor, terms: Sequence[LossTerm], where: str) -> None:
        # One host read per minibatch: the guard that keeps NaN out of the weights.
        if th.isfinite(loss.detach() + grad_norm):
            return
        values = {c.name: t.loss.item() for c, t in zip(self.components, terms, strict=False) if t.loss is not None}
        bad = [name for name, value in values.items() if not np.isfinite(value)]
        if bad:
            culprit = f"loss component(s) {', '.join(bad)}"
        elif terms:
            culprit = "the gradient (every loss term was finite)"
        else:
            culprit = f"the loss ({loss.item()}) or its gradient"
        raise TrainingDivergedError(
            f"Non-finite value from {culprit} in train() at update {self.n_updates} "
            f"({where}); terms: {values}, gradient norm: {grad_norm.item()}. "
            "The optimizer step was skipped: the policy keeps its last finite weights."
        )

    def gradient_step(self, policy: th.nn.Module, optimizer: th.optim.Optimizer, loss: th.Tensor) -> th.Tensor:
        """One update of an extra phase, with the loop's clipping and this guard."""
        optimizer.zero_grad()
        loss.backward()
        grad_norm = th.nn.utils.clip_grad_norm_(policy.parameters(), self.max_grad_norm)
        self.check(loss, grad_norm, [], "an extra phase")
        optimizer.step()
        return grad_norm


@contextlib.contextmanager
def distribution_checks_off() -> Iterator[None]:
    """Distribution argument checks cost a few ops and a host read per minibatch; the rollout
    already checked these parameters and the divergence guard checks every update."""
    validate = th.distributions.Distribution._validate_args
    th.distributions.Distribution.set_default_validate_args(False)
    try:
        yield
    finally:
        th.distributions.Distribution.set_default_validate_args(validate)


def reduce_to_floats(stats: dict[str, Stat]) -> dict[str, float]:
    """The statistics as floats, with one host transfer for all the tensors among them."""
    keys = list(stats)
    values = [stats[key] for key in keys]
    tensors = [i for i, value in enumerate(values) if isinstance(value, th.Tensor)]
    if tensors:
        for i, value in zip(tensors, th.stack([values[i] for i in tensors]).tolist(), strict=True):
            values[i] = value
    return dict(zip(keys, values, strict=True))  # type: ignore[arg-type]


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
