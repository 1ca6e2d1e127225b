"""The reference table's rows: what each one trains, and the identity a finished cell records.

A row is named like the variants it compares (``sb3_ppo_variants.variants``), so a row, a variant
and a ``variant=`` argument are the same word:

- ``sb3-ppo``: SB3's own ``PPO`` at the RL Baselines3 Zoo's hyperparameters, the reference;
- ``spo``, ``ppg``, ...: a named variant, drop-in (the Zoo's PPO hyperparameters, the variant's
  own defaults);
- ``ppg@recommended``: the variant at the settings recommended for control tasks (its
  description in ``VARIANTS`` gives their source);
- ``sb3-ppo@lr=0.0012``, ``sb3-ppo@max_grad_norm=inf``, ``sb3-ppo@n_epochs=11``: a control, SB3's
  PPO with one setting in place of the Zoo's (:data:`CONTROL_SETTINGS`): the setting that may
  explain why a row beat SB3's PPO (the learning rates an adaptive row reached, so "adaptive" can be
  told from "larger"; the epochs a call, so more training of the same data can be told from the
  method that adds it).

Every row is compared with ``sb3-ppo`` on the same seeds.

A row's **identity** is what it trains on an environment: the algorithm, the policy and every
argument, components included, as plain data (class names, not module paths, so moving code
does not change it), plus what its cells record. Its hash is stored on each cell the row
trains, so a row whose code or settings change gets new cells and the report never mixes two
versions of it. A component whose code changes what it computes with the same settings bumps
:data:`REVISIONS`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from typing import Any

from stable_baselines3 import PPO

from sb3_ppo_variants import PPOVariant
from sb3_ppo_variants.common.errors import HyperparameterError
from sb3_ppo_variants.components.hooks import TrainingHook
from sb3_ppo_variants.tuning.baselines import zoo_ppo_arguments
from sb3_ppo_variants.variants import resolve_variant, variant_arguments, variant_names, variant_policy

SB3 = "sb3-ppo"
"""The row of SB3's own ``PPO``, the reference every variant is compared with."""
CONTROL_PREFIX = f"{SB3}@"
"""A control row's name: SB3's PPO with the setting that follows (``sb3-ppo@lr=0.0012``)."""
CONTROL_SETTINGS: dict[str, str] = {"lr": "learning_rate", "max_grad_norm": "max_grad_norm", "n_epochs": "n_epochs"}
"""The settings a control may change, by the name its row spells them with: SB3's ``PPO`` argument each sets."""

INTEGER_SETTINGS = frozenset({"n_epochs"})
"""The control settings that take a whole number (SB3 counts them)."""

REVISIONS: dict[str, int] = {
    "ppo-ewma": 2,  # the average starts with the initial policy's weight 1, as the authors' EwmaModel
    "trgppo": 2,  # the authors' rule: the trust-region bounds alone, annealed for Discrete; Box actions
}
"""A variant's revision where its code changed what it computes at unchanged settings (default 1)."""

LEARNING_RATES = "learning_rates"
"""The trial attribute where a row that adapts its learning rate records the rate of every call."""


def is_control(row: str) -> bool:
    return row.startswith(CONTROL_PREFIX)


def control_row(setting: str, value: float) -> str:
    """The control that sets ``setting`` (a key of :data:`CONTROL_SETTINGS`) to ``value``."""
    return f"{CONTROL_PREFIX}{setting}={value:.3g}"


def control_setting(row: str) -> tuple[str, float]:
    """``(setting, value)`` of a control row: ``("lr", 0.0012)`` for ``sb3-ppo@lr=0.0012``.

    :raises ValueError: naming the accepted settings, for a control row that names none of them
        or a value that is not a number above 0 (``inf`` is one: ``max_grad_norm=inf`` never clips),
        or not a whole one for a setting SB3 counts (``n_epochs``).
    """
    setting, _, text = row[len(CONTROL_PREFIX) :].partition("=")
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    integer = setting in INTEGER_SETTINGS
    if setting not in CONTROL_SETTINGS or not value > 0 or (integer and not value.is_integer()):
        accepted = ", ".join(
            f"{CONTROL_PREFIX}{name}=<{'integer' if name in INTEGER_SETTINGS else 'value'} > 0>"
            for name in CONTROL_SETTINGS
        )
        raise ValueError(f"row {row!r} is invalid: a control is one of {accepted}")
    return setting, int(value) if integer else value


def base_variant(row: str) -> str:
    """The variant a row is built on (``ppg`` for ``ppg@recommended``; ``sb3-ppo`` for SB3's rows)."""
    return row.split("@", 1)[0]


def check_row(row: str) -> None:
    """Raise ``ValueError`` naming the accepted rows for a row name that names none."""

    if row == SB3:
        return
    if is_control(row):
        control_setting(row)
        return
    try:
        resolve_variant(row)
    except HyperparameterError:
        controls = [f"{CONTROL_PREFIX}{setting}=<value>" for setting in CONTROL_SETTINGS]
        accepted = ", ".join([SB3, *variant_names(), *controls])
        raise ValueError(f"row {row!r} is unknown: accepted rows are {accepted}") from None


def row_setup(row: str, env_id: str, policy: Any = "MlpPolicy") -> tuple[Any, Any, dict[str, Any]]:
    """``(algorithm class, policy, keyword arguments)`` that ``row`` trains on ``env_id``, given the
    policy SB3's PPO uses there (PPG's rows use their phasic alias of it)."""

    check_row(row)
    arguments = zoo_ppo_arguments(env_id)
    if row == SB3:
        return PPO, policy, arguments
    if is_control(row):
        setting, value = control_setting(row)
        return PPO, policy, {**arguments, CONTROL_SETTINGS[setting]: value}
    return PPOVariant, variant_policy(row, policy), variant_arguments(row, arguments)


def adapts_learning_rate(arguments: dict[str, Any]) -> bool:
    """Whether a component of the loss sets the learning rate of each call (its cells record it)."""

    return any(type(c).learning_rate is not TrainingHook.learning_rate for c in arguments.get("loss", []))


def row_identity(row: str, env_id: str) -> dict[str, Any]:
    """What ``row`` trains on ``env_id``, as plain data (see the module docstring)."""
    algorithm, policy, arguments = row_setup(row, env_id)
    records = [LEARNING_RATES] if adapts_learning_rate(arguments) else []
    return {
        "row": row,
        "revision": REVISIONS.get(base_variant(row), 1),
        "algorithm": algorithm.__name__,
        "policy": plain(policy),
        "arguments": plain(arguments),
        "records": records,
    }


def row_id(row: str, env_id: str) -> str:
    """A short hash of :func:`row_identity`: equal exactly when the row trains the same thing."""
    text = json.dumps(row_identity(row, env_id), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plain(value: Any) -> Any:
    """``value`` as JSON-able plain data that does not depend on where its classes live."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"class": type(value).__name__, **fields}
    if isinstance(value, type):
        return value.__name__
    if hasattr(value, "__dict__") and not callable(getattr(value, "__code__", None)):
        attributes = {k: plain(v) for k, v in sorted(vars(value).items()) if not k.startswith("_")}
        return {"class": type(value).__name__, **attributes}
    return getattr(value, "__qualname__", type(value).__name__)
