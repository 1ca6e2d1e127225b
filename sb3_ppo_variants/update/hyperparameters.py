"""Hyperparameters bound for one ``train()`` call.

A component's hyperparameters are its fields. Two kinds hold something other than their value
this call: a field linked to an attribute of the algorithm (``clip_range`` mirrors
``model.clip_range``, which a callback may set) and a schedule (a function of the progress). For
each call, :func:`bind_loss` makes a copy of each such component with those fields evaluated into
plain values; the call (hooks, scoring, early stopping, ``after_train``) runs on the copies, and
:meth:`BoundLoss.commit` then hands what the call changed (an adapted coefficient, a counter,
state tensors) back to the components the model keeps. The kept components' hyperparameters are
never written: a schedule stays a schedule, and the algorithm's attribute stays the one owner of a
linked value.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sb3_ppo_variants.common.validation import value_at
from sb3_ppo_variants.components.protocol import LossComponent, field_values


@dataclass
class BoundLoss:
    """The loss of one call: the components it runs on, and where each came from."""

    components: list[LossComponent]
    """The components this call: a copy where a field was bound, else the kept component itself."""
    kept: list[LossComponent]
    """The model's components, in the same order."""
    schedules: list[dict[str, Callable[[float], float]]]
    """Each component's fields that were schedules (the compiled path makes the varying ones graph inputs)."""
    bound: list[frozenset[str]]
    """Each component's fields that hold values bound for this call."""

    def commit(self) -> None:
        """Give the kept components what the call changed: every attribute but the bound fields."""
        for kept, used, bound in zip(self.kept, self.components, self.bound, strict=True):
            if used is kept:
                continue
            for name, value in _attributes(used).items():
                if name not in bound and getattr(kept, name, _MISSING) is not value:
                    object.__setattr__(kept, name, value)  # frozen dataclasses too


def bind_loss(components: Sequence[LossComponent], attributes: Mapping[str, Any], progress: float) -> BoundLoss:
    """The components with linked fields set from ``attributes`` (the algorithm's) and every
    schedule evaluated at ``progress`` (from 1 to 0 over ``learn()``)."""
    used, schedules, bound = [], [], []
    for component in components:
        declared = {**field_values(component), **{f: attributes[a] for f, a in component.linked.items()}}
        schedule_fields = {name: value for name, value in declared.items() if callable(value)}
        names = frozenset(component.linked) | frozenset(schedule_fields)
        copied = component
        if names:
            copied = copy.copy(component)
            for name in names:
                object.__setattr__(copied, name, value_at(declared[name], progress))
        used.append(copied)
        schedules.append(schedule_fields)
        bound.append(names)
    return BoundLoss(used, list(components), schedules, bound)


_MISSING = object()


def _attributes(component: LossComponent) -> dict[str, Any]:
    attributes = dict(getattr(component, "__dict__", {}))
    if dataclasses.is_dataclass(component):  # slotted fields are not in __dict__
        attributes.update(field_values(component))
    return attributes
