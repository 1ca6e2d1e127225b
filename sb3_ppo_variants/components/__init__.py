"""Loss components for PPOVariant: each is plain hyperparameters plus tensor arithmetic.

``protocol.py`` holds what every component follows (:class:`LossComponent`, :class:`Minibatch`,
:class:`LossTerm`, the registry), ``hooks.py`` the training hooks a component may also be; the other
files are the components, one family each."""

from sb3_ppo_variants.components.early_stop import RatioDeviationEarlyStop
from sb3_ppo_variants.components.entropy import EntropyBonus
from sb3_ppo_variants.components.ewma import EWMAProximalSurrogate
from sb3_ppo_variants.components.hooks import TrainingContext, TrainingHook
from sb3_ppo_variants.components.kl import (
    KLEarlyStop,
    KLPenalty,
    MirrorDescentPenalty,
    adapt_kl_coef,
    exact_kl,
    kl_per_sample,
)
from sb3_ppo_variants.components.learning_rate import KLAdaptiveLearningRate
from sb3_ppo_variants.components.outer import OuterUpdate
from sb3_ppo_variants.components.phasic import PhasicAuxiliaryPhase
from sb3_ppo_variants.components.protocol import (
    LOG_RATIO_LIMIT,
    LossComponent,
    LossTerm,
    Minibatch,
    build_component,
    build_loss,
    registered_components,
)
from sb3_ppo_variants.components.surrogate import (
    CISPOSurrogate,
    ClippedSurrogate,
    LogProbClippedSurrogate,
    RollbackSurrogate,
    SoftClipSurrogate,
    SPOSurrogate,
    Surrogate,
    TrustRegionRollbackSurrogate,
)
from sb3_ppo_variants.components.trust_region import (
    TrustRegionGuidedSurrogate,
    gaussian_trust_region_kl,
    gaussian_trust_region_ratio_bounds,
    trust_region_ratio_bounds,
)
from sb3_ppo_variants.components.value import ValueLoss
from sb3_ppo_variants.components.value_normalization import ValueNormalization
from sb3_ppo_variants.components.vtrace import VTraceAdvantages

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
    "PhasicAuxiliaryPhase",
    "RatioDeviationEarlyStop",
    "RollbackSurrogate",
    "SPOSurrogate",
    "SoftClipSurrogate",
    "Surrogate",
    "TrainingContext",
    "TrainingHook",
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
