"""The protocol every loss component follows, and the minibatch they all read.

A component is plain data (its hyperparameters, as dataclass fields) plus pure tensor
arithmetic over one :class:`Minibatch`. It never calls ``backward()``, owns no optimizer and
keeps no tensors between calls; state that changes over training (an adaptive coefficient)
is an ordinary field, so it is saved and restored with the rest of its configuration.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch as th

from sb3_ppo_variants.common.errors import HyperparameterError

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
    progress_remaining: float
    policy: th.nn.Module

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


class LossComponent:
    """Base class of loss components. Subclass it as a ``@dataclass`` and set ``name``.

    Override :meth:`__call__`; optionally :meth:`stop_early` (a decision before the optimizer
    step; it may read a value to the host) and :meth:`after_train` (non-gradient updates once
    per ``train()`` call, from the averaged statistics). Defining the subclass registers its
    ``name``, so ``{"name": ..., **params}`` builds it and saved models load it.
    """

    name: ClassVar[str]
    linked: ClassVar[dict[str, str]] = {}
    """Fields that mirror an attribute of the algorithm (``{"clip_range": "clip_range"}``):
    the algorithm's attribute is the live value, bound at the start of each ``train()`` call,
    so a callback that sets ``model.clip_range`` changes the loss, as in SB3."""
    needs_old_distribution: ClassVar[bool] = False
    """Ask the algorithm for the pre-update distribution (``Minibatch.old_distribution``)."""
    reads_progress: ClassVar[bool] = True
    """Whether ``__call__`` may read ``batch.progress_remaining`` other than by ``value_at`` of
    its own fields (a schedule in a field is seen anyway). Under ``compile=True`` such a
    component keeps autograd's ``backward()``, since the value changes every ``train()`` call;
    set it to ``False`` when the component does not read it."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            _REGISTRY[cls.name] = cls

    def __call__(self, batch: Minibatch) -> LossTerm:
        raise NotImplementedError

    def stop_early(self, batch: Minibatch) -> str | None:
        """Return a reason to end this ``train()`` call before this minibatch's update."""
        return None

    @property
    def varying_fields(self) -> tuple[str, ...]:
        """Float fields that :meth:`after_train` changes. Under ``compile=True`` they are inputs of
        the graph from the first call rather than constants in it; a float field that changes
        without being named here becomes one at its first change, at one more compilation."""
        return ()

    @property
    def stops_early(self) -> bool:
        """Whether :meth:`stop_early` may stop a call; the loop asks only those that may."""
        return type(self).stop_early is not LossComponent.stop_early

    def after_train(self, stats: Mapping[str, float]) -> dict[str, float]:
        """Update state from the call's mean statistics; return statistics to log."""
        return {}

    def config(self) -> dict[str, Any]:
        """Plain data that rebuilds this component (see :func:`build_component`)."""
        config = {"name": self.name, **field_values(self)}
        if not type(self).__module__.startswith("sb3_ppo_variants."):
            config["module"] = type(self).__module__
        return config


def field_values(component: LossComponent) -> dict[str, Any]:
    """A component's dataclass fields and their values."""
    return {field.name: getattr(component, field.name) for field in dataclasses.fields(component)}  # type: ignore[arg-type]


def registered_components() -> dict[str, type[LossComponent]]:
    """Component names and classes, built in and user-defined."""
    return dict(_REGISTRY)


LossSpec = LossComponent | Mapping[str, Any] | str


def build_component(spec: LossSpec) -> LossComponent:
    """A fresh component from an instance, a name, or ``{"name": ..., **params}``.

    Instances are rebuilt from their config, so two models never share (adaptive) state.
    """
    if isinstance(spec, LossComponent):
        spec = spec.config()
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
        raise HyperparameterError(
            f"loss component name={name!r} is unknown: accepted values are "
            + ", ".join(sorted(_REGISTRY))
            + " (import the module that defines a custom component before using its name)."
        )
    cls = _REGISTRY[name]
    fields = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
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
    return components
