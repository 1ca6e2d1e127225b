"""Loss components for PPOVariant: each is plain hyperparameters plus tensor arithmetic."""

from sb3_ppo_variants.losses.base import (
    LOG_RATIO_LIMIT,
    LossComponent,
    LossTerm,
    Minibatch,
    build_component,
    build_loss,
    registered_components,
)
from sb3_ppo_variants.losses.entropy import EntropyBonus
from sb3_ppo_variants.losses.kl import KLEarlyStop, KLPenalty, adapt_kl_coef, exact_kl, kl_per_sample
from sb3_ppo_variants.losses.learning_rate import KLAdaptiveLearningRate
from sb3_ppo_variants.losses.surrogate import (
    CISPOSurrogate,
    ClippedSurrogate,
    RollbackSurrogate,
    SoftClipSurrogate,
    SPOSurrogate,
    Surrogate,
    TrustRegionRollbackSurrogate,
)
from sb3_ppo_variants.losses.value import ValueLoss
from sb3_ppo_variants.losses.value_normalization import ValueNormalization

__all__ = [
    "LOG_RATIO_LIMIT",
    "CISPOSurrogate",
    "ClippedSurrogate",
    "EntropyBonus",
    "KLAdaptiveLearningRate",
    "KLEarlyStop",
    "KLPenalty",
    "LossComponent",
    "LossTerm",
    "Minibatch",
    "RollbackSurrogate",
    "SPOSurrogate",
    "SoftClipSurrogate",
    "Surrogate",
    "TrustRegionRollbackSurrogate",
    "ValueLoss",
    "ValueNormalization",
    "adapt_kl_coef",
    "build_component",
    "build_loss",
    "exact_kl",
    "kl_per_sample",
    "registered_components",
]
