"""KL divergence between the pre-update and the current policy: estimators, penalty, early stop.

All estimate ``KL(pi_old || pi)`` on actions sampled from ``pi_old``. With
``log_r = log pi(a|s) - log pi_old(a|s)`` (Schulman, "Approximating KL divergence", 2020,
http://joschu.net/blog/kl-approx.html):

- ``"k1"``: ``-log_r``, unbiased, high variance, can be negative;
- ``"k2"``: ``log_r^2 / 2``, biased, low variance, non-negative;
- ``"k3"``: ``(r - 1) - log_r``, unbiased, low variance, non-negative (SB3's ``approx_kl``);
- ``"k3+"``: the value of k3 with the gradient of k2, a straight-through estimator (verl's
  ``k3+``): k3's unbiased value, k2's gradient, which is the exact KL's gradient at ``r = 1``;
- ``"exact"``: the closed form between the two distributions at each visited state, from the
  policy as it was at the start of the ``train()`` call.

``direction="reverse"`` estimates ``KL(pi || pi_old)`` instead (MDPO, sample-factory's
``kl_loss_coeff``): the exact form swaps the distributions, and each sample estimator ``k`` becomes
``r k(-log_r)``, its importance-weighted version on the same samples from ``pi_old`` (so reverse
k1 is ``r log_r`` and reverse k3 is ``r log_r - (r - 1)``, both unbiased).
"""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch as th

from sb3_ppo_variants.common.validation import at_least, check_choice, check_number
from sb3_ppo_variants.components.protocol import LossComponent, LossTerm, Minibatch

KL_ESTIMATORS = ("exact", "k1", "k2", "k3", "k3+")
KL_DIRECTIONS = ("forward", "reverse")
ADAPTIVE_RULES = ("paper", "rllib")


def exact_kl(old: Any, new: Any) -> th.Tensor:
    """Per-sample ``KL(old || new)`` between torch distributions (lists: independent parts)."""
    if isinstance(old, list):  # MultiDiscrete: one Categorical per action dimension
        return th.stack([exact_kl(o, n) for o, n in zip(old, new, strict=True)], dim=1).sum(dim=1)
    kl = th.distributions.kl_divergence(old, new)
    return kl.sum(dim=1) if kl.dim() > 1 else kl  # independent action dimensions add up


def kl_per_sample(batch: Minibatch, estimator: str, direction: str = "forward") -> th.Tensor:
    """Per-sample estimate of ``KL(pi_old || pi)`` (``direction="reverse"``: ``KL(pi || pi_old)``) by
    ``estimator`` (see the module docstring)."""
    if estimator == "exact":
        if direction == "reverse":
            return exact_kl(batch.distribution, batch.old_distribution)
        return exact_kl(batch.old_distribution, batch.distribution)
    if direction == "reverse":
        return batch.ratio * _sample_kl(-batch.log_ratio, th.exp(-batch.log_ratio), estimator)
    return _sample_kl(batch.log_ratio, batch.ratio, estimator)


def _sample_kl(log_ratio: th.Tensor, ratio: th.Tensor, estimator: str) -> th.Tensor:
    if estimator == "k1":
        return -log_ratio
    if estimator == "k2":
        return 0.5 * log_ratio**2
    k3 = (ratio - 1) - log_ratio
    if estimator == "k3+":
        k2 = 0.5 * log_ratio**2
        return k3.detach() + (k2 - k2.detach())
    return k3


def adapt_kl_coef(coef: float, kl: float, target: float, rule: str) -> float:
    """One step of an adaptive KL-coefficient rule.

    ``"paper"`` (Schulman et al. 2017, section 4): halve below ``target / 1.5``, double above
    ``1.5 * target``. ``"rllib"`` (RLlib's PPO learner): times 1.5 above ``2 * target``, times
    0.5 below ``0.5 * target``. A non-finite ``kl`` leaves the coefficient unchanged.
    """
    if not kl == kl or kl in (float("inf"), float("-inf")):
        return coef
    if rule == "paper":
        if kl < target / 1.5:
            return coef / 2
        if kl > target * 1.5:
            return coef * 2
        return coef
    if kl > 2.0 * target:
        return coef * 1.5
    if kl < 0.5 * target:
        return coef * 0.5
    return coef


@dataclass
class KLPenalty(LossComponent):
    """KL penalty ``coef * mean(KL(pi_old || pi))`` (Schulman et al. 2017, section 4, eq. 8).

    With ``adaptive``, ``coef`` is updated once per ``train()`` call from the mean KL of that
    call by ``rule`` (see :func:`adapt_kl_coef`); the current value is saved with the model.

    Logs ``kl`` (mean estimate) and ``kl_coef`` (the coefficient after the update).
    """

    coef: float = 0.2
    """Initial (or fixed) penalty coefficient beta."""
    target: float = 0.01
    """Target KL per update for the adaptive rule (``d_targ`` in the paper)."""
    adaptive: bool = True
    """Adapt ``coef`` towards ``target`` after each ``train()`` call."""
    rule: str = "paper"
    """``"paper"`` or ``"rllib"``."""
    estimator: str = "exact"
    """``"exact"``, ``"k1"``, ``"k2"``, ``"k3"`` or ``"k3+"``."""
    direction: str = "forward"
    """``"forward"``: ``KL(pi_old || pi)`` (the paper's); ``"reverse"``: ``KL(pi || pi_old)``."""

    name: ClassVar[str] = "kl_penalty"

    def __post_init__(self) -> None:
        check_number("coef", self.coef, low_inclusive=not self.adaptive)
        check_number("target", self.target, low_inclusive=False)
        check_choice("adaptive", self.adaptive, (True, False))
        check_choice("rule", self.rule, ADAPTIVE_RULES)
        check_choice("estimator", self.estimator, KL_ESTIMATORS)
        check_choice("direction", self.direction, KL_DIRECTIONS)

    @property
    def needs_old_distribution(self) -> bool:  # type: ignore[override]
        return self.estimator == "exact"

    def __call__(self, batch: Minibatch) -> LossTerm:
        kl = batch.mean(kl_per_sample(batch, self.estimator, self.direction))
        return LossTerm(self.coef * kl, {"kl": kl})

    def after_train(self, stats: Mapping[str, float]) -> dict[str, float]:
        if self.adaptive:
            self.coef = adapt_kl_coef(self.coef, stats["kl"], self.target, self.rule)
        return {"kl_coef": self.coef}


@dataclass
class KLEarlyStop(LossComponent):
    """Stop the epochs of a ``train()`` call once a minibatch's KL exceeds ``factor * target``.

    SB3's ``target_kl`` (SB3 issue #417; hill-a/stable-baselines issue #213): the clipped
    objective alone does not stop large policy moves. The minibatch that crosses the threshold
    is not applied. Adds no loss term. ``target=None`` turns it off.
    """

    target: float | None = None
    """Target KL; ``None`` disables the check. Mirrors the algorithm's ``target_kl``."""
    factor: float = 1.5
    """Stop when the KL estimate exceeds ``factor * target`` (SB3 uses 1.5)."""
    estimator: str = "k3"
    """``"exact"``, ``"k1"``, ``"k2"``, ``"k3"`` (SB3's) or ``"k3+"``."""
    direction: str = "forward"
    """``"forward"``: ``KL(pi_old || pi)`` (SB3's); ``"reverse"``: ``KL(pi || pi_old)``."""

    name: ClassVar[str] = "kl_early_stop"
    linked: ClassVar[dict[str, str]] = {"target": "target_kl"}

    def __post_init__(self) -> None:
        check_number("target", self.target, low_inclusive=False, optional=True)
        check_number("factor", self.factor, low_inclusive=False)
        check_choice("estimator", self.estimator, KL_ESTIMATORS)
        check_choice("direction", self.direction, KL_DIRECTIONS)

    @property
    def needs_old_distribution(self) -> bool:  # type: ignore[override]
        return self.target is not None and self.estimator == "exact"

    def __call__(self, batch: Minibatch) -> LossTerm:
        return LossTerm(None)

    @property
    def stops_early(self) -> bool:
        return self.target is not None

    def stop_early(self, batch: Minibatch) -> str | None:
        if self.target is None:
            return None
        with th.no_grad():
            kl = batch.mean(kl_per_sample(batch, self.estimator, self.direction)).item()
        return f"reaching max kl: {kl:.2f}" if kl > self.factor * self.target else None


@dataclass
class MirrorDescentPenalty(LossComponent):
    """MDPO's KL term (on-policy Mirror Descent Policy Optimization; Tomar et al., ICLR 2022,
    arXiv:2005.09814): ``mean(KL(pi || pi_old)) / t_k``, the reverse KL weighted by the inverse of
    a step size ``t_k = 1 - k / K`` annealed over training, so the proximity term grows as
    training ends. ``t_k`` is the progress remaining, floored at ``min_step_size`` so the last
    call's coefficient is finite: the authors' code (manantomar/Mirror-Descent-Policy-Optimization,
    ``mdpo_on``) uses ``t_k = 1 - (k - 1) / K``, whose smallest value is ``2 / K``; the default
    floor, 0.01, is that of a run of 200 calls. With the unclipped surrogate it is the ``mdpo``
    variant.

    Logs ``kl`` and ``kl_coef`` (``1 / t_k``).
    """

    min_step_size: float = 0.01
    """The floor of ``t_k``, in (0, 1]."""
    estimator: str = "exact"
    """How the KL is estimated (see the module docstring); the authors' is the exact one."""
    direction: str = "reverse"
    """``"reverse"``: ``KL(pi || pi_old)`` (the paper's); ``"forward"``: ``KL(pi_old || pi)``."""

    name: ClassVar[str] = "mirror_descent_penalty"

    def __post_init__(self) -> None:
        check_number("min_step_size", self.min_step_size, low_inclusive=False, high=1.0)
        check_choice("estimator", self.estimator, KL_ESTIMATORS)
        check_choice("direction", self.direction, KL_DIRECTIONS)

    @property
    def needs_old_distribution(self) -> bool:  # type: ignore[override]
        return self.estimator == "exact"

    def __call__(self, batch: Minibatch) -> LossTerm:
        kl = batch.mean(kl_per_sample(batch, self.estimator, self.direction))
        coef = 1.0 / at_least(batch.progress_remaining, self.min_step_size)
        return LossTerm(coef * kl, {"kl": kl, "kl_coef": coef})
