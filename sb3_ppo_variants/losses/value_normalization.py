"""Value normalisation: the critic predicts values in units of the returns' running statistics."""

from dataclasses import dataclass
from typing import ClassVar

import torch as th

from sb3_ppo_variants.common.hooks import TrainingContext
from sb3_ppo_variants.common.validation import check_number
from sb3_ppo_variants.losses.base import LossComponent, LossTerm, Minibatch


@dataclass
class ValueNormalization(LossComponent):
    """The critic predicts normalised values ``(v - mu) / sigma`` (MAPPO's ValueNorm: Yu et al. 2021,
    arXiv:2103.01955, ``onpolicy/utils/valuenorm.py`` of marlbenchmark/on-policy; sample-factory's
    ``normalize_returns``, on by default there).

    ``mu`` and ``sigma`` are debiased exponential moving averages of the returns' mean and mean
    square (decay ``beta``; the variance is floored at ``min_variance``, as MAPPO's code does),
    updated once per ``train()`` call from the rollout's returns, before the epochs (MAPPO updates
    them per minibatch). The loop applies the transform everywhere a value appears
    (:class:`~sb3_ppo_variants.common.hooks.TrainingHook`): rollouts, time-limit bootstrapping and
    GAE see ``sigma x + mu`` of the critic's output ``x``; the value loss compares ``x`` with the
    normalised returns, so a value clip range is in normalised units. The statistics are tensors,
    saved with the model. Adds no loss term.

    Logs ``value_norm_mean`` and ``value_norm_std``.
    """

    beta: float = 0.99999
    """Decay of the moving averages (MAPPO's default)."""
    min_variance: float = 1e-2
    """Floor of the variance estimate (MAPPO's ``clamp(min=1e-2)``)."""
    epsilon: float = 1e-5
    """Floor of the debiasing term."""

    name: ClassVar[str] = "value_normalization"

    def __post_init__(self) -> None:
        check_number("beta", self.beta, high=1.0)
        check_number("min_variance", self.min_variance, low_inclusive=False)
        check_number("epsilon", self.epsilon, low_inclusive=False)
        self.running_mean = th.zeros(())
        self.running_mean_square = th.zeros(())
        self.debiasing_term = th.zeros(())

    def mean_and_std(self) -> tuple[th.Tensor, th.Tensor]:
        """The debiased statistics."""
        debiasing = self.debiasing_term.clamp(min=self.epsilon)
        mean = self.running_mean / debiasing
        variance = (self.running_mean_square / debiasing - mean**2).clamp(min=self.min_variance)
        return mean, variance.sqrt()

    def before_train(self, context: TrainingContext) -> None:
        returns = th.as_tensor(context.rollout_buffer.returns, dtype=th.float32).flatten()
        self.running_mean.mul_(self.beta).add_(returns.mean() * (1 - self.beta))
        self.running_mean_square.mul_(self.beta).add_((returns**2).mean() * (1 - self.beta))
        self.debiasing_term.mul_(self.beta).add_(1 - self.beta)

    def __call__(self, batch: Minibatch) -> LossTerm:
        mean, std = self.mean_and_std()
        return LossTerm(None, {"value_norm_mean": mean, "value_norm_std": std})

    def normalize_values(self, values: th.Tensor) -> th.Tensor:
        mean, std = self.mean_and_std()
        return (values - mean.to(values.device)) / std.to(values.device)

    def denormalize_values(self, values: th.Tensor) -> th.Tensor:
        mean, std = self.mean_and_std()
        return values * std.to(values.device) + mean.to(values.device)
