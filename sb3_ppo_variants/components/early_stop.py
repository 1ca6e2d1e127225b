"""Stopping a ``train()`` call's epochs on how far the ratio has moved, rather than on a KL."""

from dataclasses import dataclass
from typing import ClassVar

import torch as th

from sb3_ppo_variants.common.errors import HyperparameterError
from sb3_ppo_variants.common.validation import check_choice, check_number
from sb3_ppo_variants.components.hooks import TrainingContext
from sb3_ppo_variants.components.protocol import LossComponent, LossTerm, Minibatch

RATIO_STATISTICS = ("mean", "median")


@dataclass
class RatioDeviationEarlyStop(LossComponent):
    """ESPO's stopping rule (Sun et al. 2022, "You May Not Need Ratio Clipping in PPO",
    arXiv:2202.00079): end the epochs of a ``train()`` call once a minibatch's
    ``mean(|r - 1|)`` (or its median) exceeds ``max_deviation``.

    With the unclipped surrogate it replaces clipping: the policy moves freely until the ratio
    has drifted by ``max_deviation`` on average, so the number of updates adapts to each rollout
    (the ``espo`` variant allows more epochs than PPO and lets this rule end them). Defaults are
    RL-X's ESPO (``max_ratio_delta = 0.25``, ``delta_calc_operator = "mean"``). As SB3's KL stop,
    the minibatch that crosses the threshold is not applied (RL-X applies it, then stops).
    Adds no loss term.

    Logs ``ratio_deviation`` (the statistic, averaged over the call's minibatches).
    """

    max_deviation: float = 0.25
    """``delta`` > 0: stop when the statistic of ``|r - 1|`` exceeds it."""
    statistic: str = "mean"
    """``"mean"`` or ``"median"`` of ``|r - 1|`` over the minibatch."""
    max_updates: int | None = None
    """End the call after this many minibatch updates as well (RL-X's ``max_epochs = 300``, counted in
    minibatches of 64); ``None``: the algorithm's ``n_epochs`` alone bound them."""

    name: ClassVar[str] = "ratio_deviation_early_stop"

    def __post_init__(self) -> None:
        check_number("max_deviation", self.max_deviation, low_inclusive=False)
        check_choice("statistic", self.statistic, RATIO_STATISTICS)
        if self.max_updates is not None and (
            isinstance(self.max_updates, bool) or not isinstance(self.max_updates, int) or self.max_updates < 1
        ):
            raise HyperparameterError(
                f"max_updates={self.max_updates!r} is invalid: accepted values are integers >= 1, or None."
            )
        self._updates = 0

    def before_train(self, context: TrainingContext) -> None:
        self._updates = 0

    def _deviation(self, batch: Minibatch) -> th.Tensor:
        with th.no_grad():
            deviation = th.abs(batch.ratio - 1)
            if self.statistic == "mean":
                return batch.mean(deviation)
            return th.median(deviation if batch.mask is None else deviation[batch.mask])

    def __call__(self, batch: Minibatch) -> LossTerm:
        return LossTerm(None, {"ratio_deviation": self._deviation(batch)})

    def stop_early(self, batch: Minibatch) -> str | None:
        if self.max_updates is not None and self._updates >= self.max_updates:
            return f"reaching {self.max_updates} minibatch updates"
        deviation = self._deviation(batch).item()
        if deviation > self.max_deviation:
            return f"reaching a ratio deviation of {deviation:.2f}"
        self._updates += 1
        return None
