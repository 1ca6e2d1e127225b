"""Trials sampled before the search space spoke the variants' names: their configurations, rebuilt exactly.

Until the space sampled ``variant`` (a name of :data:`~sb3_ppo_variants.variants.VARIANTS`), it sampled
``policy_loss`` with names of its own (``clipped``, ``dual_clip``, ``penalty``, ...) and built each loss
here, with constants that were not always the variants' (``espo`` without its three times PPO's
epochs, ``soft_clip`` without P3O's KL term, ``cispo`` stopping at ``kl_target``). A trial whose
``params`` hold ``policy_loss`` is rebuilt by :func:`legacy_loss`, so a study from before the
change still reports, retrains and resumes as it ran.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sb3_ppo_variants.components import (
    CISPOSurrogate,
    ClippedSurrogate,
    EntropyBonus,
    EWMAProximalSurrogate,
    KLEarlyStop,
    KLPenalty,
    LogProbClippedSurrogate,
    LossComponent,
    MirrorDescentPenalty,
    RatioDeviationEarlyStop,
    RollbackSurrogate,
    SoftClipSurrogate,
    SPOSurrogate,
    Surrogate,
    TrustRegionGuidedSurrogate,
    TrustRegionRollbackSurrogate,
    ValueLoss,
)

POLICY_LOSS_VARIANTS = {
    "clipped": "ppo", "dual_clip": "dual-clip", "clip_higher": "clip-higher", "rollback": "ppo-rb",
    "tr_rollback": "tr-ppo-rb", "spo": "spo", "penalty": "ppo-penalty", "soft_clip": "p3o", "cispo": "cispo",
    "copg": "copg", "espo": "espo", "mdpo": "mdpo", "ewma": "ppo-ewma", "trgppo": "trgppo",
}  # fmt: skip
"""Each old ``policy_loss`` name and the variant that replaced it: a search-space file written with the
old names (``fixed: {policy_loss: spo}``) means that variant in a new study."""
WITH_KL_PENALTY = ("clipped", "dual_clip", "clip_higher", "soft_clip")
"""The old policy losses that could add a KL penalty."""


def legacy_loss(values: Mapping[str, Any]) -> list[LossComponent]:
    """The policy, entropy and value terms (and the policy loss's own penalty or early stop) of a trial
    sampled with ``policy_loss``, its values completed as they were then; the training options
    (value normalisation, ...) are the space's, as they were for every trial."""
    v = {**LEGACY_DEFAULTS, **values}
    clip_range, kind = v["clip_range"], v["policy_loss"]
    policy: LossComponent = {
        "clipped": lambda: ClippedSurrogate(clip_range=clip_range),
        "dual_clip": lambda: ClippedSurrogate(clip_range=clip_range, dual_clip=v["dual_clip"]),
        "clip_higher": lambda: ClippedSurrogate(
            clip_range=clip_range, clip_range_high=clip_range * v["clip_high_ratio"]
        ),
        "rollback": lambda: RollbackSurrogate(clip_range=clip_range, rollback=v["rollback"]),
        "tr_rollback": lambda: TrustRegionRollbackSurrogate(kl_range=v["tr_kl_range"], rollback=v["tr_rollback"]),
        "spo": lambda: SPOSurrogate(clip_range=clip_range),
        "penalty": lambda: Surrogate(),
        "soft_clip": lambda: SoftClipSurrogate(temperature=v["soft_clip_temperature"]),
        "cispo": lambda: CISPOSurrogate(clip_range_high=v["cispo_clip_high"]),
        "copg": lambda: LogProbClippedSurrogate(clip_range=clip_range),
        "espo": lambda: Surrogate(),
        "mdpo": lambda: Surrogate(),
        "ewma": lambda: EWMAProximalSurrogate(clip_range=clip_range),
        "trgppo": lambda: TrustRegionGuidedSurrogate(clip_range=clip_range),
    }[kind]()
    clipped_value = v["value_clip"] != "none"
    loss = [
        policy,
        EntropyBonus(coef=v["ent_coef"]),
        ValueLoss(
            coef=v["vf_coef"],
            clip_range=v["value_clip_range"] if clipped_value else None,
            clip_mode=v["value_clip"] if clipped_value else "prediction",
            error=v["value_error"],
        ),
    ]
    if kind == "penalty" or (kind in WITH_KL_PENALTY and v["kl_penalty"]):
        loss.append(KLPenalty(coef=1.0 if kind == "penalty" else 0.2, target=v["kl_target"], adaptive=True))
    if kind == "cispo":  # only the truncation bounds CISPO's step: stop on the KL (see CISPOSurrogate)
        loss.append(KLEarlyStop(target=v["kl_target"]))
    if kind == "espo":
        loss.append(RatioDeviationEarlyStop(max_deviation=v["espo_max_deviation"]))
    if kind == "mdpo":
        loss.append(MirrorDescentPenalty())
    return loss


LEGACY_DEFAULTS: dict[str, Any] = {
    "n_steps": 2048, "n_minibatches": 32, "one_minus_gamma": 0.01, "one_minus_gae_lambda": 0.05,
    "learning_rate": 3e-4, "ent_coef": 0.0, "clip_range": 0.2, "n_epochs": 10, "max_grad_norm": 0.5,
    "net_arch": "small", "activation_fn": "tanh", "policy_loss": "clipped", "dual_clip": 3.0,
    "clip_high_ratio": 1.4, "rollback": 0.3, "tr_kl_range": 0.03, "tr_rollback": 0.05, "kl_penalty": False,
    "kl_target": 0.01, "value_clip": "none", "value_clip_range": 0.2, "value_error": "squared", "vf_coef": 0.5,
    "soft_clip_temperature": 4.0, "cispo_clip_high": 0.2, "value_normalization": "none", "kl_adaptive_lr": False,
    "espo_max_deviation": 0.25, "vtrace": False, "outer_ppo": False, "outer_learning_rate": 1.0,
    "outer_momentum": 0.0,
}  # fmt: skip
"""What a value neither sampled nor fixed was then (SB3's PPO, and the old space's constants)."""
