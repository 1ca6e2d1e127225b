"""The protocol every loss component follows, and the minibatch they all read.

A component is plain data (its hyperparameters, as dataclass fields) plus pure tensor
arithmetic over one :class:`Minibatch`. It never calls ``backward()`` and owns no optimizer.
State that changes over training is an ordinary field when it is a number (an adaptive
coefficient: saved with the configuration) or a tensor attribute that is not a field (running
statistics, an average of the policy's weights: saved with the model's parameters, see
:meth:`LossComponent.state_dict`). A component is also a
:class:`~sb3_ppo_variants.components.hooks.TrainingHook`, for variants that change the training
process around the loss.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch as th

from sb3_ppo_variants.common.errors import HyperparameterError, NoValueLossWarning
from sb3_ppo_variants.components.hooks import TrainingHook

Stat = th.Tensor | float
ScheduleLike = float | Callable[[float], float]


@dataclass
class Minibatch:
    """One minibatch, evaluated once under the current policy and shared by all components.

    ``advantages`` are already normalised when the algorithm normalises them, ``ratio`` is
    ``exp(log_ratio)`` with ``log_ratio`` clamped (see :data:`LOG_RATIO_LIMIT`), and ``mask``
    marks the real samples of a padded (recurrent) batch; ``None`` means every sample counts.
    Reduce over samples with :meth:`mean` so a component is right on padded and plain batches.
    """

    observations: th.Tensor | dict[str, th.Tensor]
    actions: th.Tensor
    old_values: th.Tensor
    old_log_prob: th.Tensor
    advantages: th.Tensor
    returns: th.Tensor
    values: th.Tensor
    log_prob: th.Tensor
    entropy: th.Tensor | None
    log_ratio: th.Tensor
    ratio: th.Tensor
    distribution: Any
    """The current policy's torch distribution (a list of them for ``MultiDiscrete``)."""
    old_distribution: Any | None
    """The pre-update policy's distribution; set only when a component asks for it."""
    mask: th.Tensor | None
    progress_remaining: float | th.Tensor
    """From 1 to 0 over ``learn()``; a 0-d tensor under ``compile=True``, so it is an input of the
    compiled graph. In ``train()``, a component's schedules and linked fields already hold their
    values this call (see :mod:`~sb3_ppo_variants.update.hyperparameters`); ``value_at`` reads a
    field either way."""
    policy: th.nn.Module
    log_prob_under: Callable[[Any], th.Tensor] | None = None
    """``log_prob_under(other)``: ``log pi'(a|s)`` of this minibatch's actions under another policy
    built like ``policy`` (an average of its weights, see ``model.policy_copy()``), evaluated as the
    policy is (masks, LSTM states)."""

    def mean(self, x: th.Tensor) -> th.Tensor:
        """Mean over the real samples (RLlib's ``possibly_masked_mean``)."""
        return th.mean(x) if self.mask is None else th.mean(x[self.mask])


LOG_RATIO_LIMIT = 20.0
"""``|log pi/pi_old|`` is clamped here before ``exp``: ``exp(20)`` is about 5e8, so a collapsed
old probability cannot overflow the ratio to ``inf`` and then to NaN through ``0 * inf``."""


@dataclass
class LossTerm:
    """What a component returns: its weighted contribution to the loss, and statistics.

    ``loss`` is ``None`` for components that only decide or measure (KL early stopping).
    ``stats`` are logged under ``train/<key>``, averaged over the minibatches of a ``train()``
    call; values may be tensors (kept on device until the end of the call) or plain floats.
    """

    loss: th.Tensor | None
    stats: dict[str, Stat] = dataclasses.field(default_factory=dict)


_REGISTRY: dict[str, type[LossComponent]] = {}


class LossComponent(TrainingHook):
    """Base class of loss components. Subclass it as a ``@dataclass`` and set ``name``.

    Override :meth:`__call__`; optionally :meth:`stop_early` (a decision before the optimizer
    step; it may read a value to the host), :meth:`after_train` (non-gradient updates once per
    ``train()`` call, from the averaged statistics) and any hook of
    :class:`~sb3_ppo_variants.components.hooks.TrainingHook`. Defining the subclass registers its
    ``name``, so ``{"name": ..., **params}`` builds it and saved models load it.
    """

    name: ClassVar[str]
    linked: ClassVar[dict[str, str]] = {}
    """Fields that mirror an attribute of the algorithm (``{"clip_range": "clip_range"}``):
    the algorithm's attribute is the live value, bound at the start of each ``train()`` call,
    so a callback that sets ``model.clip_range`` changes the loss, as in SB3."""
    needs_old_distribution: ClassVar[bool] = False
    """Ask the algorithm for the pre-update distribution (``Minibatch.old_distribution``)."""
    host_fields: ClassVar[tuple[str, ...]] = ()
    """Fields the component reads on the host (as Python floats, say to index a table): under
    ``compile=True`` they stay constants of the graph rather than becoming its inputs, so a change
    costs a new compilation. Most components have none."""
    trains_values: ClassVar[bool] = False
    """Whether its term trains the value function (a loss with none of these warns)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _REGISTRY[cls.name] = cls

    def __call__(self, batch: Minibatch) -> LossTerm:
        raise NotImplementedError

    def stop_early(self, batch: Minibatch) -> str | None:
        """Return a reason to end this ``train()`` call before this minibatch's update."""
        return None

    def check_model(self, model: Any) -> None:
        """Raise :class:`~sb3_ppo_variants.common.errors.HyperparameterError` for a model (its
        action space, its policy) this component cannot serve; the algorithm asks once its policy
        is built, and whenever the loss is replaced."""

    @property
    def stops_early(self) -> bool:
        """Whether :meth:`stop_early` may stop a call; the loop asks only those that may."""
        return type(self).stop_early is not LossComponent.stop_early

    @property
    def adapts(self) -> bool:
        """Whether :meth:`after_train` may change fields (derived, not declared): under
        ``compile=True`` its float fields are inputs of the graph rather than constants in it."""
        return type(self).after_train is not LossComponent.after_train

    def after_train(self, stats: Mapping[str, float]) -> dict[str, float]:
        """Update state from the call's mean statistics; return statistics to log."""
        return {}

    def config(self) -> dict[str, Any]:
        """Plain data that rebuilds this component (see :func:`build_component`)."""
        config = {"name": self.name, **field_values(self)}
        if not type(self).__module__.startswith("sb3_ppo_variants."):
            config["module"] = type(self).__module__
        return config

    def state_dict(self) -> dict[str, th.Tensor]:
        """Tensor state, saved with the model's parameters and restored bit for bit.

        Every attribute that is not a field and holds a tensor (``"mean"``) or a dict of tensors
        (``"average.weight"``); override both methods for state of another shape.
        """
        fields = set(field_values(self))
        state: dict[str, th.Tensor] = {}
        for key, value in getattr(self, "__dict__", {}).items():
            if key in fields:
                continue
            if isinstance(value, th.Tensor):
                state[key] = value
            elif isinstance(value, dict) and value and all(isinstance(v, th.Tensor) for v in value.values()):
                state.update({f"{key}.{name}": tensor for name, tensor in value.items()})
        return state

    def load_state_dict(self, state: Mapping[str, th.Tensor]) -> None:
        """Restore what :meth:`state_dict` returned (tensors are taken as they are)."""
        for key, tensor in state.items():
            attribute, dot, name = key.partition(".")
            if dot:
                tensors = self.__dict__.setdefault(attribute, {})
                tensors[name] = tensor
            else:
                setattr(self, attribute, tensor)


def field_values(component: LossComponent) -> dict[str, Any]:
    """A component's fields (its hyperparameters) and their values; ``vars`` would miss slotted ones."""
    return {field.name: getattr(component, field.name) for field in dataclasses.fields(component)}  # type: ignore[arg-type]


def linked_values(components: Iterable[LossComponent]) -> dict[str, Any]:
    """The algorithm attributes the components mirror (``LossComponent.linked``) and their values."""
    return {attribute: getattr(c, field) for c in components for field, attribute in c.linked.items()}


def registered_components() -> dict[str, type[LossComponent]]:
    """Component names and classes, built in and user-defined."""
    return dict(_REGISTRY)


LossSpec = LossComponent | Mapping[str, Any] | str


def build_component(spec: LossSpec) -> LossComponent:
    """A fresh component from an instance, a name, or ``{"name": ..., **params}``.

    Instances are rebuilt from their config and a copy of their tensor state, so two models
    never share (adaptive) state.
    """
    if isinstance(spec, LossComponent):
        component = build_component(spec.config())
        component.load_state_dict({key: tensor.clone() for key, tensor in spec.state_dict().items()})
        return component
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise HyperparameterError(
            f"loss entry {spec!r} is invalid: accepted values are LossComponent instances, "
            "component names, or dicts with a 'name' key."
        )
    params = dict(spec)
    name, module = params.pop("name"), params.pop("module", None)
    if name not in _REGISTRY and module is not None:
        importlib.import_module(module)  # defining the class registers it
    if name not in _REGISTRY:
        close = difflib.get_close_matches(str(name), list(_REGISTRY), n=1, cutoff=0.6)
        raise HyperparameterError(
            f"loss component name={name!r} is unknown: accepted values are "
            + ", ".join(sorted(_REGISTRY))
            + " (import the module that defines a custom component before using its name)."
            + (f" Did you mean {close[0]!r}?" if close else "")
        )
    cls = _REGISTRY[name]
    if not dataclasses.is_dataclass(cls):
        raise HyperparameterError(
            f"loss component {name!r} ({cls.__qualname__}) is invalid: accepted components are dataclasses "
            "(decorate the class with @dataclass, so its fields are its hyperparameters)."
        )
    fields = [f.name for f in dataclasses.fields(cls)]
    shadowing = sorted(f for f in fields if callable(getattr(LossComponent, f, None)))
    if shadowing:
        raise HyperparameterError(
            f"loss component {name!r} has a field named like a method of LossComponent ({', '.join(shadowing)}): "
            "accepted field names are any others (the field would hide the method the training loop calls)."
        )
    unknown = sorted(set(params) - set(fields))
    if unknown:
        raise HyperparameterError(
            f"loss component {name!r} has no parameter {', '.join(unknown)}: "
            f"accepted parameters are {', '.join(fields) or '(none)'}."
        )
    return cls(**params)


def build_loss(specs: Iterable[LossSpec]) -> list[LossComponent]:
    """Build a list of components, checking that no algorithm attribute is linked twice."""
    if isinstance(specs, str | Mapping | LossComponent):
        specs = [specs]
    components = [build_component(spec) for spec in specs]
    if not components:
        raise HyperparameterError("loss=[] is invalid: accepted values are a non-empty list of components.")
    owners: dict[str, str] = {}
    for component in components:
        for attribute in component.linked.values():
            if attribute in owners:
                raise HyperparameterError(
                    f"loss has two components ({owners[attribute]!r} and {component.name!r}) that both set "
                    f"the algorithm's {attribute!r}: accepted values are lists with at most one of them."
                )
            owners[attribute] = component.name
    if not any(component.trains_values for component in components):
        names = ", ".join(component.name for component in components)
        warnings.warn(
            f"loss=[{names}] has no component that trains the value function: the critic keeps its initial "
            "weights while the advantages (GAE) read it. Add ValueLoss() (SB3's value term), or filter "
            "NoValueLossWarning if that is what you mean.",
            NoValueLossWarning,
            stacklevel=3,
        )
    transforms = [component.name for component in components if component.transforms_values]
    if len(transforms) > 1:
        raise HyperparameterError(
            f"loss has two components ({transforms[0]!r} and {transforms[1]!r}) that both transform value "
            "predictions: accepted values are lists with at most one of them."
        )
    return components
