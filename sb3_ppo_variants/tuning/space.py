"""The search space of a study: PPOVariant's hyperparameters and its loss, as an Optuna trial samples them.

The base is the RL Baselines3 Zoo's PPO sampler (``rl_zoo3/hyperparams_opt.py``:
``sample_ppo_params``), with two changes:

- the minibatch is sampled as ``n_minibatches`` (the rollout is cut into that many minibatches)
  instead of a ``batch_size``, so a batch larger than the rollout can never be sampled, and every
  sampled value takes effect (the Zoo samples ``batch_size`` and ``n_steps`` independently);
- the loss is part of the space: ``policy_loss`` picks the surrogate, each with its own
  conditional parameters, ``value_clip`` and ``value_error`` the value loss, and ``kl_penalty``
  adds an adaptive KL penalty to the clipped surrogates.

A space is a mapping ``name -> Parameter`` plus ``fixed`` values; :func:`load_space` narrows or
extends the default from a YAML file, and a Python function can build one the same way.
:func:`ppo_variant_arguments` turns sampled values into ``PPOVariant`` keyword arguments; it is
a pure function of the values, so a finished trial's ``params`` rebuild its configuration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna
import torch as th

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


class Space(Protocol):
    """What an objective samples: ``PPOVariant`` keyword arguments for a trial. A
    :class:`SearchSpace` is one; so is any object with this method."""

    def arguments(self, trial: optuna.Trial, n_envs: int) -> dict[str, Any]: ...


class SearchSpaceError(ValueError):
    """An invalid search space (a bad YAML file, an unknown parameter, an impossible range)."""


@dataclass(frozen=True)
class Parameter:
    """One dimension: ``choices`` (categorical) or ``low``/``high`` (``log``; ``integer``).

    ``when`` makes it conditional: a predicate of the values sampled before it (fixed ones
    included), e.g. ``ValueIn("policy_loss", ("dual_clip",))`` (any callable works in one process;
    worker processes need one that pickles).
    """

    choices: tuple[Any, ...] | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False
    integer: bool = False
    when: Callable[[Mapping[str, Any]], bool] | None = None

    def __post_init__(self) -> None:
        if (self.choices is None) == (self.low is None or self.high is None):
            raise SearchSpaceError("a parameter has either choices or both low and high")
        if self.choices is not None and not self.choices:
            raise SearchSpaceError("choices must not be empty")
        if self.low is not None and self.high is not None:
            if self.low > self.high or (self.log and self.low <= 0):
                raise SearchSpaceError(f"low={self.low} and high={self.high} (log={self.log}) is not a range")

    def suggest(self, trial: optuna.Trial, name: str) -> Any:
        if self.choices is not None:
            return trial.suggest_categorical(name, list(self.choices))
        if self.integer:
            return trial.suggest_int(name, int(self.low), int(self.high), log=self.log)  # type: ignore[arg-type]
        return trial.suggest_float(name, self.low, self.high, log=self.log)  # type: ignore[arg-type]

    def values(self) -> tuple[Any, ...]:
        """The extreme values (every choice, or low and high): enough to check a space."""
        return self.choices if self.choices is not None else (self.low, self.high)


POLICY_LOSSES = (
    "clipped", "dual_clip", "clip_higher", "rollback", "tr_rollback", "spo", "penalty", "soft_clip", "cispo",
    "copg", "espo", "mdpo", "ewma",
)  # fmt: skip
"""The default choices. ``"trgppo"`` is accepted too (list it in a space file's ``policy_loss``
choices); it is not a default choice, since a categorical's choices cannot grow under a running study."""
CLIPPED = ("clipped", "dual_clip", "clip_higher")
WITH_KL_PENALTY = (*CLIPPED, "soft_clip")
"""Policy losses that may add a KL penalty (PPO with RLlib's, P3O's soft clip)."""


@dataclass(frozen=True)
class ValueIn:
    """The condition ``values[name] in accepted``; plain data, so a space pickles to worker processes."""

    name: str
    accepted: tuple[Any, ...]

    def __call__(self, values: Mapping[str, Any]) -> bool:
        return values.get(self.name) in self.accepted


def _policy_loss_is(*kinds: str) -> ValueIn:
    return ValueIn("policy_loss", kinds)


def _uses_kl_target(values: Mapping[str, Any]) -> bool:
    """PPO-penalty, a KL penalty, or CISPO's KL early stop."""
    return values.get("policy_loss") in ("penalty", "cispo") or bool(values.get("kl_penalty"))


DEFAULT_PARAMETERS: dict[str, Parameter] = {
    # The Zoo's PPO ranges.
    "n_steps": Parameter(choices=(64, 128, 256, 512, 1024, 2048)),
    "n_minibatches": Parameter(choices=(1, 2, 4, 8, 16, 32)),
    "one_minus_gamma": Parameter(low=1e-4, high=0.03, log=True),
    "one_minus_gae_lambda": Parameter(low=1e-4, high=0.1, log=True),
    "learning_rate": Parameter(low=1e-5, high=2e-3, log=True),
    "ent_coef": Parameter(low=1e-8, high=0.1, log=True),
    "clip_range": Parameter(choices=(0.1, 0.2, 0.3, 0.4)),
    "n_epochs": Parameter(choices=(1, 5, 10, 20)),
    "max_grad_norm": Parameter(low=0.3, high=2.0),
    "net_arch": Parameter(choices=("tiny", "small", "medium")),
    "activation_fn": Parameter(choices=("tanh", "relu")),
    # The loss.
    "policy_loss": Parameter(choices=POLICY_LOSSES),
    "dual_clip": Parameter(low=1.5, high=5.0, when=_policy_loss_is("dual_clip")),
    "clip_high_ratio": Parameter(low=1.0, high=2.0, when=_policy_loss_is("clip_higher")),
    "rollback": Parameter(low=0.0, high=1.0, when=_policy_loss_is("rollback")),
    "tr_kl_range": Parameter(low=0.005, high=0.1, log=True, when=_policy_loss_is("tr_rollback")),
    "tr_rollback": Parameter(low=0.0, high=0.5, when=_policy_loss_is("tr_rollback")),
    "soft_clip_temperature": Parameter(low=1.0, high=8.0, log=True, when=_policy_loss_is("soft_clip")),
    "cispo_clip_high": Parameter(low=0.1, high=5.0, log=True, when=_policy_loss_is("cispo")),
    "espo_max_deviation": Parameter(low=0.05, high=0.5, log=True, when=_policy_loss_is("espo")),
    "kl_penalty": Parameter(choices=(False, True), when=_policy_loss_is(*WITH_KL_PENALTY)),
    "kl_target": Parameter(low=0.003, high=0.05, log=True, when=_uses_kl_target),
    "value_clip": Parameter(choices=("none", "prediction", "pessimistic")),
    "value_clip_range": Parameter(
        choices=(0.1, 0.2, 0.5, 1.0), when=ValueIn("value_clip", ("prediction", "pessimistic"))
    ),
    "value_error": Parameter(choices=("squared", "huber", "l1")),
    "vf_coef": Parameter(low=0.2, high=1.0),
    # Training options that are components.
    "value_normalization": Parameter(choices=("none", "value_norm", "popart")),
    "kl_adaptive_lr": Parameter(choices=(False, True)),
    "vtrace": Parameter(choices=(False, True)),
    "outer_ppo": Parameter(choices=(False, True)),
    "outer_learning_rate": Parameter(low=0.5, high=3.0, log=True, when=ValueIn("outer_ppo", (True,))),
    "outer_momentum": Parameter(low=0.0, high=0.9, when=ValueIn("outer_ppo", (True,))),
}

NET_ARCHS = {
    "tiny": {"pi": [64], "vf": [64]},
    "small": {"pi": [64, 64], "vf": [64, 64]},
    "medium": {"pi": [256, 256], "vf": [256, 256]},
}
ACTIVATIONS = {"tanh": th.nn.Tanh, "relu": th.nn.ReLU}


@dataclass
class SearchSpace:
    """Parameters to sample and values to fix (a fixed value is never sampled)."""

    parameters: dict[str, Parameter] = field(default_factory=lambda: dict(DEFAULT_PARAMETERS))
    fixed: dict[str, Any] = field(default_factory=dict)

    def check(self, n_envs: int) -> None:
        """Refuse a space that could sample an invalid configuration, before any training."""
        unknown = sorted((set(self.parameters) | set(self.fixed)) - set(DEFAULT_PARAMETERS))
        if unknown:
            raise SearchSpaceError(
                f"unknown parameter(s) {', '.join(unknown)}: accepted names are {', '.join(DEFAULT_PARAMETERS)}"
            )
        n_steps = self._values("n_steps")
        n_minibatches = self._values("n_minibatches")
        smallest = min(n_steps) * n_envs // max(n_minibatches)
        if smallest < 2:
            raise SearchSpaceError(
                f"n_steps={min(n_steps)} with {n_envs} environment(s) cut into n_minibatches={max(n_minibatches)} "
                f"gives minibatches of {smallest} sample(s): accepted spaces give at least 2 per minibatch"
            )

    def _values(self, name: str) -> tuple[Any, ...]:
        if name in self.fixed:
            return (self.fixed[name],)
        return self.parameters[name].values()

    def arguments(self, trial: optuna.Trial, n_envs: int) -> dict[str, Any]:
        """``PPOVariant`` keyword arguments for one trial (what an objective trains)."""
        return ppo_variant_arguments(self.sample(trial), n_envs)

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        """The values of one trial: fixed ones, then each parameter whose condition holds."""
        values: dict[str, Any] = {}
        for name, parameter in self.parameters.items():
            if name in self.fixed:
                continue
            if parameter.when is None or parameter.when({**self.fixed, **values}):
                values[name] = parameter.suggest(trial, name)
        return {**self.fixed, **values}


def load_space(path: str | Path | None = None) -> SearchSpace:
    """The default space, narrowed or extended by a YAML file.

    The file has two optional sections::

        fixed:                      # never sampled
          n_epochs: 10
          policy_loss: spo
        parameters:                 # replace a dimension, or restrict its choices
          learning_rate: {low: 1.0e-4, high: 1.0e-3, log: true}
          clip_range: {choices: [0.1, 0.2]}
    """
    space = SearchSpace()
    if path is None:
        return space
    import yaml

    try:
        document = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as error:
        raise SearchSpaceError(f"search-space file {path}: {error}") from error
    if not isinstance(document, dict) or set(document) - {"fixed", "parameters"}:
        raise SearchSpaceError(f"search-space file {path}: accepted top-level keys are 'fixed' and 'parameters'")
    space.fixed.update(document.get("fixed") or {})
    for name, spec in (document.get("parameters") or {}).items():
        if name not in DEFAULT_PARAMETERS:
            raise SearchSpaceError(
                f"search-space file {path}: unknown parameter {name!r}: accepted names are "
                + ", ".join(DEFAULT_PARAMETERS)
            )
        if not isinstance(spec, dict) or set(spec) - {"choices", "low", "high", "log", "integer"}:
            raise SearchSpaceError(
                f"search-space file {path}: {name}: accepted keys are choices, or low, high, log and integer"
            )
        if "choices" in spec:
            spec = {**spec, "choices": tuple(spec["choices"])}
        try:
            space.parameters[name] = Parameter(**spec, when=DEFAULT_PARAMETERS[name].when)  # condition kept
        except (SearchSpaceError, TypeError) as error:
            raise SearchSpaceError(f"search-space file {path}: {name}: {error}") from error
    return space


def ppo_variant_arguments(values: Mapping[str, Any], n_envs: int) -> dict[str, Any]:
    """``PPOVariant`` keyword arguments from one trial's values (see :data:`DEFAULT_PARAMETERS`)."""
    v = with_defaults(values)
    n_steps = int(v["n_steps"])
    arguments: dict[str, Any] = {
        "n_steps": n_steps,
        "batch_size": minibatch_size(n_steps, n_envs, int(v["n_minibatches"])),
        "gamma": 1.0 - v["one_minus_gamma"],
        "gae_lambda": 1.0 - v["one_minus_gae_lambda"],
        "learning_rate": v["learning_rate"],
        "n_epochs": int(v["n_epochs"]),
        "max_grad_norm": v["max_grad_norm"],
        "policy_kwargs": {"net_arch": NET_ARCHS[v["net_arch"]], "activation_fn": ACTIVATIONS[v["activation_fn"]]},
        "loss": _loss(v),
    }
    return arguments


def minibatch_size(n_steps: int, n_envs: int, n_minibatches: int) -> int:
    """The minibatch size when a rollout of ``n_steps * n_envs`` samples is cut into ``n_minibatches``."""
    return max(n_steps * n_envs // n_minibatches, 2)


def with_defaults(values: Mapping[str, Any]) -> dict[str, Any]:
    """One trial's values, completed with SB3's PPO where a value was neither sampled nor fixed."""
    return {**_defaults(), **values}


def _defaults() -> dict[str, Any]:
    """SB3's PPO where a value was neither sampled nor fixed."""
    return {
        "n_steps": 2048, "n_minibatches": 32, "one_minus_gamma": 0.01, "one_minus_gae_lambda": 0.05,
        "learning_rate": 3e-4, "ent_coef": 0.0, "clip_range": 0.2, "n_epochs": 10, "max_grad_norm": 0.5,
        "net_arch": "small", "activation_fn": "tanh", "policy_loss": "clipped", "dual_clip": 3.0,
        "clip_high_ratio": 1.4, "rollback": 0.3, "tr_kl_range": 0.03, "tr_rollback": 0.05, "kl_penalty": False,
        "kl_target": 0.01, "value_clip": "none", "value_clip_range": 0.2, "value_error": "squared", "vf_coef": 0.5,
        "soft_clip_temperature": 4.0, "cispo_clip_high": 0.2, "value_normalization": "none", "kl_adaptive_lr": False,
        "espo_max_deviation": 0.25, "vtrace": False, "outer_ppo": False, "outer_learning_rate": 1.0,
        "outer_momentum": 0.0,
    }  # fmt: skip


def _loss(v: Mapping[str, Any]) -> list[LossComponent]:
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
    if v["value_normalization"] not in ("none", False):  # False, True: the choices before PopArt
        loss.append(ValueNormalization(preserve_outputs=v["value_normalization"] == "popart"))
    if v["kl_adaptive_lr"]:
        loss.append(KLAdaptiveLearningRate())
    if v["vtrace"]:
        loss.append(VTraceAdvantages())
    if v["outer_ppo"]:
        loss.append(OuterUpdate(outer_learning_rate=v["outer_learning_rate"], momentum=v["outer_momentum"]))
    return loss
