"""The PPO arguments this package shares with SB3: their checks, and how SB3 keeps two of them.

``default_loss`` and ``LINKED_DEFAULTS`` (the loss those arguments configure) live with the variants
(:mod:`sb3_ppo_variants.variants`, whose ``"ppo"`` it is); they are imported here for the algorithms.
"""

from __future__ import annotations

from typing import Any

from stable_baselines3.common.utils import FloatSchedule

from sb3_ppo_variants.common.errors import HyperparameterError
from sb3_ppo_variants.common.validation import check_choice, check_int, check_number
from sb3_ppo_variants.variants import LINKED_DEFAULTS, default_loss


def sb3_schedule(attribute: str, value: Any) -> Any:
    """An SB3 attribute as SB3 keeps it once a model is set up: ``clip_range`` and ``clip_range_vf``
    (when given) as ``FloatSchedule``; the others as they are."""
    if attribute in ("clip_range", "clip_range_vf") and value is not None:
        return FloatSchedule(value)
    return value


# How each PPO argument is checked: keyword arguments of check_number, or ("int", low).
_PPO_ARGUMENT_RULES: dict[str, Any] = {
    "learning_rate": {"schedule": True},
    "clip_range": {"low_inclusive": False, "schedule": True},
    "clip_range_vf": {"low_inclusive": False, "schedule": True, "optional": True},
    "ent_coef": {"schedule": True},
    "vf_coef": {},
    "max_grad_norm": {"low_inclusive": False},
    "target_kl": {"low_inclusive": False, "optional": True},
    "gamma": {"high": 1.0},
    "gae_lambda": {"high": 1.0},
    "n_steps": ("int", 1),
    "batch_size": ("int", 1),
    "n_epochs": ("int", 1),
    "stats_window_size": ("int", 1),
    "sde_sample_freq": ("int", -1),
    "normalize_advantage": ("choice", (True, False, "minibatch", "batch")),
    "recompute_advantages": ("choice", (True, False)),
    "vf_learning_rate": {"schedule": True, "optional": True},
    "compile": ("compile",),
}


def check_ppo_arguments(**arguments: Any) -> None:
    """Validate the PPO arguments this package shares with SB3, naming the bad one."""
    for name, value in arguments.items():
        rule = _PPO_ARGUMENT_RULES[name]
        if rule == ("compile",):
            if not (isinstance(value, bool) or (isinstance(value, dict) and all(isinstance(k, str) for k in value))):
                raise HyperparameterError(
                    f"compile={value!r} is invalid: accepted values are True, False, or a dict of "
                    "torch.compile keyword arguments (for example {'backend': 'aot_eager'})."
                )
        elif isinstance(rule, tuple) and rule[0] == "choice":
            check_choice(name, value, rule[1])
        elif isinstance(rule, tuple):
            check_int(name, value, low=rule[1])
        else:
            check_number(name, value, **rule)


__all__ = ["LINKED_DEFAULTS", "check_ppo_arguments", "default_loss", "sb3_schedule"]
