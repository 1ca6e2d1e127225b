"""TRGPPO: PPO clipped to trust-region-guided bounds (Wang et al. 2019, "Trust Region-Guided
Proximal Policy Optimization", arXiv:1901.10314), as the authors' released code computes them
(wangyuhuix/TRGPPO): the per-sample extremes of the ratio within a KL ball, for discrete actions
and for diagonal Gaussians."""

import functools
import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch as th
from gymnasium import spaces

from sb3_ppo_variants.common.errors import HyperparameterError
from sb3_ppo_variants.common.validation import check_number, value_at
from sb3_ppo_variants.components.protocol import LossComponent, LossTerm, Minibatch, ScheduleLike
from sb3_ppo_variants.components.surrogate import policy_term

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
    host_fields: ClassVar[tuple[str, ...]] = ("clip_range",)  # a Gaussian's band is tabulated for its KL

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
        return policy_term(
            batch,
            surrogate,
            clip_range=eps,
            clip_fraction=batch.mean(outside),
            trust_region_lower=batch.mean(lower),
            trust_region_upper=batch.mean(upper),
        )
