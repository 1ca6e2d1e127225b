"""Value normalisation: the critic predicts values in units of the returns' running statistics."""

from dataclasses import dataclass
from typing import ClassVar

import torch as th

from sb3_ppo_variants.common.errors import HyperparameterError
from sb3_ppo_variants.common.validation import check_choice, check_number
from sb3_ppo_variants.components.hooks import TrainingContext
from sb3_ppo_variants.components.protocol import LossComponent, LossTerm, Minibatch


@dataclass
class ValueNormalization(LossComponent):
    """The critic predicts normalised values ``(v - mu) / sigma`` (MAPPO's ValueNorm: Yu et al. 2021,
    arXiv:2103.01955, ``onpolicy/utils/valuenorm.py`` of marlbenchmark/on-policy; sample-factory's
    ``normalize_returns``, on by default there).

    ``mu`` and ``sigma`` are debiased exponential moving averages of the returns' mean and mean
    square (decay ``beta``; the variance is floored at ``min_variance``, as MAPPO's code does),
    updated once per ``train()`` call from the rollout's returns, before the epochs (MAPPO updates
    them per minibatch). The loop applies the transform everywhere a value appears
    (:class:`~sb3_ppo_variants.components.hooks.TrainingHook`): rollouts, time-limit bootstrapping and
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
    preserve_outputs: bool = False
    """PopArt (van Hasselt et al. 2016, arXiv:1602.07714, eq. 6; Hessel et al. 2019,
    arXiv:1809.04474): when the statistics move from ``(mu, sigma)`` to ``(mu', sigma')``, rescale
    the critic's last layer (``policy.value_net``), ``W <- W sigma / sigma'`` and
    ``b <- (sigma b + mu - mu') / sigma'``, so its return-scale predictions are unchanged and only
    the targets move."""

    name: ClassVar[str] = "value_normalization"

    def __post_init__(self) -> None:
        check_number("beta", self.beta, high=1.0)
        check_number("min_variance", self.min_variance, low_inclusive=False)
        check_number("epsilon", self.epsilon, low_inclusive=False)
        check_choice("preserve_outputs", self.preserve_outputs, (True, False))
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
        old_mean, old_std = self.mean_and_std()
        returns = th.as_tensor(context.rollout_buffer.returns, dtype=th.float32).flatten()
        self.running_mean.mul_(self.beta).add_(returns.mean() * (1 - self.beta))
        self.running_mean_square.mul_(self.beta).add_((returns**2).mean() * (1 - self.beta))
        self.debiasing_term.mul_(self.beta).add_(1 - self.beta)
        if self.preserve_outputs:
            self._preserve_outputs(context.policy.value_net, old_mean, old_std)

    def _preserve_outputs(self, value_net: th.nn.Module, old_mean: th.Tensor, old_std: th.Tensor) -> None:
        if not isinstance(value_net, th.nn.Linear):
            raise HyperparameterError(
                f"preserve_outputs=True needs a policy whose value_net is a torch.nn.Linear, not "
                f"{type(value_net).__name__}: accepted values are False for this policy."
            )
        mean, std = self.mean_and_std()
        with th.no_grad():
            device = value_net.weight.device
            value_net.weight.mul_((old_std / std).to(device))
            if value_net.bias is not None:
                value_net.bias.mul_(old_std.to(device)).add_((old_mean - mean).to(device)).div_(std.to(device))

    def __call__(self, batch: Minibatch) -> LossTerm:
        mean, std = self.mean_and_std()
        return LossTerm(None, {"value_norm_mean": mean, "value_norm_std": std})

    def normalize_values(self, values: th.Tensor) -> th.Tensor:
        mean, std = self.mean_and_std()
        return (values - mean.to(values.device)) / std.to(values.device)

    def denormalize_values(self, values: th.Tensor) -> th.Tensor:
        mean, std = self.mean_and_std()
        return values * std.to(values.device) + mean.to(values.device)
