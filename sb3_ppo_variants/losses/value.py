"""Value-function losses."""

from dataclasses import dataclass
from typing import ClassVar

import torch as th

from sb3_ppo_variants.common.validation import check_number, value_at
from sb3_ppo_variants.losses.base import LossComponent, LossTerm, Minibatch, ScheduleLike


@dataclass
class ValueLoss(LossComponent):
    """Squared error of the value prediction against the GAE(lambda) returns, weighted by ``coef``.

    ``L = coef * mean((R - V)^2)``. With ``clip_range`` set, the prediction is first clipped
    around the value recorded at collection time, ``V_clip = V_old + clip(V - V_old, -c, c)``,
    as SB3 and OpenAI's baselines do (Schulman et al. 2017's implementation; see Engstrom et al.
    2020, arXiv:2005.12729, on its effect). This clipping depends on the reward scale.

    Logs ``value_loss`` (unweighted) and ``clip_range_vf`` when clipping.
    """

    coef: float = 0.5
    """Weight of the value loss in the total loss. Mirrors the algorithm's ``vf_coef``."""
    clip_range: ScheduleLike | None = None
    """``c``, or ``None`` for no clipping; a float or a schedule. Mirrors ``clip_range_vf``."""

    name: ClassVar[str] = "value"
    linked: ClassVar[dict[str, str]] = {"coef": "vf_coef", "clip_range": "clip_range_vf"}

    def __post_init__(self) -> None:
        check_number("coef", self.coef)
        check_number("clip_range", self.clip_range, low_inclusive=False, schedule=True, optional=True)

    def __call__(self, batch: Minibatch) -> LossTerm:
        values = batch.values
        stats = {}
        if self.clip_range is not None:
            clip = value_at(self.clip_range, batch.progress_remaining)
            values = batch.old_values + th.clamp(values - batch.old_values, -clip, clip)
            stats["clip_range_vf"] = clip
        value_loss = batch.mean((batch.returns - values) ** 2)
        return LossTerm(self.coef * value_loss, {"value_loss": value_loss, **stats})
