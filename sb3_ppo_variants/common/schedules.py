"""Schedules as the RL Baselines3 Zoo writes them: ``lin_<x>``, a linear decay from ``x`` to 0.

The Zoo launcher reads them in a Zoo YAML (:mod:`sb3_ppo_variants.zoo.hyperparameters`), and the
table of the Zoo's tuned PPO (:mod:`sb3_ppo_variants.tuning.baselines`) is written in them.
"""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.utils import LinearSchedule

from sb3_ppo_variants.common.errors import HyperparameterError

LINEAR_PREFIX = "lin_"


def linear_schedule(value: str, key: str) -> LinearSchedule:
    """The Zoo's ``lin_<x>``: ``x`` at the start of training, decaying linearly to 0 at the end."""
    try:
        start = float(value[len(LINEAR_PREFIX) :])
    except ValueError:
        raise HyperparameterError(
            f"{key}={value!r} is invalid: accepted strings are lin_<number> (a linear decay to 0), e.g. lin_0.2."
        ) from None
    return LinearSchedule(start, 0.0, 1.0)


def is_linear_schedule(value: Any) -> bool:
    """Whether ``value`` is written as the Zoo's ``lin_<x>``."""
    return isinstance(value, str) and value.startswith(LINEAR_PREFIX)
