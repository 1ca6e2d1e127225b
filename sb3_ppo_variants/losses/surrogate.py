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

    Logs ``policy_gradient_loss``, ``clip_fraction`` (share of samples with ``|r - 1| > eps``)
    and ``clip_range``.
    """

    clip_range: ScheduleLike = 0.2
    """``eps``: how far the ratio may move before the objective stops rewarding it; a float or a
    schedule of progress remaining. Mirrors the algorithm's ``clip_range``."""

    name: ClassVar[str] = "clipped_surrogate"
    linked: ClassVar[dict[str, str]] = {"clip_range": "clip_range"}

    def __post_init__(self) -> None:
        check_number("clip_range", self.clip_range, low_inclusive=False, schedule=True)

    def __call__(self, batch: Minibatch) -> LossTerm:
        eps = value_at(self.clip_range, batch.progress_remaining)
        advantages, ratio = batch.advantages, batch.ratio
        surrogate = th.min(advantages * ratio, advantages * th.clamp(ratio, 1 - eps, 1 + eps))
        policy_loss = -batch.mean(surrogate)
        with th.no_grad():
            clip_fraction = batch.mean((th.abs(ratio - 1) > eps).float())
        return LossTerm(
            policy_loss,
            {"policy_gradient_loss": policy_loss, "clip_fraction": clip_fraction, "clip_range": eps},
        )
