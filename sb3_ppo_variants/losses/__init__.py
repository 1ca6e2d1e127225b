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
from sb3_ppo_variants.losses.early_stop import RatioDeviationEarlyStop
from sb3_ppo_variants.losses.entropy import EntropyBonus
from sb3_ppo_variants.losses.ewma import EWMAProximalSurrogate
from sb3_ppo_variants.losses.kl import (
    KLEarlyStop,
    KLPenalty,
    MirrorDescentPenalty,
    adapt_kl_coef,
    exact_kl,
    kl_per_sample,
)
from sb3_ppo_variants.losses.learning_rate import KLAdaptiveLearningRate
from sb3_ppo_variants.losses.outer import OuterUpdate
from sb3_ppo_variants.losses.surrogate import (
    CISPOSurrogate,
    ClippedSurrogate,
    LogProbClippedSurrogate,
    RollbackSurrogate,
    SoftClipSurrogate,
    SPOSurrogate,
    Surrogate,
    TrustRegionGuidedSurrogate,
    TrustRegionRollbackSurrogate,
    gaussian_trust_region_kl,
    gaussian_trust_region_ratio_bounds,
    trust_region_ratio_bounds,
)
from sb3_ppo_variants.losses.value import ValueLoss
from sb3_ppo_variants.losses.value_normalization import ValueNormalization
from sb3_ppo_variants.losses.vtrace import VTraceAdvantages

__all__ = [
    "LOG_RATIO_LIMIT",
    "CISPOSurrogate",
    "ClippedSurrogate",
    "EWMAProximalSurrogate",
    "EntropyBonus",
    "KLAdaptiveLearningRate",
    "KLEarlyStop",
    "KLPenalty",
    "LogProbClippedSurrogate",
    "LossComponent",
    "LossTerm",
    "Minibatch",
    "MirrorDescentPenalty",
    "OuterUpdate",
    "RatioDeviationEarlyStop",
    "RollbackSurrogate",
    "SPOSurrogate",
    "SoftClipSurrogate",
    "Surrogate",
    "TrustRegionGuidedSurrogate",
    "TrustRegionRollbackSurrogate",
    "VTraceAdvantages",
    "ValueLoss",
    "ValueNormalization",
    "adapt_kl_coef",
    "build_component",
    "build_loss",
    "exact_kl",
    "gaussian_trust_region_kl",
    "gaussian_trust_region_ratio_bounds",
    "kl_per_sample",
    "registered_components",
    "trust_region_ratio_bounds",
]
