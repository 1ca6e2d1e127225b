"""Checks for hyperparameters: each failure names the parameter and what it accepts."""

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sb3_ppo_variants.common.errors import HyperparameterError


def _fail(name: str, value: Any, accepted: str) -> HyperparameterError:
    return HyperparameterError(f"{name}={value!r} is invalid: accepted values are {accepted}.")


def check_number(
    name: str,
    value: Any,
    *,
    low: float = 0.0,
    high: float | None = None,
    low_inclusive: bool = True,
    schedule: bool = False,
    optional: bool = False,
) -> None:
    """Check ``low <= value <= high`` (``low < value`` when not ``low_inclusive``).

    A callable passes when ``schedule`` is true (it is a function of progress remaining, as
    SB3's schedules are), and ``None`` passes when ``optional`` is true.
    """
    if value is None and optional:
        return
    if callable(value) and schedule:
        return
    if high is None:
        accepted = f"numbers {'>=' if low_inclusive else '>'} {low}"
    else:
        accepted = f"numbers in {'[' if low_inclusive else '('}{low}, {high}]"
    if schedule:
        accepted += " or a schedule (a callable of progress_remaining)"
    if optional:
        accepted += ", or None"
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(name, value, accepted)
    too_low = value < low if low_inclusive else value <= low
    if too_low or (high is not None and value > high) or value != value:
        raise _fail(name, value, accepted)


def check_int(name: str, value: Any, *, low: int) -> None:
    """Check that ``value`` is an integer ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise _fail(name, value, f"integers >= {low}")


def check_choice(name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """Check that ``value`` is one of ``choices``."""
    if value not in choices:
        raise _fail(name, value, "one of " + ", ".join(repr(c) for c in choices))


def value_at(value: float | Callable[[float], float], progress_remaining: float) -> float:
    """The value of a float-or-schedule hyperparameter at ``progress_remaining`` (1 -> 0)."""
    return float(value(progress_remaining)) if callable(value) else value


@dataclass(frozen=True)
class Scaled:
    """``factor`` times a float-or-schedule hyperparameter, itself a picklable schedule (and one a
    model file describes as plain data)."""

    base: float | Callable[[float], float]
    factor: float

    def __call__(self, progress_remaining: float) -> float:
        return self.factor * value_at(self.base, progress_remaining)


def at_least(value: Any, low: float) -> Any:
    """``max(value, low)`` for a float or a tensor (a field that is an input of a compiled graph)."""
    return value.clamp(min=low) if hasattr(value, "clamp") else max(value, low)
