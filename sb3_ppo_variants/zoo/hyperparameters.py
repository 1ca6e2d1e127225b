"""What a Zoo hyperparameter file (or a Zoo trial) may say to our algorithms beyond SB3's PPO.

The RL Baselines3 Zoo passes every key of an environment's entry in its YAML file to the
algorithm's constructor, after turning ``lin_<x>`` strings into schedules for four keys of its
own (``learning_rate``, ``clip_range``, ``clip_range_vf``, ``delta_std``) and constants into
schedules. :func:`zoo_arguments` turns those keyword arguments into ``PPOVariant``'s:

- ``variant: spo``: a named variant (:data:`sb3_ppo_variants.variants.VARIANTS`); the other keys
  are SB3 ``PPO``'s, as in the Zoo's ``ppo.yml``, and the variant moves the loss-related ones
  into its components (see :func:`~sb3_ppo_variants.variants.variant_arguments`).
- ``loss: [clipped_surrogate, value, {name: kl_penalty, target: 0.01}]``: the loss as plain
  data, as ``PPOVariant(loss=...)`` takes it. A loss-related PPO key of the file (``clip_range``,
  ``ent_coef``, ``vf_coef``, ``clip_range_vf``, ``target_kl``) configures the component that
  takes it, unless the component's entry sets that field itself.
- ``lin_<x>`` anywhere (every schedulable argument and component field, not only the Zoo's
  four): a schedule decaying linearly from ``x`` to 0 over training, as the Zoo's ``lin_<x>``.
- ``n_minibatches``: the rollout (``n_steps`` times the number of environments) cut into that
  many minibatches; it replaces ``batch_size``. The search space samples it (see
  :mod:`sb3_ppo_variants.tuning.space`), so a trial never asks for a minibatch larger than the rollout.

Schedules become SB3's own classes (``LinearSchedule``, or the constant itself), so a model
the Zoo saves loads with ``PPOVariant.load(path, safe=True)``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stable_baselines3.common.utils import ConstantSchedule, LinearSchedule

from sb3_ppo_variants.common.schedules import LINEAR_PREFIX, linear_schedule
from sb3_ppo_variants.common.validation import check_int
from sb3_ppo_variants.components.protocol import registered_components
from sb3_ppo_variants.persistence.config import from_plain
from sb3_ppo_variants.tuning.space import minibatch_size
from sb3_ppo_variants.variants import LINKED_DEFAULTS, variant_arguments, variant_policy


def zoo_arguments(
    policy: Any,
    arguments: Mapping[str, Any],
    n_envs: int,
    variant: str | None = None,
    n_minibatches: int | None = None,
) -> tuple[Any, dict[str, Any]]:
    """``(policy, keyword arguments)`` for our algorithms from what the Zoo passes (module docstring)."""
    arguments = {key: _schedules(value, key) for key, value in arguments.items()}
    arguments = from_plain(arguments)  # dotted class names in policy_kwargs
    if n_minibatches is not None:
        check_int("n_minibatches", n_minibatches, low=1)
        arguments["batch_size"] = minibatch_size(arguments.get("n_steps", 2048), n_envs, n_minibatches)
    if variant is not None:
        return variant_policy(variant, policy), variant_arguments(variant, arguments)
    if arguments.get("loss") is not None:
        arguments["loss"] = _linked_into_loss(arguments["loss"], arguments)
    return policy, arguments


def _schedules(value: Any, key: str) -> Any:
    """``lin_<x>`` strings and the Zoo's schedule objects -> SB3's, in nested loss entries too."""
    if isinstance(value, str) and value.startswith(LINEAR_PREFIX):
        return linear_schedule(value, key)
    if isinstance(value, ConstantSchedule):
        return value.val
    if type(value).__name__ == "SimpleLinearSchedule" and hasattr(value, "initial_value"):  # rl_zoo3.utils
        return LinearSchedule(value.initial_value, 0.0, 1.0)
    if key == "loss" and isinstance(value, list | tuple):
        return [_schedules(entry, key) for entry in value]
    if key == "loss" and isinstance(value, Mapping):
        return {field: _schedules(item, f"loss {value.get('name')} {field}") for field, item in value.items()}
    return value


def _linked_into_loss(loss: Any, arguments: dict[str, Any]) -> list[Any]:
    """Move loss-related PPO arguments into the plain-data entries of components that take them."""
    entries = [loss] if isinstance(loss, str | Mapping) else list(loss)
    for index, entry in enumerate(entries):
        if not isinstance(entry, str | Mapping):
            continue  # a component instance carries its own values
        spec = {"name": entry} if isinstance(entry, str) else dict(entry)
        component = registered_components().get(spec["name"]) if "name" in spec else None
        for field, attribute in getattr(component, "linked", {}).items():
            if field not in spec and attribute in arguments and arguments[attribute] != LINKED_DEFAULTS[attribute]:
                spec[field] = arguments[attribute]
        entries[index] = spec
    return entries
