"""Learning rates beyond SB3's schedule: the value function's own, and the components' rules.

``vf_learning_rate`` puts the value function's own parameters in a second parameter group with
their own rate (SB3 issue #338); a component's ``learning_rate`` hook then adjusts every group's
rate for the call (the KL-adaptive learning rate).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sb3_ppo_variants.common.errors import HyperparameterError
from sb3_ppo_variants.common.validation import value_at
from sb3_ppo_variants.components.hooks import TrainingHook

VALUE_PARAMETER_PREFIXES = (
    "value_net.",
    "mlp_extractor.value_net.",
    "vf_features_extractor.",
    "lstm_critic.",
    "critic.",
)
"""Parameters that only the value function uses (SB3's and sb3-contrib's actor-critic policies)."""


def split_value_parameters(policy: Any, vf_learning_rate: Any, learning_rate: float) -> None:
    """Rebuild ``policy.optimizer`` with the value function's own parameters in a second group.

    Parameters the actor shares (a shared features extractor, a shared LSTM) stay with the
    policy's learning rate.
    """
    value = [p for name, p in policy.named_parameters() if name.startswith(VALUE_PARAMETER_PREFIXES)]
    if not value:
        raise HyperparameterError(
            f"vf_learning_rate={vf_learning_rate!r} is invalid for {type(policy).__name__}, which has no "
            "parameters of its own for the value function: accepted values are None."
        )
    value_ids = {id(p) for p in value}
    shared = [p for p in policy.parameters() if id(p) not in value_ids]
    policy.optimizer = policy.optimizer_class(
        [{"params": shared}, {"params": value, "lr": value_at(vf_learning_rate, 1.0)}],
        lr=learning_rate,
        **policy.optimizer_kwargs,
    )


def call_learning_rates(
    groups: list[dict[str, Any]], vf_learning_rate: Any, progress_remaining: float, hooks: Iterable[TrainingHook]
) -> dict[str, float]:
    """Set this call's rates on the optimizer's ``groups`` (SB3's schedule already set): the value
    function's schedule, then each hook's ``learning_rate``. Returns what to log under ``train/``."""
    logged: dict[str, float] = {}
    if vf_learning_rate is not None:
        groups[1]["lr"] = value_at(vf_learning_rate, progress_remaining)
        logged["vf_learning_rate"] = groups[1]["lr"]
    scheduled = groups[0]["lr"]
    hooks = list(hooks)
    for group in groups:
        for hook in hooks:
            group["lr"] = hook.learning_rate(group["lr"])
    if groups[0]["lr"] != scheduled:
        logged["learning_rate"] = groups[0]["lr"]
    return logged
