"""Policy-gradient surrogates."""

from dataclasses import dataclass
from typing import ClassVar

import torch as th

from sb3_ppo_variants.common.validation import check_number, value_at
from sb3_ppo_variants.losses.base import LossComponent, LossTerm, Minibatch, ScheduleLike


@dataclass
class ClippedSurrogate(LossComponent):
    """PPO's clipped surrogate objective (Schulman et al. 2017, eq. 7, arXiv:1707.06347).

    ``L = -mean(min(r A, clip(r, 1 - eps, 1 + eps) A))`` with ``r = pi / pi_old``.

    **Dual clip** (Ye et al., AAAI 2020, eq. 4, arXiv:1912.09729): with ``dual_clip = c > 1``,
    samples with ``A < 0`` use ``max(min(r A, clip(r, 1 - eps, 1 + eps) A), c A)``. This bounds
    the objective below when a large ratio meets a negative advantage, where plain clipping
    leaves ``r A`` unbounded.

    Logs ``policy_gradient_loss``, ``clip_fraction`` (share of samples with ``|r - 1| > eps``),
    ``clip_range``, and with dual clipping ``dual_clip_fraction`` (share of samples bounded by ``c A``).
    """

    clip_range: ScheduleLike = 0.2
    """``eps``: how far the ratio may move before the objective stops rewarding it; a float or a
    schedule of progress remaining. Mirrors the algorithm's ``clip_range``."""
    dual_clip: float | None = None
    """``c`` (> 1; the paper uses 3), or ``None`` for plain PPO clipping."""

    name: ClassVar[str] = "clipped_surrogate"
    linked: ClassVar[dict[str, str]] = {"clip_range": "clip_range"}

    def __post_init__(self) -> None:
        check_number("clip_range", self.clip_range, low_inclusive=False, schedule=True)
        check_number("dual_clip", self.dual_clip, low=1.0, low_inclusive=False, optional=True)

    def __call__(self, batch: Minibatch) -> LossTerm:
        eps = value_at(self.clip_range, batch.progress_remaining)
        advantages, ratio = batch.advantages, batch.ratio
        surrogate = th.min(advantages * ratio, advantages * th.clamp(ratio, 1 - eps, 1 + eps))
        stats: dict[str, th.Tensor | float] = {"clip_range": eps}
        if self.dual_clip is not None:
            lower_bound = self.dual_clip * advantages
            bounded = (advantages < 0) & (surrogate < lower_bound)
            surrogate = th.where(bounded, lower_bound, surrogate)
            stats["dual_clip_fraction"] = batch.mean(bounded.float())
        policy_loss = -batch.mean(surrogate)
        with th.no_grad():
            stats["clip_fraction"] = batch.mean((th.abs(ratio - 1) > eps).float())
        return LossTerm(policy_loss, {"policy_gradient_loss": policy_loss, **stats})
