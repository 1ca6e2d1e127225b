"""A learning rate adapted to the KL between the pre-update and the updated policy."""

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

from sb3_ppo_variants.common.validation import check_choice, check_number
from sb3_ppo_variants.components.kl import KL_ESTIMATORS, kl_per_sample
from sb3_ppo_variants.components.protocol import LossComponent, LossTerm, Minibatch


@dataclass
class KLAdaptiveLearningRate(LossComponent):
    """The learning rate divided by ``factor`` when the KL passes ``kl_factor * target`` and
    multiplied by it below ``target / kl_factor``, within ``[min_learning_rate, max_learning_rate]``.

    rsl_rl's ``schedule="adaptive"`` (legged_gym; Rudin et al. 2021, arXiv:2109.11978), whose
    defaults these are (``desired_kl = 0.01``, factors 2 and 1.5, bounds 1e-5 and 1e-2); skrl,
    rl_games and sample-factory have the same rule. rsl_rl adapts after every minibatch; here the
    rule runs once per ``train()`` call, on the call's mean KL, and the factor multiplies the
    scheduled learning rate (of every parameter group) from the next call on. Adds no loss term.

    Logs ``adaptive_lr_kl`` (the KL the rule reads) and ``learning_rate_scale``.
    """

    target: float = 0.01
    """The KL per update the rule aims for (``desired_kl``)."""
    kl_factor: float = 2.0
    """Act when the KL is above ``kl_factor * target`` or below ``target / kl_factor``."""
    factor: float = 1.5
    """Divide or multiply the learning rate by this."""
    min_learning_rate: float = 1e-5
    max_learning_rate: float = 1e-2
    estimator: str = "exact"
    """How the KL is estimated (see :mod:`sb3_ppo_variants.components.kl`); rsl_rl's is the exact
    Gaussian KL."""
    scale: float = 1.0
    """State: the factor on the scheduled learning rate, saved with the model."""

    name: ClassVar[str] = "kl_adaptive_learning_rate"

    def __post_init__(self) -> None:
        check_number("target", self.target, low_inclusive=False)
        check_number("kl_factor", self.kl_factor, low=1.0)
        check_number("factor", self.factor, low=1.0)
        check_number("min_learning_rate", self.min_learning_rate)
        check_number("max_learning_rate", self.max_learning_rate, low=self.min_learning_rate)
        check_choice("estimator", self.estimator, KL_ESTIMATORS)
        check_number("scale", self.scale, low_inclusive=False)
        self._scheduled: float | None = None

    @property
    def needs_old_distribution(self) -> bool:  # type: ignore[override]
        return self.estimator == "exact"

    def __call__(self, batch: Minibatch) -> LossTerm:
        return LossTerm(None, {"adaptive_lr_kl": batch.mean(kl_per_sample(batch, self.estimator)).detach()})

    def learning_rate(self, learning_rate: float) -> float:
        self._scheduled = learning_rate
        return min(max(learning_rate * self.scale, self.min_learning_rate), self.max_learning_rate)

    def after_train(self, stats: Mapping[str, float]) -> dict[str, float]:
        kl = stats["adaptive_lr_kl"]
        if kl > self.kl_factor * self.target:
            self.scale /= self.factor
        elif 0.0 < kl < self.target / self.kl_factor:
            self.scale *= self.factor
        if self._scheduled:  # no wind-up past the bounds
            low, high = self.min_learning_rate / self._scheduled, self.max_learning_rate / self._scheduled
            self.scale = min(max(self.scale, low), high)
        return {"learning_rate_scale": self.scale}
