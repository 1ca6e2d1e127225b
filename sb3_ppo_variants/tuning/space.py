"""The search space of a study: PPOVariant's hyperparameters and its loss, as an Optuna trial samples them.

The base is the RL Baselines3 Zoo's PPO sampler (``rl_zoo3/hyperparams_opt.py``:
``sample_ppo_params``), with two changes:

- the minibatch is sampled as ``n_minibatches`` (the rollout is cut into that many minibatches)
  instead of a ``batch_size``, so a batch larger than the rollout can never be sampled, and every
  sampled value takes effect (the Zoo samples ``batch_size`` and ``n_steps`` independently);
- the loss is part of the space: ``variant`` picks a variant of
  :data:`~sb3_ppo_variants.variants.VARIANTS` by its name, with the constants it declares tunable
  (:attr:`~sb3_ppo_variants.variants.Variant.tunable`: their ranges live with the variant) as
  conditional parameters; ``value_clip`` and ``value_error`` set the value loss, ``kl_penalty`` adds
  an adaptive KL penalty to PPO's clip and the training options add their components.

Trials of studies made before ``variant`` existed hold ``policy_loss`` (see
:mod:`~sb3_ppo_variants.tuning.legacy`); they are rebuilt as they ran, and a search-space file that
names ``policy_loss`` means the variant that replaced it.

A space is a mapping ``name -> Parameter`` plus ``fixed`` values; :func:`load_space` narrows or
extends the default from a YAML file, and a Python function can build one the same way.
:func:`ppo_variant_arguments` turns sampled values into ``PPOVariant`` keyword arguments; it is
a pure function of the values, so a finished trial's ``params`` rebuild its configuration.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna
import torch as th

from sb3_ppo_variants.common.validation import Scaled
from sb3_ppo_variants.components import (
    KLAdaptiveLearningRate,
    KLPenalty,
    LossComponent,
    OuterUpdate,
    ValueLoss,
    ValueNormalization,
    VTraceAdvantages,
)
from sb3_ppo_variants.components.protocol import field_values
from sb3_ppo_variants.tuning.legacy import POLICY_LOSS_VARIANTS, legacy_loss
from sb3_ppo_variants.variants import resolve_variant, variant_arguments, variant_loss, variant_names


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
    included), e.g. ``ValueIn("variant", ("dual-clip",))`` (any callable works in one process;
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


TUNED_VARIANTS = (
    "ppo", "dual-clip", "clip-higher", "ppo-rb", "tr-ppo-rb", "spo", "ppo-penalty", "p3o", "cispo", "copg", "espo",
    "mdpo", "ppo-ewma",
)  # fmt: skip
"""The default choices of ``variant``: the variants that change the policy loss. Any other name of
:func:`~sb3_ppo_variants.variants.variant_names` may be listed in a space file's ``variant`` choices
(``trgppo``, ``sapo``...); none is added by default, since a categorical's choices cannot grow under a
running study."""
WITH_KL_PENALTY = ("ppo", "dual-clip", "clip-higher")
"""Variants that may add an adaptive KL penalty (``kl_penalty``: PPO's clip with RLlib's penalty)."""


@dataclass(frozen=True)
class ValueIn:
    """The condition ``values[name] in accepted``; plain data, so a space pickles to worker processes."""

    name: str
    accepted: tuple[Any, ...]

    def __call__(self, values: Mapping[str, Any]) -> bool:
        return values.get(self.name) in self.accepted


def _uses_kl_target(values: Mapping[str, Any]) -> bool:
    """PPO-penalty's target, or the added KL penalty's."""
    return values.get("variant") == "ppo-penalty" or bool(values.get("kl_penalty"))


def _tunables() -> dict[str, Parameter]:
    """Each variant's tunable constants, conditional on the variant (a name several declare is one
    dimension; ``kl_target`` also serves the added KL penalty)."""
    owners: dict[str, list[str]] = {}
    ranges: dict[str, Any] = {}
    for name in variant_names():
        for key, tunable in resolve_variant(name).tunable.items():
            owners.setdefault(key, []).append(name)
            ranges.setdefault(key, tunable)
    return {
        key: Parameter(
            low=ranges[key].low,
            high=ranges[key].high,
            log=ranges[key].log,
            when=_uses_kl_target if key == "kl_target" else ValueIn("variant", tuple(owners[key])),
        )
        for key in owners
    }


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
    "variant": Parameter(choices=TUNED_VARIANTS),
    "kl_penalty": Parameter(choices=(False, True), when=ValueIn("variant", WITH_KL_PENALTY)),
    **_tunables(),
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
          variant: spo
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
    space.fixed.update(_renamed(document.get("fixed") or {}, path))
    for name, spec in _renamed(document.get("parameters") or {}, path).items():
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
            if name == "variant":
                _check_variants(spec["choices"], path)
        try:
            space.parameters[name] = Parameter(**spec, when=DEFAULT_PARAMETERS[name].when)  # condition kept
        except (SearchSpaceError, TypeError) as error:
            raise SearchSpaceError(f"search-space file {path}: {name}: {error}") from error
    return space


def _renamed(section: Mapping[str, Any], path: str | Path) -> dict[str, Any]:
    """A space file's section with ``policy_loss`` (the name before ``variant``) read as ``variant``."""
    section = dict(section)
    if "policy_loss" not in section:
        return section
    if "variant" in section:
        raise SearchSpaceError(f"search-space file {path}: policy_loss and variant both given: accepted is one of them")
    old = section.pop("policy_loss")

    def variant(name: Any) -> Any:
        if name not in POLICY_LOSS_VARIANTS:
            raise SearchSpaceError(
                f"search-space file {path}: policy_loss {name!r} is unknown: accepted names are "
                + ", ".join(POLICY_LOSS_VARIANTS)
                + " (or use variant: with a name of sb3_ppo_variants.variants.VARIANTS)"
            )
        return POLICY_LOSS_VARIANTS[name]

    if isinstance(old, dict) and "choices" in old:
        section["variant"] = {**old, "choices": [variant(name) for name in old["choices"]]}
    else:
        section["variant"] = variant(old)
    return section


def _check_variants(names: tuple[Any, ...], path: str | Path) -> None:
    unknown = [name for name in names if name not in variant_names()]
    if unknown:
        raise SearchSpaceError(
            f"search-space file {path}: variant {unknown[0]!r} is unknown: accepted names are "
            + ", ".join(variant_names())
        )


def ppo_variant_arguments(values: Mapping[str, Any], n_envs: int) -> dict[str, Any]:
    """``PPOVariant`` keyword arguments from one trial's values (see :data:`DEFAULT_PARAMETERS`)."""
    v = with_defaults(values)
    n_steps = int(v["n_steps"])
    ppo_arguments: dict[str, Any] = {
        "n_steps": n_steps,
        "batch_size": minibatch_size(n_steps, n_envs, int(v["n_minibatches"])),
        "gamma": 1.0 - v["one_minus_gamma"],
        "gae_lambda": 1.0 - v["one_minus_gae_lambda"],
        "learning_rate": v["learning_rate"],
        "n_epochs": int(v["n_epochs"]),
        "max_grad_norm": v["max_grad_norm"],
        "policy_kwargs": {"net_arch": NET_ARCHS[v["net_arch"]], "activation_fn": ACTIVATIONS[v["activation_fn"]]},
    }
    if "policy_loss" in values:  # a trial sampled before the space spoke the variants' names
        return {**ppo_arguments, "loss": [*legacy_loss(values), *_options(v)]}
    name = v["variant"]
    tuned = {key: v[key] for key in resolve_variant(name).tunable if key in values}
    arguments = variant_arguments(name, ppo_arguments, tuned=tuned or None)
    linked = {"clip_range": v["clip_range"], "ent_coef": v["ent_coef"], "vf_coef": v["vf_coef"]}
    return {**arguments, "loss": [*_variant_loss(name, linked, tuned, v), *_options(v)]}


def _variant_loss(name: str, linked: dict[str, Any], tuned: dict[str, Any], v: Mapping[str, Any]) -> list:
    """The variant's loss with the space's value loss, and the KL penalty where sampled."""
    loss = variant_loss(name, linked, tuned)
    clipped_value = v["value_clip"] != "none"
    value = ValueLoss(
        coef=v["vf_coef"],
        clip_range=v["value_clip_range"] if clipped_value else None,
        clip_mode=v["value_clip"] if clipped_value else "prediction",
        error=v["value_error"],
    )
    loss = [value if isinstance(component, ValueLoss) else _plain(component) for component in loss]
    if name in WITH_KL_PENALTY and v["kl_penalty"]:
        loss.append(KLPenalty(coef=0.2, target=v["kl_target"], adaptive=True))
    return loss


def _plain(component: LossComponent) -> LossComponent:
    """The component with a constant ``Scaled`` field (clip-higher's bound of a sampled float clip range) as
    its float, the same value, so a trial's configuration has a plain (YAML) form."""
    constants = {
        key: value.base * value.factor
        for key, value in field_values(component).items()
        if isinstance(value, Scaled) and not callable(value.base)
    }
    return dataclasses.replace(component, **constants) if constants else component  # type: ignore[type-var]


def _options(v: Mapping[str, Any]) -> list[LossComponent]:
    """The training options that are components (the same for every trial, old or new)."""
    loss: list[LossComponent] = []
    if v["value_normalization"] not in ("none", False):  # False, True: the choices before PopArt
        loss.append(ValueNormalization(preserve_outputs=v["value_normalization"] == "popart"))
    if v["kl_adaptive_lr"]:
        loss.append(KLAdaptiveLearningRate())
    if v["vtrace"]:
        loss.append(VTraceAdvantages())
    if v["outer_ppo"]:
        loss.append(OuterUpdate(outer_learning_rate=v["outer_learning_rate"], momentum=v["outer_momentum"]))
    return loss


def minibatch_size(n_steps: int, n_envs: int, n_minibatches: int) -> int:
    """The minibatch size when a rollout of ``n_steps * n_envs`` samples is cut into ``n_minibatches``."""
    return max(n_steps * n_envs // n_minibatches, 2)


def with_defaults(values: Mapping[str, Any]) -> dict[str, Any]:
    """One trial's values, completed with SB3's PPO where a value was neither sampled nor fixed (a
    variant's tunable constants keep the variant's own value)."""
    return {**DEFAULTS, **values}


DEFAULTS: dict[str, Any] = {
    "n_steps": 2048, "n_minibatches": 32, "one_minus_gamma": 0.01, "one_minus_gae_lambda": 0.05,
    "learning_rate": 3e-4, "ent_coef": 0.0, "clip_range": 0.2, "n_epochs": 10, "max_grad_norm": 0.5,
    "net_arch": "small", "activation_fn": "tanh", "variant": "ppo", "kl_penalty": False, "kl_target": 0.01,
    "value_clip": "none", "value_clip_range": 0.2, "value_error": "squared", "vf_coef": 0.5,
    "value_normalization": "none", "kl_adaptive_lr": False, "vtrace": False, "outer_ppo": False,
    "outer_learning_rate": 1.0, "outer_momentum": 0.0,
}  # fmt: skip
"""SB3's PPO (and no option) where a value was neither sampled nor fixed."""
