"""Value-function losses."""

from dataclasses import dataclass
from typing import ClassVar

import torch as th
import torch.nn.functional as F

from sb3_ppo_variants.common.validation import check_choice, check_number, value_at
from sb3_ppo_variants.components.protocol import LossComponent, LossTerm, Minibatch, ScheduleLike

VALUE_ERRORS = ("squared", "huber", "l1")
VALUE_CLIP_MODES = ("prediction", "pessimistic", "error")


@dataclass
class ValueLoss(LossComponent):
    """Regression of the value prediction on the GAE(lambda) returns, weighted by ``coef``.

    ``L = coef * mean(l(R - V))`` with ``l`` the squared error (SB3), the Huber loss
    (``0.5 x^2`` for ``|x| <= delta``, ``delta (|x| - delta / 2)`` beyond; Huber 1964), which
    bounds the gradient of large errors when returns are not normalised, or the absolute error
    (TorchRL's ``loss_critic_type="l1"``), whose gradient is the error's sign.

    With ``clip_range = c`` set, ``clip_mode`` says how the value is kept near ``V_old``, the
    prediction recorded at collection time:

    - ``"prediction"`` (SB3): ``l(R - V_clip)`` with ``V_clip = V_old + clip(V - V_old, -c, c)``;
    - ``"pessimistic"`` (OpenAI baselines' ppo2, CleanRL): ``max(l(R - V), l(R - V_clip))``,
      studied by Engstrom et al. 2020 (arXiv:2005.12729) and Andrychowicz et al. 2021
      (arXiv:2006.05990), who found it does not help;
    - ``"error"`` (RLlib's ``vf_clip_param``): ``min(l(R - V), c)``, a cap on each sample's loss.

    All three depend on the reward scale. Logs ``value_loss`` (unweighted) and, when clipping,
    ``clip_range_vf`` and ``value_clip_fraction`` (share of samples whose loss the clip changed).
    """

    coef: float = 0.5
    """Weight of the value loss in the total loss. Mirrors the algorithm's ``vf_coef``."""
    clip_range: ScheduleLike | None = None
    """``c``, or ``None`` for no clipping; a float or a schedule. Mirrors ``clip_range_vf``."""
    clip_mode: str = "prediction"
    """``"prediction"``, ``"pessimistic"`` or ``"error"`` (see above)."""
    error: str = "squared"
    """``"squared"``, ``"huber"`` or ``"l1"``."""
    huber_delta: float = 1.0
    """Where the Huber loss turns from quadratic to linear."""

    name: ClassVar[str] = "value"
    trains_values: ClassVar[bool] = True
    linked: ClassVar[dict[str, str]] = {"coef": "vf_coef", "clip_range": "clip_range_vf"}

    def __post_init__(self) -> None:
        check_number("coef", self.coef)
        check_number("clip_range", self.clip_range, low_inclusive=False, schedule=True, optional=True)
        check_choice("clip_mode", self.clip_mode, VALUE_CLIP_MODES)
        check_choice("error", self.error, VALUE_ERRORS)
        check_number("huber_delta", self.huber_delta, low_inclusive=False)

    def _error(self, returns: th.Tensor, values: th.Tensor) -> th.Tensor:
        if self.error == "huber":
            return F.huber_loss(values, returns, reduction="none", delta=self.huber_delta)
        if self.error == "l1":
            return th.abs(returns - values)
        return (returns - values) ** 2

    def __call__(self, batch: Minibatch) -> LossTerm:
        values, returns = batch.values, batch.returns
        if self.clip_range is None:
            value_loss = batch.mean(self._error(returns, values))
            return LossTerm(self.coef * value_loss, {"value_loss": value_loss})
        clip = value_at(self.clip_range, batch.progress_remaining)
        if self.clip_mode == "error":
            unclipped = self._error(returns, values)
            per_sample = th.clamp(unclipped, max=clip)
            changed = unclipped > clip
        else:
            clipped_values = batch.old_values + th.clamp(values - batch.old_values, -clip, clip)
            clipped = self._error(returns, clipped_values)
            if self.clip_mode == "prediction":
                per_sample = clipped
                changed = th.abs(values - batch.old_values) > clip
            else:
                unclipped = self._error(returns, values)
                per_sample = th.max(unclipped, clipped)
                changed = clipped > unclipped
        value_loss = batch.mean(per_sample)
        stats = {"value_loss": value_loss, "clip_range_vf": clip, "value_clip_fraction": batch.mean(changed.float())}
        return LossTerm(self.coef * value_loss, stats)
