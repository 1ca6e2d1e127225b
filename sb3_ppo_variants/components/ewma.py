"""PPO-EWMA: the clip anchored on an average of past policies rather than on the behaviour policy."""

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch as th

from sb3_ppo_variants.common.validation import check_number, value_at
from sb3_ppo_variants.components.hooks import TrainingContext
from sb3_ppo_variants.components.protocol import LossComponent, LossTerm, Minibatch, ScheduleLike


@dataclass
class EWMAProximalSurrogate(LossComponent):
    """PPO-EWMA (Hilton et al., NeurIPS 2022, "Batch size-invariance for policy optimization",
    arXiv:2110.00641; openai/ppo-ewma ``compute_losses``): the proximal policy that the clip keeps
    the update near is an exponentially weighted moving average (EWMA) of past policies, decoupled
    from the behaviour policy ``pi_b`` that collected the data:

    ``L = -mean(min(A pi / pi_b, A clip(pi / pi_prox, 1 - eps, 1 + eps) pi_prox / pi_b))``.

    ``pi / pi_b`` is capped at ``max_importance_weight`` (in log space, as the authors' code does).
    The average is the authors' bias-corrected EWMA of the weights (``EwmaModel`` in their
    ``ppg.py``), moved after every optimizer step: ``W <- beta W + 1``,
    ``theta_prox <- theta_prox + (theta - theta_prox) / W``. ``W`` starts at 1, as theirs
    (``total_weight = 1``): the initial policy counts like one step, so after the first step the
    average is ``(beta theta_0 + theta_1) / (beta + 1)`` rather than ``theta_1``. With
    ``pi_prox = pi_b`` the loss is PPO's. ``decay=None`` derives ``beta`` as the paper suggests,
    from the proximal policy's age: PPO's anchor (the behaviour policy) is on average
    ``a = (updates per call - 1) / 2`` steps old, and ``beta = a / (1 + a)`` gives the EWMA the
    same centre of mass. The average is tensor state, saved with the model; each minibatch costs
    one more forward pass (of the average). Under ``compile=True`` the update takes the
    ``backward`` path, with a warning: ``torch.func`` cannot run the average's forward pass inside
    the one graph ("Cannot access storage of TensorWrapper").

    Logs ``policy_gradient_loss``, ``clip_fraction`` (share of ``pi / pi_prox`` outside the band),
    ``clip_range``, ``proximal_kl`` (k3 estimate of ``KL(pi_prox || pi)``) and ``ewma_decay``.
    """

    clip_range: ScheduleLike = 0.2
    """``eps`` around the proximal policy (float or schedule). Mirrors the algorithm's ``clip_range``."""
    decay: float | None = None
    """``beta`` in [0, 1) of the weights' EWMA; ``None``: from the proximal policy's age (above)."""
    max_importance_weight: float = 100.0
    """Cap of ``pi / pi_b`` (the authors' ``imp_samp_max``)."""

    name: ClassVar[str] = "ewma_proximal_surrogate"
    linked: ClassVar[dict[str, str]] = {"clip_range": "clip_range"}

    def __post_init__(self) -> None:
        check_number("clip_range", self.clip_range, low_inclusive=False, schedule=True)
        check_number("decay", self.decay, high=0.9999, optional=True)
        check_number("max_importance_weight", self.max_importance_weight, low=1.0, low_inclusive=False)
        self.average: dict[str, th.Tensor] = {}
        self.weight_sum = th.ones(())  # the initial policy's weight, as the authors' total_weight = 1
        self._proximal: Any = None
        self._decay = 0.0

    def before_train(self, context: TrainingContext) -> None:
        if self._proximal is None:
            self._proximal = context.policy_copy()
            if self.average:  # loaded with the model
                self._proximal.load_state_dict(self.average)
            # The average is the copy's own weights, so moving it moves the copy.
            self.average = {k: v for k, v in self._proximal.state_dict().items() if v.is_floating_point()}
        self._decay = self.decay if self.decay is not None else _age_matching_decay(context)

    def after_step(self, context: TrainingContext) -> None:
        with th.no_grad():
            self.weight_sum.mul_(self._decay).add_(1.0)
            weight = self.weight_sum.reciprocal()  # a tensor: no host read per optimizer step
            current = context.policy.state_dict()
            for key, average in self.average.items():
                average.lerp_(current[key], weight.to(average.device))

    def __call__(self, batch: Minibatch) -> LossTerm:
        assert batch.log_prob_under is not None and self._proximal is not None
        eps = value_at(self.clip_range, batch.progress_remaining)
        eps_t = th.as_tensor(eps, dtype=batch.log_prob.dtype, device=batch.log_prob.device)
        advantages, log_prob = batch.advantages, batch.log_prob
        with th.no_grad():
            proximal = batch.log_prob_under(self._proximal)
            behaviour = th.maximum(batch.old_log_prob, log_prob.detach() - math.log(self.max_importance_weight))
        log_ratio_proximal = log_prob - proximal
        clipped = th.clamp(log_ratio_proximal, th.log1p(-eps_t), th.log1p(eps_t))
        surrogate = th.min(
            advantages * th.exp(log_prob - behaviour), advantages * th.exp(clipped + proximal - behaviour)
        )
        policy_loss = -batch.mean(surrogate)
        with th.no_grad():
            ratio = th.exp(log_ratio_proximal)
            stats = {
                "policy_gradient_loss": policy_loss,
                "clip_fraction": batch.mean(((ratio < 1 - eps_t) | (ratio > 1 + eps_t)).float()),
                "clip_range": eps,
                "proximal_kl": batch.mean((ratio - 1) - log_ratio_proximal),
                "ewma_decay": self._decay,
            }
        return LossTerm(policy_loss, stats)


def _age_matching_decay(context: TrainingContext) -> float:
    updates = context.n_epochs * context.updates_per_epoch
    age = (updates - 1) / 2
    return age / (1 + age)
