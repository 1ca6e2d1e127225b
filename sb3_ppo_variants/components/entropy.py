"""Entropy regularisation."""

from dataclasses import dataclass
from typing import ClassVar

from sb3_ppo_variants.common.validation import check_number, value_at
from sb3_ppo_variants.components.protocol import LossComponent, LossTerm, Minibatch, ScheduleLike


@dataclass
class EntropyBonus(LossComponent):
    """Entropy bonus for exploration (Mnih et al. 2016, arXiv:1602.01783; Schulman et al. 2017, eq. 9).

    ``L = -coef * mean(H(pi(.|s)))``; where the distribution has no closed-form entropy
    (gSDE's squashed case), ``-log pi(a|s)`` estimates it, as in SB3.

    Logs ``entropy_loss`` (``-mean(H)``, unweighted, as SB3 does).
    """

    coef: ScheduleLike = 0.0
    """Weight of the bonus; a float or a schedule. Mirrors the algorithm's ``ent_coef``, so a
    callback that sets ``model.ent_coef`` schedules it (SB3 issue #316)."""

    name: ClassVar[str] = "entropy"
    linked: ClassVar[dict[str, str]] = {"coef": "ent_coef"}

    def __post_init__(self) -> None:
        check_number("coef", self.coef, schedule=True)

    def __call__(self, batch: Minibatch) -> LossTerm:
        if batch.entropy is None:
            entropy_loss = -batch.mean(-batch.log_prob)
        else:
            entropy_loss = -batch.mean(batch.entropy)
        coef = value_at(self.coef, batch.progress_remaining)
        return LossTerm(coef * entropy_loss, {"entropy_loss": entropy_loss})
