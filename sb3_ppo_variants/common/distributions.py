"""SB3's distribution objects, as the loop and the compiled path need them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from stable_baselines3.common.policies import BasePolicy


def torch_distribution(distribution: Any) -> Any:
    """The torch distribution inside an SB3 (or sb3-contrib) distribution.

    Masked multi-dimensional distributions keep a list in ``distributions``; the others keep one
    torch distribution (a list for SB3's ``MultiDiscrete``) in ``distribution``.
    """
    return distribution.distributions if hasattr(distribution, "distributions") else distribution.distribution


def current_distribution(policy: BasePolicy) -> Any:
    """The torch distribution of the policy's last evaluation (it stays in ``policy.action_dist``)."""
    return torch_distribution(policy.action_dist)  # type: ignore[union-attr]


def constant_action_dims(policy: BasePolicy) -> None:
    """Python ints for a MultiDiscrete distribution's sizes.

    SB3 and sb3-contrib keep them as numpy integers (``list(action_space.nvec)``), which dynamo
    traces as tensors, so splitting the logits by them cannot be one graph. The sizes are the same.
    """
    distribution = getattr(policy, "action_dist", None)
    sizes = getattr(distribution, "action_dims", None)
    if isinstance(sizes, list | tuple | np.ndarray):  # MultiBinary's is one int already
        distribution.action_dims = [int(size) for size in sizes]  # type: ignore[union-attr]


# What SB3's and sb3-contrib's distribution objects keep of the last distribution they made.
_DISTRIBUTION_STATE = ("distribution", "distributions", "_latent_sde")
_ABSENT = object()


def distribution_state(policies: Sequence[BasePolicy]) -> list[tuple[Any, str, Any]]:
    """What the policies' distribution objects hold now, for :func:`restore_distribution_state`."""
    # A policy that has not been evaluated yet (the exact KL's fresh pre-update copy) has none.
    return [
        (policy.action_dist, name, getattr(policy.action_dist, name, _ABSENT))  # type: ignore[attr-defined]
        for policy in policies
        for name in _DISTRIBUTION_STATE
    ]


def restore_distribution_state(kept: list[tuple[Any, str, Any]]) -> None:
    for owner, name, value in kept:
        if value is not _ABSENT:
            setattr(owner, name, value)
        elif hasattr(owner, name):
            delattr(owner, name)
