"""Policy-gradient surrogates: PPO's clipped objective and the variants proposed since.

Each returns ``-mean(objective)`` as its loss and logs ``policy_gradient_loss``; the ones with a
clip range also log ``clip_fraction``, the share of samples whose ratio left ``[1 - eps, 1 + eps]``
(the band of the objective, asymmetric for clip-higher), so variants compare on one statistic.
"""

import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch as th
from gymnasium import spaces

from sb3_ppo_variants.common.errors import HyperparameterError
from sb3_ppo_variants.common.validation import at_least, check_choice, check_number, value_at
from sb3_ppo_variants.losses.base import LossComponent, LossTerm, Minibatch, ScheduleLike
from sb3_ppo_variants.losses.kl import exact_kl


def _outside_band(ratio: th.Tensor, low: float, high: float) -> th.Tensor:
    with th.no_grad():
        return ((ratio < 1 - low) | (ratio > 1 + high)).float()


def _policy_term(batch: Minibatch, objective: th.Tensor, **stats: th.Tensor | float) -> LossTerm:
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
        clipped = th.clamp(ratio, 1 - eps_low, 1 + eps_high)
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
            stats["clip_fraction"] = batch.mean(_outside_band(ratio, eps_low, eps_high))
        return _policy_term(batch, surrogate, **stats)


@dataclass
class Surrogate(LossComponent):
    """The unclipped importance-sampled surrogate ``L = -mean(r A)`` (Schulman et al. 2015/2017).

    Alone it is a policy gradient with importance weights; with an adaptive
    :class:`~sb3_ppo_variants.losses.KLPenalty` it is **PPO-penalty** (Schulman et al. 2017,
    section 4, eq. 8, arXiv:1707.06347), the paper's alternative to clipping.

    Logs ``policy_gradient_loss``.
    """

    name: ClassVar[str] = "surrogate"

    def __call__(self, batch: Minibatch) -> LossTerm:
        return _policy_term(batch, batch.ratio * batch.advantages)


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
        return _policy_term(
            batch,
            objective,
            clip_range=eps,
            clip_fraction=batch.mean(_outside_band(ratio, eps, eps)),
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
        return _policy_term(
            batch, objective, kl=batch.mean(kl.detach()), rollback_fraction=batch.mean(triggered.float())
        )


SPO_MIN_CLIP_RANGE = 1e-6
"""The smallest ``eps`` SPO divides by."""


@dataclass
class SPOSurrogate(LossComponent):
    """SPO, simple policy optimization (Xie et al., ICML 2025, arXiv:2401.16025).

    ``L = -mean(r A - |A| / (2 eps) (r - 1)^2)``. The quadratic penalty has its optimum for
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
        return _policy_term(batch, objective, clip_range=eps, clip_fraction=batch.mean(_outside_band(ratio, eps, eps)))


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
        return _policy_term(batch, (4 / tau) * gate * advantages, soft_clip_weight=slope)


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
        return _policy_term(batch, weight * batch.advantages * batch.log_prob, clip_fraction=truncated)


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
        return _policy_term(
            batch, objective, clip_range=eps, clip_fraction=batch.mean(_outside_band(batch.ratio, eps, eps))
        )


TRUST_REGION_PROBABILITY_RANGE = (0.01, 0.99)
"""Old probabilities are clipped to this range before the bounds are solved, as the authors'
tabular solver does (near 0 or 1 the roots run to 0 and to ``1 / p``)."""


def trust_region_ratio_bounds(old_probability: th.Tensor, kl_range: float, iterations: int = 50) -> th.Tensor:
    """TRGPPO's per-sample ratio bounds for a discrete action of old probability ``p``: the two roots
    ``r`` of ``(1 - p) log((1 - p) / (1 - p r)) - p log r = delta``.

    That is ``KL(pi_old || pi)`` at a state when ``pi`` gives the action ``p r`` and rescales the
    other actions' probabilities, which is the smallest KL that moves the action's probability by
    ``r``; so the roots are the extreme ratios of the policies within KL ``delta`` (Wang et al.
    2019, the authors' ``KL2Clip_discrete``). Solved by bisection, in float64, on ``(0, 1)`` and
    ``(1, 1 / p)``, where the left side decreases then increases through 0 at ``r = 1``. Returns
    ``(lower, upper)`` stacked on the last dimension.
    """
    p = old_probability.detach().to(th.float64).clamp(*TRUST_REGION_PROBABILITY_RANGE)
    # Both roots at once, side by side: the lower one on (0, 1), where the excess is positive near 0
    # and -delta at 1; the upper one on (1, 1 / p), -delta at 1 and positive near 1 / p.
    both = th.cat((p, p))
    upper_root = th.cat((th.zeros_like(p, dtype=th.bool), th.ones_like(p, dtype=th.bool)))
    low = th.cat((th.zeros_like(p), th.ones_like(p)))
    high = th.cat((th.ones_like(p), 1 / p))
    for _ in range(iterations):
        middle = 0.5 * (low + high)
        excess = (1 - both) * th.log((1 - both) / (1 - both * middle)) - both * th.log(middle) - kl_range
        inside = excess < 0  # between the root and 1
        move_high = inside != upper_root  # the lower root is below an inside point, the upper one above
        low, high = th.where(move_high, low, middle), th.where(move_high, middle, high)
    lower, upper = (0.5 * (low + high)).split(len(p))
    return th.stack((lower, upper), dim=-1).to(old_probability.dtype)


def gaussian_trust_region_kl(clip_range: float, action_dims: int) -> float:
    """The KL at which TRGPPO's band for a diagonal Gaussian reaches PPO's ``1 + eps`` at the old
    mean (the authors' MuJoCo default, ``clipcontroltype='base-clip'`` in ``KL2Clip_reduce.py``):
    ``d (e^s - 1 - s) / 2`` with ``s = -2 log(1 + eps) / d``, the KL of shrinking every
    dimension's variance by ``e^s``."""
    shrink = -2.0 * math.log1p(clip_range) / action_dims
    return action_dims * (math.expm1(shrink) - shrink) / 2


@functools.lru_cache(maxsize=8)
def _unit_gaussian_trust_region(kl_range: float, points: int = 720) -> tuple[th.Tensor, th.Tensor]:
    """``(mu, log v)`` around the boundary ``KL(N(mu, v) || N(0, 1)) = kl_range``, i.e.
    ``v - 1 - log v + mu^2 = 2 kl_range``, at ``points`` angles (float64).

    Parameterised by an angle so the curve is smooth where ``mu`` turns: ``mu = sqrt(2 kl) sin t``
    and ``e^u - 1 - u = 2 kl cos^2 t`` with ``u = log v`` below 0 where ``cos t > 0`` (a narrower
    Gaussian) and above 0 elsewhere, solved by bisection on ``[-(c + 1), 0]`` and ``[0, c + 2 sqrt(c)]``."""
    angle = th.linspace(0.0, 2 * math.pi, points + 1, dtype=th.float64)[:-1]
    mean = math.sqrt(2 * kl_range) * th.sin(angle)
    level = 2 * kl_range * th.cos(angle) ** 2
    narrower = th.cos(angle) > 0
    low = th.where(narrower, -(level + 1), th.zeros_like(level))
    high = th.where(narrower, th.zeros_like(level), level + 2 * level.sqrt())
    for _ in range(60):
        middle = 0.5 * (low + high)
        inside = th.expm1(middle) - middle < level  # nearer 0 than the root
        low = th.where(inside & ~narrower, middle, th.where(~inside & narrower, middle, low))
        high = th.where(inside & narrower, middle, th.where(~inside & ~narrower, middle, high))
    return mean, 0.5 * (low + high)


def gaussian_trust_region_ratio_bounds(distance: th.Tensor, kl_range: float, action_dims: int) -> th.Tensor:
    """TRGPPO's ratio bounds for an action of a diagonal Gaussian policy, as the authors' code
    computes them (``KL2Clip_reduce_v3``): the ``d``-dimensional problem is reduced to one
    dimension, where the old policy is ``N(0, 1)``, the action sits at ``distance``
    ``= |(a - mu_old) / sigma_old| / sqrt(d)`` and the trust region is
    ``KL(pi || pi_old) <= delta / d``; the extreme ratios ``pi(a) / pi_old(a)`` there, raised to
    the power ``d``, are the bounds. The authors tabulate the one-dimensional extremes (or fit a
    network to them); here they are taken over 720 points of the region's boundary, where both
    extremes lie. Returns ``(lower, upper)`` stacked on the last dimension.

    Note the KL's direction: ``KL(pi || pi_old)`` for the Gaussian, as the authors' solver
    (``prepare_data_train.py``: ``-log v + v + mu^2 - 1 = 2 delta`` for ``N(mu, v)`` against
    ``N(0, 1)``), where their ``Discrete`` solver bounds ``KL(pi_old || pi)``.
    """
    mean, log_variance = (t.to(distance.device) for t in _unit_gaussian_trust_region(kl_range / action_dims))
    x = distance.detach().to(th.float64).unsqueeze(-1)
    log_ratio = -0.5 * log_variance - (x - mean) ** 2 / (2 * th.exp(log_variance)) + x**2 / 2
    bounds = th.stack((log_ratio.min(dim=-1).values, log_ratio.max(dim=-1).values), dim=-1)
    return th.exp(action_dims * bounds).to(distance.dtype)


@dataclass
class TrustRegionGuidedSurrogate(LossComponent):
    """TRGPPO, trust-region-guided PPO (Wang et al., NeurIPS 2019, arXiv:1901.10314), as the
    authors' released code runs it (wangyuhuix/TRGPPO, ``baselines/TRPPO/ppo2.py``,
    ``ClipType.kl2clip``).

    ``L = -mean(min(r A, clip(r, l, u) A))`` with per-sample bounds ``l, u``: the extreme ratios
    of the policies within a KL trust region of size ``delta`` around the old policy at that
    sample. The band is widest for actions the old policy found unlikely, which keeps exploring
    them.

    - ``Discrete``: the bounds depend only on the old probability ``p`` of the action, which the
      rollout stores (see :func:`trust_region_ratio_bounds`, ``KL(pi_old || pi) <= delta``;
      the authors' ``KL2Clip_discrete``). ``delta = 0.001`` (the authors' Atari value), and the
      band is annealed linearly to nothing over training (``l -> 1 - (1 - l) f``,
      ``u -> 1 + (u - 1) f`` with ``f`` the progress remaining), as their code does for Discrete.
    - ``Box`` (a diagonal Gaussian, gSDE's included): the bounds depend on the action's distance
      from the old mean in old standard deviations (see :func:`gaussian_trust_region_ratio_bounds`;
      the authors' ``KL2Clip_reduce_v3``), read from the pre-update policy (one more forward pass
      of the actor per minibatch). ``delta`` defaults to the authors' MuJoCo choice: the KL at which
      the band at the old mean reaches PPO's ``1 + eps`` (:func:`gaussian_trust_region_kl`), so
      ``eps`` sets the trust region's size; no annealing.

    The paper writes the band as PPO's widened, ``l = min(l_delta, 1 - eps)`` and
    ``u = max(u_delta, 1 + eps)``; the authors' code clips to the trust-region bounds alone. That is
    the default here; ``widen_ppo_band=True`` gives the paper's formula. Other action spaces
    (``MultiDiscrete``, ``MultiBinary``, a squashed Gaussian) are refused: the authors' code has no
    bounds for them.

    Logs ``policy_gradient_loss``, ``clip_fraction`` (share outside the sample's own band),
    ``clip_range``, ``trust_region_lower`` and ``trust_region_upper`` (mean bounds).
    """

    clip_range: ScheduleLike = 0.2
    """``eps`` (float or schedule). Mirrors the algorithm's ``clip_range``. For ``Box`` actions it sets
    ``delta`` when ``kl_range`` is ``None``; with ``widen_ppo_band`` it is PPO's band the bounds widen."""
    kl_range: float | None = None
    """``delta`` > 0, the KL that defines each sample's trust region; ``None``: the authors' defaults,
    0.001 for ``Discrete`` and the ``eps``-matched KL for ``Box`` (above)."""
    widen_ppo_band: bool = False
    """The paper's formula, ``[min(l, 1 - eps), max(u, 1 + eps)]``, instead of the authors' code's ``[l, u]``."""
    anneal: bool | None = None
    """Shrink the band linearly to nothing over training; ``None``: as the authors' code, ``Discrete`` only."""

    name: ClassVar[str] = "trust_region_guided_surrogate"
    linked: ClassVar[dict[str, str]] = {"clip_range": "clip_range"}

    DISCRETE_KL_RANGE: ClassVar[float] = 0.001

    def __post_init__(self) -> None:
        check_number("clip_range", self.clip_range, low_inclusive=False, schedule=True)
        check_number("kl_range", self.kl_range, low_inclusive=False, optional=True)
        self._gaussian_dims: int | None = None  # the action's dimensions for Box; None for Discrete
        self._space_known = False  # until check_model has seen the model

    @property
    def needs_old_distribution(self) -> bool:  # type: ignore[override]
        return self._gaussian_dims is not None or not self._space_known

    def check_model(self, model: Any) -> None:
        space = model.action_space
        squashed = bool(getattr(model.policy, "squash_output", False)) if getattr(model, "policy", None) else False
        if isinstance(space, spaces.Discrete):
            self._gaussian_dims = None
        elif isinstance(space, spaces.Box) and len(space.shape) == 1 and not squashed:
            self._gaussian_dims = int(space.shape[0])
        else:
            raise HyperparameterError(
                f"loss component {self.name!r} is invalid for action space {space}"
                f"{' with a squashed Gaussian' if squashed else ''}: accepted spaces are Discrete and Box "
                "(a diagonal Gaussian, unsquashed), where the authors' code defines the trust-region bounds."
            )
        self._space_known = True

    def __call__(self, batch: Minibatch) -> LossTerm:
        eps = value_at(self.clip_range, batch.progress_remaining)
        advantages, ratio = batch.advantages, batch.ratio
        gaussian = self._gaussian_dims is not None
        with th.no_grad():
            if gaussian:
                old = batch.old_distribution
                assert old is not None, "the pre-update distribution is asked for by needs_old_distribution"
                dims = self._gaussian_dims
                distance = ((batch.actions - old.loc) / old.scale).reshape(len(ratio), -1).norm(dim=-1) / math.sqrt(
                    dims
                )
                kl = self.kl_range if self.kl_range is not None else gaussian_trust_region_kl(float(eps), dims)
                bounds = gaussian_trust_region_ratio_bounds(distance, kl, dims)
            else:
                kl = self.kl_range if self.kl_range is not None else self.DISCRETE_KL_RANGE
                bounds = trust_region_ratio_bounds(th.exp(batch.old_log_prob), kl)
            lower, upper = bounds[..., 0], bounds[..., 1]
            if self.anneal if self.anneal is not None else not gaussian:
                remaining = batch.progress_remaining
                lower, upper = 1 - (1 - lower) * remaining, 1 + (upper - 1) * remaining
            if self.widen_ppo_band:
                lower, upper = th.clamp(lower, max=1 - eps), th.clamp(upper, min=1 + eps)
            outside = ((ratio < lower) | (ratio > upper)).float()
        clipped = th.minimum(th.maximum(ratio, lower), upper)
        surrogate = th.min(advantages * ratio, advantages * clipped)
        return _policy_term(
            batch,
            surrogate,
            clip_range=eps,
            clip_fraction=batch.mean(outside),
            trust_region_lower=batch.mean(lower),
            trust_region_upper=batch.mean(upper),
        )
