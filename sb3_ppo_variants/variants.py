"""The PPO variants by name: the ``PPOVariant`` arguments that turn SB3's PPO into each one.

``variant_arguments("ppo-rb", ppo_arguments)`` takes SB3 ``PPO`` keyword arguments (for example
the RL Baselines3 Zoo's tuned ones) and returns ``PPOVariant`` keyword arguments for the
variant: the loss-related arguments (``clip_range``, ``ent_coef``, ``vf_coef``,
``clip_range_vf``, ``target_kl``) move into the components, and everything else is kept, so
variants differ from PPO only where they really differ. The benchmark grid and the tuning
package use these names.

A variant's defaults are its authors' (drop-in: the PPO arguments stay). Where those were designed
for other tasks or budgets (an LLM paper's temperatures, an auxiliary phase every 32 calls),
``"<name>@recommended"`` names the variant at settings recommended for control tasks, with their
source in its description; the reference table shows both.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stable_baselines3 import PPO

from sb3_ppo_variants.common.errors import HyperparameterError
from sb3_ppo_variants.common.validation import Scaled
from sb3_ppo_variants.components import (
    CISPOSurrogate,
    ClippedSurrogate,
    EntropyBonus,
    EWMAProximalSurrogate,
    KLAdaptiveLearningRate,
    KLEarlyStop,
    KLPenalty,
    LogProbClippedSurrogate,
    LossComponent,
    MirrorDescentPenalty,
    OuterUpdate,
    RatioDeviationEarlyStop,
    RollbackSurrogate,
    SoftClipSurrogate,
    SPOSurrogate,
    Surrogate,
    TrustRegionGuidedSurrogate,
    TrustRegionRollbackSurrogate,
    ValueLoss,
    ValueNormalization,
    VTraceAdvantages,
)
from sb3_ppo_variants.components.phasic import PhasicAuxiliaryPhase


def default_loss() -> list[LossComponent]:
    """SB3's PPO loss. The order is SB3's sum order, which keeps the result bit-identical."""
    return [ClippedSurrogate(), EntropyBonus(), ValueLoss(), KLEarlyStop()]


LINKED_DEFAULTS: dict[str, Any] = {
    attribute: getattr(component, field)
    for component in default_loss()
    for field, attribute in component.linked.items()
}
"""What the SB3 PPO arguments that configure the loss (``clip_range``, ``ent_coef``, ``vf_coef``,
``clip_range_vf``, ``target_kl``) default to: the defaults of the fields they mirror."""


@dataclass(frozen=True)
class Tunable:
    """A variant's constant that a study may tune: the value the variant uses, and the range searched."""

    default: float
    low: float
    high: float
    log: bool = False


@dataclass(frozen=True)
class Variant:
    """How a variant differs from SB3's PPO."""

    description: str
    policy_loss: Callable[[Mapping[str, Any]], LossComponent] | None = None
    """Builds the policy loss from the loss arguments and the tunables' values; ``None``: PPO's clipped
    surrogate."""
    value_loss: dict[str, Any] = field(default_factory=dict)
    """Options of :class:`~sb3_ppo_variants.components.ValueLoss` beyond its coefficient."""
    extra_loss: Callable[[Mapping[str, Any]], list[LossComponent]] | None = None
    """Components added after PPO's (from the same arguments as ``policy_loss``)."""
    tunable: dict[str, Tunable] = field(default_factory=dict)
    """The variant's constants a study samples (:mod:`sb3_ppo_variants.tuning.space`), by the name the
    search space gives them, each with the value the variant uses otherwise."""
    options: dict[str, Any] = field(default_factory=dict)
    """``PPOVariant`` arguments that are not part of the loss."""
    target_kl: float | None = None
    """KL early stopping's target where the PPO arguments set none (``target_kl=None``)."""
    epochs_factor: int = 1
    """``n_epochs`` is this times PPO's: for variants whose own rule ends a call's epochs."""
    policies: dict[str, str] = field(default_factory=dict)
    """The policy alias to use instead of SB3's (see :func:`variant_policy`)."""
    recommended: Variant | None = None
    """The variant at settings recommended for control tasks, where its own defaults were designed for
    other tasks or budgets (named ``"<name>@recommended"``); its description says where they come from."""


_PHASIC_POLICIES = {name: f"Phasic{name}" for name in ("MlpPolicy", "CnnPolicy", "MultiInputPolicy")}

VARIANTS: dict[str, Variant] = {
    "ppo": Variant("SB3's PPO: clipped surrogate, SB3's value clipping, per-minibatch advantages"),
    "dual-clip": Variant(
        "Dual-clip PPO, c = 3 (Ye et al. 2020)",
        policy_loss=lambda a: ClippedSurrogate(clip_range=a["clip_range"], dual_clip=a["dual_clip"]),
        tunable={"dual_clip": Tunable(3.0, 1.5, 5.0)},
    ),
    "clip-higher": Variant(
        "Asymmetric clip, eps_high = 1.4 eps (DAPO's 0.2 / 0.28; Yu et al. 2025)",
        policy_loss=lambda a: ClippedSurrogate(
            clip_range=a["clip_range"], clip_range_high=Scaled(a["clip_range"], a["clip_high_ratio"])
        ),
        tunable={"clip_high_ratio": Tunable(1.4, 1.0, 2.0)},
    ),
    "ppo-penalty": Variant(
        "Unclipped surrogate + adaptive exact-KL penalty, d_targ = 0.01, beta_0 = 1 (Schulman et al. 2017, sec. 4)",
        policy_loss=lambda a: Surrogate(),
        extra_loss=lambda a: [
            KLPenalty(coef=1.0, target=a["kl_target"], adaptive=True, rule="paper", estimator="exact")
        ],
        tunable={"kl_target": Tunable(0.01, 0.003, 0.05, log=True)},
    ),
    "ppo-rb": Variant(
        "Rollback clip, alpha = 0.3 (Truly PPO's PPO-RB; Wang et al. 2019)",
        policy_loss=lambda a: RollbackSurrogate(clip_range=a["clip_range"], rollback=a["rollback"]),
        tunable={"rollback": Tunable(0.3, 0.0, 1.0)},
    ),
    "tr-ppo-rb": Variant(
        "Trust-region rollback, delta = 0.03, alpha = 0.05 (Truly PPO's TR-PPO-RB; Wang et al. 2019)",
        policy_loss=lambda a: TrustRegionRollbackSurrogate(kl_range=a["tr_kl_range"], rollback=a["tr_rollback"]),
        tunable={"tr_kl_range": Tunable(0.03, 0.005, 0.1, log=True), "tr_rollback": Tunable(0.05, 0.0, 0.5)},
    ),
    "spo": Variant(
        "Simple policy optimization, r A - |A| (r - 1)^2 / (2 eps) (Xie et al. 2025)",
        policy_loss=lambda a: SPOSurrogate(clip_range=a["clip_range"]),
    ),
    "value-pessimistic": Variant(
        "Value clipping as ppo2 / CleanRL: max of clipped and unclipped losses, c = clip_range",
        value_loss={"clip_mode": "pessimistic"},
    ),
    "value-huber": Variant("Huber value loss, delta = 1", value_loss={"error": "huber"}),
    "recompute-advantages": Variant(
        "Advantages recomputed before each epoch and normalised per batch (Andrychowicz et al. 2021)",
        options={"recompute_advantages": True, "normalize_advantage": "batch"},
    ),
    "p3o": Variant(
        "Sigmoid soft clip, tau = 4, + exact KL(pi_old, pi) penalty, beta = 0.1 (P3O; Chen et al. 2022; "
        "the authors' MuJoCo defaults)",
        policy_loss=lambda a: SoftClipSurrogate(temperature=a["soft_clip_temperature"]),
        extra_loss=lambda a: [KLPenalty(coef=0.1, adaptive=False, estimator="exact")],
        tunable={"soft_clip_temperature": Tunable(4.0, 1.0, 8.0, log=True)},
    ),
    "sapo": Variant(
        "Sigmoid soft clip with tau = 1.0 for A > 0 and 1.05 otherwise, no KL (SAPO; Gao et al. 2025)",
        policy_loss=lambda a: SoftClipSurrogate(temperature=1.0, temperature_negative=1.05),
        recommended=Variant(
            "SAPO with tau = 4 for A > 0 and 4.2 otherwise: no control-task temperatures are published (SAPO's "
            "come from LLM training, where tau = 1 lets the policy move by several nats per call); 4 is P3O's, "
            "the same gate's classic-RL value (raincchio/P3O's taunow), with SAPO's ratio 1.05 kept",
            policy_loss=lambda a: SoftClipSurrogate(temperature=4.0, temperature_negative=4.2),
        ),
    ),
    "cispo": Variant(
        "Truncated, gradient-free IS weight on A log pi, eps_high = 0.2, no lower bound, with KL early "
        "stopping at 0.02 unless target_kl is set (CISPO; MiniMax-M1 2025)",
        policy_loss=lambda a: CISPOSurrogate(clip_range_high=a["cispo_clip_high"]),
        target_kl=0.02,
        tunable={"cispo_clip_high": Tunable(0.2, 0.1, 5.0, log=True)},
        recommended=Variant(
            "CISPO with the IS weight truncated on both sides, [1 - 0.2, 1 + 0.2], as verl's "
            "compute_policy_loss_cispo with its defaults clip_ratio_low = clip_ratio_high = 0.2, and KL early "
            "stopping at 0.02: no control-task settings are published; without a lower bound nothing keeps a "
            "sample's weight from vanishing",
            policy_loss=lambda a: CISPOSurrogate(clip_range_high=0.2, clip_range_low=0.2),
            target_kl=0.02,
        ),
    ),
    "kl-adaptive-lr": Variant(
        "PPO with the learning rate / 1.5 above 2 x KL target 0.01 and x 1.5 below target / 2 (rsl_rl)",
        extra_loss=lambda a: [KLAdaptiveLearningRate(target=0.01)],
    ),
    "value-norm": Variant(
        "PPO with the critic on normalised returns (debiased EMA, beta = 0.99999; MAPPO's ValueNorm)",
        extra_loss=lambda a: [ValueNormalization()],
    ),
    "popart": Variant(
        "Value normalisation that also rescales the value head so its outputs are preserved when the "
        "statistics move (PopArt; van Hasselt et al. 2016), with value-norm's statistics",
        extra_loss=lambda a: [ValueNormalization(preserve_outputs=True)],
    ),
    "copg": Variant(
        "PPO's clip on log pi instead of r: min(log pi A, clip(log pi, log pi_old + log(1 -/+ eps)) A) "
        "(COPG; Markowitz and Staley 2023)",
        policy_loss=lambda a: LogProbClippedSurrogate(clip_range=a["clip_range"]),
    ),
    "espo": Variant(
        "Unclipped surrogate; a call's epochs end once mean |r - 1| > 0.25, with 3 x PPO's epochs allowed "
        "(ESPO; Sun et al. 2022; RL-X's defaults)",
        policy_loss=lambda a: Surrogate(),
        extra_loss=lambda a: [RatioDeviationEarlyStop(max_deviation=a["espo_max_deviation"])],
        epochs_factor=3,
        tunable={"espo_max_deviation": Tunable(0.25, 0.05, 0.5, log=True)},
        recommended=Variant(
            "ESPO with RL-X's optimisation settings (nico-bohlinger/RL-X, espo default_config.py): learning rate "
            "3e-4, minibatches of 64, up to 300 minibatch updates per call, stopping once mean |r - 1| > 0.25",
            policy_loss=lambda a: Surrogate(),
            extra_loss=lambda a: [RatioDeviationEarlyStop(max_deviation=0.25, max_updates=300)],
            options={"learning_rate": 3e-4, "batch_size": 64, "n_epochs": 300},
        ),
    ),
    "mdpo": Variant(
        "Unclipped surrogate + exact reverse KL(pi, pi_old) / t_k, t_k = 1 - k/K floored at 0.01 (on-policy MDPO; "
        "Tomar et al. 2022)",
        policy_loss=lambda a: Surrogate(),
        extra_loss=lambda a: [MirrorDescentPenalty(min_step_size=0.01)],
    ),
    "vtrace": Variant(
        "PPO with advantages recomputed before each epoch by V-trace, rho_bar = c_bar = 1 (Espeholt et al. 2018; "
        "PufferLib 3)",
        extra_loss=lambda a: [VTraceAdvantages()],
    ),
    "trgppo": Variant(
        "Per-sample clip bounds from a KL trust region around the old policy, clipping to them alone as the "
        "authors' code does: Discrete delta = 0.001 annealed over training, Box delta matched to PPO's band at "
        "the old mean (TRGPPO; Wang et al. 2019; wangyuhuix/TRGPPO)",
        policy_loss=lambda a: TrustRegionGuidedSurrogate(clip_range=a["clip_range"]),
        recommended=Variant(
            "TRGPPO with the band as the paper writes it, PPO's widened where the trust region is wider, "
            "[min(l, 1 - eps), max(u, 1 + eps)], and not annealed; delta as the drop-in's: the authors' Discrete "
            "settings come from Atari (run_atari.py: delta_kl = 0.001, the band annealed with the learning rate as "
            "Atari's ppo2 anneals both over 10M frames), where the Zoo's PPO keeps its clip range and rate fixed on "
            "these tasks; on Box, whose delta is the authors' MuJoCo choice, only the lower bound can change",
            policy_loss=lambda a: TrustRegionGuidedSurrogate(
                clip_range=a["clip_range"], widen_ppo_band=True, anneal=False
            ),
        ),
    ),
    "ppo-ewma": Variant(
        "Clip around an EWMA of past policies (bias-corrected, decay from the anchor's age), importance "
        "weight pi / pi_b capped at 100 (PPO-EWMA; Hilton et al. 2022; openai/ppo-ewma)",
        policy_loss=lambda a: EWMAProximalSurrogate(clip_range=a["clip_range"]),
    ),
    "ppg": Variant(
        "Phasic Policy Gradient: PPO with one epoch per call, and every 32 calls 6 epochs distilling the "
        "value targets into an auxiliary head on the policy network, beta_clone = 1 (Cobbe et al. 2021; "
        "CleanRL's defaults)",
        extra_loss=lambda a: [PhasicAuxiliaryPhase()],
        options={"n_epochs": 1},
        policies=_PHASIC_POLICIES,
        recommended=Variant(
            "PPG with the auxiliary phase every 4 calls and PPO's epochs per call: its defaults come from Procgen "
            "(CleanRL's ppg_procgen.py), where 32 calls are 2% of a run and one policy epoch sees 16k samples; at "
            "the Zoo's control budgets 32 calls can exceed the run (Pendulum has 24), so the phase never runs, "
            "and one epoch over a few hundred samples is a tenth of PPO's updates",
            extra_loss=lambda a: [PhasicAuxiliaryPhase(n_iterations=4)],
            policies=_PHASIC_POLICIES,
        ),
    ),
    "outer-ppo": Variant(
        "PPO whose call's update theta* - theta_k is applied with an outer learning rate of 1.5, no momentum "
        "(outer-PPO; Tan et al. 2024; the rate is this project's choice, see OuterUpdate)",
        extra_loss=lambda a: [OuterUpdate(outer_learning_rate=1.5)],
    ),
}

_PPO_N_EPOCHS = inspect.signature(PPO.__init__).parameters["n_epochs"].default


RECOMMENDED = "recommended"
"""The settings suffix of a variant's name: ``"ppg@recommended"``."""


def variant_names(recommended: bool = True) -> list[str]:
    """Every variant's name, and with ``recommended`` those of the recommended settings after them."""
    names = list(VARIANTS)
    if recommended:
        names += [f"{name}@{RECOMMENDED}" for name, variant in VARIANTS.items() if variant.recommended is not None]
    return names


def resolve_variant(name: str) -> Variant:
    """The :class:`Variant` a name gives: ``"spo"``, or ``"ppg@recommended"`` for its recommended settings."""
    base, _, settings = name.partition("@")
    variant = VARIANTS.get(base)
    if variant is not None and settings in ("", RECOMMENDED):
        chosen = variant if not settings else variant.recommended
        if chosen is not None:
            return chosen
    raise HyperparameterError(
        f"variant={name!r} is unknown: accepted values are {', '.join(variant_names())}.{_did_you_mean(name)}"
    )


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name.replace("_", "-"), variant_names(), n=1, cutoff=0.6)
    return f" Did you mean {close[0]!r}?" if close else ""


def variant_policy(name: str, policy: Any) -> Any:
    """The policy for variant ``name`` given the one PPO would use: PPG's alias for SB3's (``"MlpPolicy"``
    -> ``"PhasicMlpPolicy"``); anything else is kept."""
    if not isinstance(policy, str):
        return policy
    try:
        variant = resolve_variant(name)
    except HyperparameterError:
        return policy
    return variant.policies.get(policy, policy)


def variant_arguments(
    name: str, ppo_arguments: Mapping[str, Any] | None = None, tuned: Mapping[str, float] | None = None
) -> dict[str, Any]:
    """``PPOVariant`` keyword arguments for variant ``name`` (``"ppg@recommended"`` for its recommended
    settings), from SB3 ``PPO`` keyword arguments; ``tuned`` replaces some of the variant's
    :attr:`Variant.tunable` constants (a study's sampled values)."""
    variant = resolve_variant(name)
    arguments = dict(ppo_arguments or {})
    if "loss" in arguments:
        raise HyperparameterError(
            "loss=... cannot be combined with a named variant: accepted values are SB3 PPO arguments only."
        )
    if name == "ppo" and not tuned:
        return arguments  # SB3's PPO itself: no loss= at all
    linked = {key: arguments.pop(key, default) for key, default in LINKED_DEFAULTS.items()}
    loss = variant_loss(name, linked, tuned)
    if variant.epochs_factor != 1:
        arguments["n_epochs"] = variant.epochs_factor * arguments.get("n_epochs", _PPO_N_EPOCHS)
    return {**arguments, **variant.options, "loss": loss}


def variant_loss(
    name: str, linked: Mapping[str, Any] | None = None, tuned: Mapping[str, float] | None = None
) -> list[LossComponent]:
    """Variant ``name``'s loss, from the loss-related PPO arguments (``clip_range``, ``ent_coef``,
    ``vf_coef``, ``clip_range_vf``, ``target_kl``; SB3's defaults for those not given) and ``tuned``
    values of its :attr:`Variant.tunable` constants."""
    variant = resolve_variant(name)
    unknown = sorted(set(tuned or {}) - set(variant.tunable))
    if unknown:
        raise HyperparameterError(
            f"tuned={dict(tuned or {})!r} is invalid for variant {name!r}: accepted names are "
            f"{', '.join(variant.tunable) or '(none: it has no tunable constants)'}."
        )
    linked = {**LINKED_DEFAULTS, **(linked or {})}
    values = {**linked, **{key: tunable.default for key, tunable in variant.tunable.items()}, **(tuned or {})}
    value_options = dict(variant.value_loss)
    clip_range_vf = linked["clip_range_vf"]
    if value_options.get("clip_mode") == "pessimistic" and clip_range_vf is None:
        clip_range_vf = linked["clip_range"]  # ppo2 clips the value with the policy's clip range
    policy_loss = variant.policy_loss or (lambda a: ClippedSurrogate(clip_range=a["clip_range"]))
    return [
        policy_loss(values),
        EntropyBonus(coef=linked["ent_coef"]),
        ValueLoss(coef=linked["vf_coef"], clip_range=clip_range_vf, **value_options),
        KLEarlyStop(target=variant.target_kl if linked["target_kl"] is None else linked["target_kl"]),
        *(variant.extra_loss(values) if variant.extra_loss else []),
    ]


def accepts_variant(init: Callable[..., None]) -> Callable[..., None]:
    """Give an algorithm's ``__init__`` the ``variant=`` keyword: ``cls(policy, env, variant="spo",
    **arguments)`` builds ``cls(variant_policy("spo", policy), env, **variant_arguments("spo", arguments))``
    from the arguments given (SB3 ``PPO`` arguments; the variant's own options, such as PPG's one
    epoch, take precedence, as in :func:`variant_arguments`). The name is kept as ``model.variant``.
    A policy alias the algorithm does not have (PPG's phasic policy on a masked or recurrent model)
    is left as given, so the variant's components refuse the model with their own error."""
    signature = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> None:
        given = signature.bind(self, *args, **kwargs).arguments
        variant = given.pop("variant", None)
        if variant is None:
            init(self, *args, **kwargs)
            return
        given.pop("self")
        policy, env = given.pop("policy"), given.pop("env", None)
        passed_through = {k: given.pop(k) for k in list(given) if k.startswith("_")}
        arguments = variant_arguments(variant, given)
        chosen = variant_policy(variant, policy)
        if isinstance(chosen, str) and chosen not in getattr(type(self), "policy_aliases", {}):
            chosen = policy
        init(self, chosen, env, **arguments, **passed_through)
        self.variant = variant

    return wrapper
