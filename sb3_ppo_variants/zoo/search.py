"""The Zoo's ``-optimize`` on our search space (:mod:`sb3_ppo_variants.tuning.space`), loss included."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from sb3_ppo_variants.components.protocol import linked_values
from sb3_ppo_variants.persistence.config import to_plain
from sb3_ppo_variants.tuning.space import SearchSpace, ppo_variant_arguments, with_defaults
from sb3_ppo_variants.variants import LINKED_DEFAULTS


def trial_hyperparameters(values: Mapping[str, Any]) -> dict[str, Any]:
    """The Zoo keyword arguments of one trial's values (what the sampler returns, and what the
    Zoo's ``--trial-id`` converts a finished trial's ``params`` back to), as plain data.

    The loss-related PPO arguments are set to the sampled components' values, so they replace
    those of the Zoo's hyperparameter file as the Zoo's own sampler replaces them; those that are
    ``None`` (no value clipping, no KL target) are left out, because the Zoo refuses ``None``
    for ``clip_range_vf`` (none of the Zoo's PPO files sets either).
    """
    values = with_defaults(values)
    arguments = ppo_variant_arguments(values, n_envs=1)
    del arguments["batch_size"]  # from n_minibatches, once the number of environments is known
    linked = linked_values(arguments["loss"])
    return {
        **to_plain(arguments),
        **{
            attr: value for attr, default in LINKED_DEFAULTS.items() if (value := linked.get(attr, default)) is not None
        },
        "n_minibatches": int(values["n_minibatches"]),
    }


@dataclass
class ZooSampler:
    """A Zoo ``HYPERPARAMS_SAMPLER`` entry: samples ``space`` for a trial."""

    space: SearchSpace = field(default_factory=SearchSpace)

    def __call__(self, trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
        self.space.check(n_envs)
        return trial_hyperparameters(self.space.sample(trial))
