"""The three algorithms (SB3's PPO, sb3-contrib's MaskablePPO and RecurrentPPO with a loss of
components), what they share (:class:`~sb3_ppo_variants.algorithms.base.LossComponentsMixin`:
the loss, its SB3 attributes, learning rates), their argument rules, and PPG's policies."""

from sb3_ppo_variants.algorithms.base import LossComponentsMixin
from sb3_ppo_variants.algorithms.maskable import MaskablePPOVariant
from sb3_ppo_variants.algorithms.policies import (
    PhasicActorCriticCnnPolicy,
    PhasicActorCriticPolicy,
    PhasicMultiInputActorCriticPolicy,
)
from sb3_ppo_variants.algorithms.ppo import PPOVariant
from sb3_ppo_variants.algorithms.recurrent import RecurrentPPOVariant

__all__ = [
    "LossComponentsMixin",
    "MaskablePPOVariant",
    "PPOVariant",
    "PhasicActorCriticCnnPolicy",
    "PhasicActorCriticPolicy",
    "PhasicMultiInputActorCriticPolicy",
    "RecurrentPPOVariant",
]
