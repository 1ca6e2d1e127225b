"""Phasic Policy Gradient: a policy with an auxiliary value head, and the auxiliary phase."""

from sb3_ppo_variants.phasic.auxiliary_phase import PhasicAuxiliaryPhase
from sb3_ppo_variants.phasic.policies import (
    PhasicActorCriticCnnPolicy,
    PhasicActorCriticPolicy,
    PhasicMultiInputActorCriticPolicy,
)

__all__ = [
    "PhasicActorCriticCnnPolicy",
    "PhasicActorCriticPolicy",
    "PhasicAuxiliaryPhase",
    "PhasicMultiInputActorCriticPolicy",
]
