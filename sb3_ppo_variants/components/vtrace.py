"""V-trace: advantages recomputed with truncated importance weights as the policy moves."""

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch as th

from sb3_ppo_variants.common.errors import HyperparameterError
from sb3_ppo_variants.common.validation import check_number
from sb3_ppo_variants.components.hooks import TrainingContext
from sb3_ppo_variants.components.protocol import LossComponent, LossTerm, Minibatch


@dataclass
class VTraceAdvantages(LossComponent):
    """Advantages recomputed before each epoch after the first with V-trace's truncated importance
    weights (Espeholt et al. 2018, IMPALA, arXiv:1802.01561), as PufferLib 3's advantage:

    ``delta_t = min(rho_t, rho_bar) (r_t + gamma V(s_{t+1}) - V(s_t))``,
    ``A_t = delta_t + gamma lambda min(rho_t, c_bar) A_{t+1}``, returns ``A + V``,

    with ``rho_t = pi / pi_old`` and the values of the policy as it is at the start of the epoch.
    With ``rho = 1`` it is GAE, so the first epoch keeps the rollout's advantages; later epochs see
    advantages that discount the steps the policy has already moved away from. ``rho_bar = c_bar =
    1`` as IMPALA and PufferLib. It recomputes them in its own ``before_epoch``, from
    ``context.evaluate_rollout()``, and logs the truncation. Not available with an LSTM (replaying it over
    the whole rollout) or where the rollout's time order is gone.

    Logs ``vtrace_truncated_fraction``: the share of samples with ``rho > rho_bar``.
    """

    rho_bar: float = 1.0
    """``rho_bar`` > 0: truncation of the weight on each TD error."""
    c_bar: float = 1.0
    """``c_bar`` > 0: truncation of the trace that carries later errors back."""

    name: ClassVar[str] = "vtrace_advantages"

    def __post_init__(self) -> None:
        check_number("rho_bar", self.rho_bar, low_inclusive=False)
        check_number("c_bar", self.c_bar, low_inclusive=False)

    def check_model(self, model: Any) -> None:
        if getattr(model.policy, "lstm_actor", None) is not None:
            raise HyperparameterError(
                f"loss component {self.name!r} is invalid for {type(model).__name__}: accepted components are "
                "those that do not recompute advantages (V-trace would need to replay the LSTM over every "
                "sequence of the rollout before each epoch)."
            )

    def before_epoch(self, context: TrainingContext, epoch: int) -> None:
        """After the first epoch, the rollout's advantages and returns recomputed by V-trace with
        the policy and values as they are now (the first epoch's are GAE's, which V-trace equals there)."""
        if epoch == 0:
            return
        buffer = context.rollout_buffer
        evaluation = context.evaluate_rollout()
        assert evaluation.log_ratio is not None
        advantages = self.advantages(
            buffer.rewards,
            evaluation.values,
            buffer.episode_starts,
            evaluation.last_values,
            evaluation.last_episode_starts,
            evaluation.log_ratio,
            buffer.gamma,
            buffer.gae_lambda,
        )
        buffer.advantages = buffer.swap_and_flatten(advantages)
        buffer.returns = buffer.swap_and_flatten(advantages + evaluation.values)

    def __call__(self, batch: Minibatch) -> LossTerm:
        with th.no_grad():
            truncated = batch.mean((batch.ratio > self.rho_bar).float())
        return LossTerm(None, {"vtrace_truncated_fraction": truncated})

    def advantages(
        self,
        rewards: np.ndarray,
        values: np.ndarray,
        episode_starts: np.ndarray,
        last_values: np.ndarray,
        dones: np.ndarray,
        log_ratio: np.ndarray,
        gamma: float,
        gae_lambda: float,
    ) -> np.ndarray:
        """The recursion above on ``(n_steps, n_envs)`` arrays, in SB3's GAE conventions
        (``episode_starts[t + 1]`` ends the trace; ``dones`` are the starts after the last step)."""
        ratio = np.exp(log_ratio)
        rho, c = np.minimum(ratio, self.rho_bar), np.minimum(ratio, self.c_bar)
        advantages = np.zeros_like(values)
        last = np.zeros_like(last_values)
        for step in reversed(range(len(values))):
            if step == len(values) - 1:
                next_non_terminal, next_values = 1.0 - dones.astype(np.float32), last_values
            else:
                next_non_terminal, next_values = 1.0 - episode_starts[step + 1], values[step + 1]
            delta = rho[step] * (rewards[step] + gamma * next_values * next_non_terminal - values[step])
            last = delta + gamma * gae_lambda * next_non_terminal * c[step] * last
            advantages[step] = last
        return advantages
