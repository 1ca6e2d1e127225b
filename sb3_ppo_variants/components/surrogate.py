"""Policy-gradient surrogates: PPO's clipped objective and the variants proposed since.

Each returns ``-mean(objective)`` as its loss and logs ``policy_gradient_loss``; the ones with a
clip range also log ``clip_fraction``, the share of samples whose ratio left ``[1 - eps, 1 + eps]``
(the band of the objective, asymmetric for clip-higher), so variants compare on one statistic.
"""

from dataclasses import dataclass
from typing import ClassVar

import torch as th

from sb3_ppo_variants.common.validation import at_least, check_choice, check_number, value_at
from sb3_ppo_variants.components.kl import exact_kl
from sb3_ppo_variants.components.protocol import LossComponent, LossTerm, Minibatch, ScheduleLike


def outside_band(ratio: th.Tensor, low: float, high: float) -> th.Tensor:
    """1 where the ratio left the band ``[1 - low, 1 + high]`` (for ``clip_fraction``), else 0."""
    with th.no_grad():
        return ((ratio < 1 - low) | (ratio > 1 + high)).float()


def policy_term(batch: Minibatch, objective: th.Tensor, **stats: th.Tensor | float) -> LossTerm:
    """A surrogate's term: ``-mean(objective)`` as the loss, logged as ``policy_gradient_loss``."""
    policy_loss = -batch.mean(objective)
    return LossTerm(policy_loss, {"policy_gradient_loss": policy_loss, **stats})


@dataclass
class ClippedSurrogate(LossComponent):
    """PPO's clipped surrogate objective (Schulman et al. 2017, eq. 7, arXiv:1707.06347).

    ``L = -mean(min(r A, clip(r, 1 - eps, 1 + eps) A))`` with ``r = pi / pi_old``.

    **Clip-higher** (Yu et al. 2025, DAPO, arXiv:2503.14476): with
    ``clip_range_high = eps_high``, the band is ``[1 - eps, 1 + eps_high]``. A larger upper
    bound lets unlikely actions with positive advantages gain more probability per update,
    which keeps entropy from collapsing; DAPO uses ``eps = 0.2, eps_high = 0.28``.

    **Dual clip** (Ye et al., AAAI 2020, eq. 4, arXiv:1912.09729): with ``dual_clip = c > 1``,
    samples with ``A < 0`` use ``max(min(r A, clip(r, 1 - eps, 1 + eps) A), c A)``. This bounds
    the objective below when a large ratio meets a negative advantage, where plain clipping
    leaves ``r A`` unbounded.

    **Log-symmetric clip** (sample-factory's ``clip_ratio_low = 1 / clip_ratio_high``): with
    ``log_symmetric=True`` the lower bound is ``1 / (1 + eps)`` instead of ``1 - eps``, so the band
    is symmetric in ``log r``.

    Logs ``policy_gradient_loss``, ``clip_fraction``, ``clip_range``, with clip-higher
    ``clip_range_high``, and with dual clipping ``dual_clip_fraction`` (share of samples bounded by ``c A``).
    """

    clip_range: ScheduleLike = 0.2
    """``eps``: how far the ratio may move before the objective stops rewarding it; a float or a
    schedule of progress remaining. Mirrors the algorithm's ``clip_range``."""
    dual_clip: float | None = None
    """``c`` (> 1; the paper uses 3), or ``None`` for plain PPO clipping."""
    clip_range_high: ScheduleLike | None = None
    """``eps_high`` for the upper bound ``1 + eps_high`` (float or schedule); ``None``: ``eps``."""
    log_symmetric: bool = False
    """Lower bound ``1 / (1 + eps)`` rather than ``1 - eps``."""

    name: ClassVar[str] = "clipped_surrogate"
    linked: ClassVar[dict[str, str]] = {"clip_range": "clip_range"}

    def __post_init__(self) -> None:
        check_number("clip_range", self.clip_range, low_inclusive=False, schedule=True)
        check_number("dual_clip", self.dual_clip, low=1.0, low_inclusive=False, optional=True)
        check_number("clip_range_high", self.clip_range_high, low_inclusive=False, schedule=True, optional=True)
        check_choice("log_symmetric", self.log_symmetric, (True, False))

    def __call__(self, batch: Minibatch) -> LossTerm:
        eps = value_at(self.clip_range, batch.progress_remaining)
        advantages, ratio = batch.advantages, batch.ratio
        stats: dict[str, th.Tensor | float] = {"clip_range": eps}
        eps_high = eps
        if self.clip_range_high is not None:
            eps_high = value_at(self.clip_range_high, batch.progress_remaining)
            stats["clip_range_high"] = eps_high
        eps_low = eps / (1 + eps) if self.log_symmetric else eps  # 1 - eps / (1 + eps) = 1 / (1 + eps)
        low, high = 1 - eps_low, 1 + eps_high
        if isinstance(low, th.Tensor) != isinstance(high, th.Tensor):  # clamp takes two tensors or two numbers
            low, high = (th.as_tensor(b, dtype=ratio.dtype, device=ratio.device) for b in (low, high))
        clipped = th.clamp(ratio, low, high)
        surrogate = th.min(advantages * ratio, advantages * clipped)
        if self.dual_clip is not None:
            lower_bound = self.dual_clip * advantages
            bounded = (advantages < 0) & (surrogate < lower_bound)
            surrogate = th.where(bounded, lower_bound, surrogate)
            stats["dual_clip_fraction"] = batch.mean(bounded.float())
        if self.clip_range_high is None and not self.log_symmetric:  # SB3's statistic, computed as SB3 does
            with th.no_grad():
                stats["clip_fraction"] = batch.mean((th.abs(ratio - 1) > eps).float())
        else:
            stats["clip_fraction"] = batch.mean(outside_band(ratio, eps_low, eps_high))
        return policy_term(batch, surrogate, **stats)


@dataclass
class Surrogate(LossComponent):
    """The unclipped importance-sampled surrogate ``L = -mean(r A)`` (Schulman et al. 2015/2017).

    Alone it is a policy gradient with importance weights; with an adaptive
    :class:`~sb3_ppo_variants.components.KLPenalty` it is **PPO-penalty** (Schulman et al. 2017,
    section 4, eq. 8, arXiv:1707.06347), the paper's alternative to clipping.

    Logs ``policy_gradient_loss``.
    """

    name: ClassVar[str] = "surrogate"

    def __call__(self, batch: Minibatch) -> LossTerm:
        return policy_term(batch, batch.ratio * batch.advantages)


@dataclass
class RollbackSurrogate(LossComponent):
    """PPO-RB, the rollback clip of Truly PPO (Wang et al., UAI 2019, arXiv:1903.07940).

    ``L = -mean(min(r A, F(r) A))`` with ``F(r) = -alpha r + (1 + alpha)(1 - eps)`` for
    ``r <= 1 - eps``, ``-alpha r + (1 + alpha)(1 + eps)`` for ``r >= 1 + eps``, and ``r`` in
    between. Where PPO's clipped objective goes flat outside the band (no force back), the
    rollback slope ``-alpha`` pushes the ratio back towards it. ``alpha = 0`` is PPO.
    Defaults are the authors' MuJoCo settings (``eps = 0.2``, ``alpha = 0.3``).

    Logs ``policy_gradient_loss``, ``clip_fraction``, ``clip_range`` and ``rollback_fraction``
    (share of samples on a rollback slope).
    """

    clip_range: ScheduleLike = 0.2
    """``eps``, as in PPO (float or schedule). Mirrors the algorithm's ``clip_range``."""
    rollback: float = 0.3
    """``alpha`` >= 0: the slope that pushes the ratio back once it leaves the band."""

    name: ClassVar[str] = "rollback_surrogate"
    linked: ClassVar[dict[str, str]] = {"clip_range": "clip_range"}

    def __post_init__(self) -> None:
        check_number("clip_range", self.clip_range, low_inclusive=False, schedule=True)
        check_number("rollback", self.rollback)

    def __call__(self, batch: Minibatch) -> LossTerm:
        eps = value_at(self.clip_range, batch.progress_remaining)
        advantages, ratio, alpha = batch.advantages, batch.ratio, self.rollback
        rolled_back = th.where(
            ratio <= 1 - eps,
            -alpha * ratio + (1 + alpha) * (1 - eps),
            th.where(ratio >= 1 + eps, -alpha * ratio + (1 + alpha) * (1 + eps), ratio),
        )
        unclipped, clipped = ratio * advantages, rolled_back * advantages
        with th.no_grad():
            on_slope = (clipped < unclipped).float()
        objective = th.min(unclipped, clipped)
        return policy_term(
            batch,
            objective,
            clip_range=eps,
            clip_fraction=batch.mean(outside_band(ratio, eps, eps)),
            rollback_fraction=batch.mean(on_slope),
        )


@dataclass
class TrustRegionRollbackSurrogate(LossComponent):
    """TR-PPO-RB, the trust-region rollback of Truly PPO (Wang et al., UAI 2019, arXiv:1903.07940).

    The trigger is the exact per-state ``KL(pi_old(.|s) || pi(.|s)) >= delta`` rather than the
    ratio: where it fires and the sample still gains (``r A > A``), the objective's slope is
    reversed to ``-alpha``; elsewhere it is ``r A``. As in the authors' code, the value stays
    continuous (it is ``r A`` everywhere) and only the gradient changes:
    ``objective = -alpha r A + stop_gradient((1 + alpha) r A)`` on triggered samples.
    Defaults are the authors' MuJoCo settings (``delta = 0.03``, ``alpha = 0.05``). Needs the
    pre-update distribution, so each minibatch costs one more forward pass of the frozen policy.

    Logs ``policy_gradient_loss``, ``kl`` (mean exact KL) and ``rollback_fraction``.
    """

    kl_range: float = 0.03
    """``delta`` > 0: the per-state KL beyond which a gaining sample is rolled back."""
    rollback: float = 0.05
    """``alpha`` >= 0: the reversed slope on rolled-back samples (0 stops their gradient)."""

    name: ClassVar[str] = "trust_region_rollback_surrogate"
    needs_old_distribution: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_number("kl_range", self.kl_range, low_inclusive=False)
        check_number("rollback", self.rollback)

    def __call__(self, batch: Minibatch) -> LossTerm:
        advantages, ratio = batch.advantages, batch.ratio
        kl = exact_kl(batch.old_distribution, batch.distribution)
        with th.no_grad():
            triggered = (kl >= self.kl_range) & (ratio * advantages > advantages)
        surrogate = ratio * advantages
        rolled_back = -self.rollback * surrogate + ((1 + self.rollback) * surrogate).detach()
        objective = th.where(triggered, rolled_back, surrogate)
        return policy_term(
            batch, objective, kl=batch.mean(kl.detach()), rollback_fraction=batch.mean(triggered.float())
        )


SPO_MIN_CLIP_RANGE = 1e-6
"""The smallest ``eps`` SPO divides by."""


@dataclass
class SPOSurrogate(LossComponent):
    """SPO, simple policy optimization (Xie et al., ICML 2025, arXiv:2401.16025).

    ``L = -mean(r A - |A| / (2 eps) (r - 1)^2)``, as ``compute_policy_loss`` of the authors' code
    (MyRepositories-hub/Simple-Policy-Optimization, ``mujoco/trainer.py``, ``algo == 'spo'``)
    computes it on the minibatch-normalised advantages. The quadratic penalty has its optimum for
    each sample at ``r = 1 + sign(A) eps``, so the ratio is drawn to the edge of the trust
    region instead of being left free once clipped (PPO's gradient there is zero).

    A schedule that decays ``eps`` to 0 (the Zoo's ``lin_0.2``) is floored at
    :data:`SPO_MIN_CLIP_RANGE` there: at ``eps = 0`` the penalty is ``0 / 0`` at ``r = 1``, while
    the floored penalty holds the ratio at 1, as PPO's zero clip range does.

    Logs ``policy_gradient_loss``, ``clip_fraction`` (share with ``|r - 1| > eps``, for
    comparison with PPO) and ``clip_range``.
    """

    clip_range: ScheduleLike = 0.2
    """``eps`` (float or schedule). Mirrors the algorithm's ``clip_range``."""

    name: ClassVar[str] = "spo_surrogate"
    linked: ClassVar[dict[str, str]] = {"clip_range": "clip_range"}

    def __post_init__(self) -> None:
        check_number("clip_range", self.clip_range, low_inclusive=False, schedule=True)

    def __call__(self, batch: Minibatch) -> LossTerm:
        eps = at_least(value_at(self.clip_range, batch.progress_remaining), SPO_MIN_CLIP_RANGE)
        advantages, ratio = batch.advantages, batch.ratio
        objective = ratio * advantages - th.abs(advantages) / (2 * eps) * (ratio - 1) ** 2
        return policy_term(batch, objective, clip_range=eps, clip_fraction=batch.mean(outside_band(ratio, eps, eps)))


@dataclass
class SoftClipSurrogate(LossComponent):
    """A sigmoid gate instead of PPO's clip: P3O (Chen et al. 2022, arXiv:2205.10047) and SAPO
    (Gao et al. 2025, arXiv:2511.20347).

    ``L = -mean((4 / tau) sigmoid(tau (r - 1)) A)``, with ``tau = temperature`` where ``A > 0``
    and ``temperature_negative`` elsewhere (SAPO; ``None``: one temperature, P3O). The gate's
    slope ``4 sigmoid (1 - sigmoid)`` is 1 at ``r = 1``, so the gradient there is PPO's, and it
    fades smoothly as the ratio leaves 1 instead of stopping at a hard bound. Defaults: P3O's
    ``tau = 4`` (``taunow`` in the authors' code, raincchio/P3O); SAPO uses ``1.0`` and ``1.05``
    (verl, TRL). P3O adds an exact KL penalty (the ``p3o`` variant); SAPO does not.

    Logs ``policy_gradient_loss`` and ``soft_clip_weight``, the mean slope of the gate (1: the
    samples move as under PPO inside its band; near 0: as if clipped).
    """

    temperature: float = 4.0
    """``tau`` (> 0) for samples with ``A > 0``, and for all of them without ``temperature_negative``."""
    temperature_negative: float | None = None
    """``tau`` for samples with ``A <= 0``; ``None``: ``temperature``."""

    name: ClassVar[str] = "soft_clip_surrogate"

    def __post_init__(self) -> None:
        check_number("temperature", self.temperature, low_inclusive=False)
        check_number("temperature_negative", self.temperature_negative, low_inclusive=False, optional=True)

    def __call__(self, batch: Minibatch) -> LossTerm:
        advantages, ratio = batch.advantages, batch.ratio
        tau: th.Tensor | float = self.temperature
        if self.temperature_negative is not None:
            tau = th.where(advantages > 0, self.temperature, self.temperature_negative)
        gate = th.sigmoid(tau * (ratio - 1))
        with th.no_grad():
            slope = batch.mean(4 * gate * (1 - gate))
        return policy_term(batch, (4 / tau) * gate * advantages, soft_clip_weight=slope)


@dataclass
class CISPOSurrogate(LossComponent):
    """CISPO, clipped importance-sampling-weight policy optimisation (MiniMax-M1, arXiv:2506.13585).

    ``L = -mean(sg(clip(r, 1 - eps_low, 1 + eps_high)) A log pi(a|s))``: the importance weight is
    truncated and carries no gradient, so every sample keeps the policy-gradient direction
    ``A grad log pi`` (PPO's clip drops the gradient of clipped samples; TorchRL's ``CISPOLoss``
    does too, which is not this). Only the truncation limits how far the policy moves, so pair it
    with KL early stopping (the ``cispo`` variant). Defaults: ``eps_high = 0.2`` (verl's
    ``clip_ratio``) and no lower bound (the paper tunes only the upper one).

    Logs ``policy_gradient_loss`` (the value of this objective, which is not PPO's) and
    ``clip_fraction`` (share of samples whose weight was truncated).
    """

    clip_range_high: float = 0.2
    """``eps_high`` > 0: weights above ``1 + eps_high`` are truncated to it."""
    clip_range_low: float | None = None
    """``eps_low`` in (0, 1]: weights below ``1 - eps_low`` are raised to it; ``None``: no lower bound."""

    name: ClassVar[str] = "cispo_surrogate"

    def __post_init__(self) -> None:
        check_number("clip_range_high", self.clip_range_high, low_inclusive=False)
        check_number("clip_range_low", self.clip_range_low, low_inclusive=False, high=1.0, optional=True)

    def __call__(self, batch: Minibatch) -> LossTerm:
        ratio = batch.ratio
        low = 0.0 if self.clip_range_low is None else 1 - self.clip_range_low
        with th.no_grad():
            weight = th.clamp(ratio, low, 1 + self.clip_range_high)
            truncated = batch.mean(((ratio > 1 + self.clip_range_high) | (ratio < low)).float())
        return policy_term(batch, weight * batch.advantages * batch.log_prob, clip_fraction=truncated)


@dataclass
class LogProbClippedSurrogate(LossComponent):
    """COPG, the clipped-objective policy gradient (Markowitz and Staley 2023, arXiv:2311.05846).

    ``L = -mean(min(log pi A, clip(log pi, log pi_old + log(1 - eps), log pi_old + log(1 + eps)) A))``:
    PPO's clip applied to ``log pi`` instead of ``r``. The band is PPO's (``log`` is monotone, so
    ``log pi`` leaves it exactly when ``r`` leaves ``[1 - eps, 1 + eps]``), but inside it the
    gradient is the plain policy gradient ``A grad log pi``, with no importance weight ``r``; the
    paper shows this objective is on average more pessimistic than PPO's and explores more.
    ``eps = 0.2`` as PPO. The equation is the one the survey in ``shared/reference`` gives and the
    abstract describes ("a basic policy gradient, clipped in an equivalent fashion"); the paper's
    full text could not be read where this was written.

    Logs ``policy_gradient_loss`` (includes the constant ``mean(log pi_old A)``, so it is not
    comparable with PPO's), ``clip_fraction`` and ``clip_range``.
    """

    clip_range: ScheduleLike = 0.2
    """``eps`` (float or schedule, < 1). Mirrors the algorithm's ``clip_range``."""

    name: ClassVar[str] = "log_prob_clipped_surrogate"
    linked: ClassVar[dict[str, str]] = {"clip_range": "clip_range"}

    def __post_init__(self) -> None:
        check_number("clip_range", self.clip_range, low_inclusive=False, high=0.999, schedule=True)

    def __call__(self, batch: Minibatch) -> LossTerm:
        eps = value_at(self.clip_range, batch.progress_remaining)
        eps_t = th.as_tensor(eps, dtype=batch.log_prob.dtype, device=batch.log_prob.device)
        advantages, log_prob, old_log_prob = batch.advantages, batch.log_prob, batch.old_log_prob
        clipped = th.clamp(log_prob, old_log_prob + th.log1p(-eps_t), old_log_prob + th.log1p(eps_t))
        objective = th.min(log_prob * advantages, clipped * advantages)
        return policy_term(
            batch, objective, clip_range=eps, clip_fraction=batch.mean(outside_band(batch.ratio, eps, eps))
        )
