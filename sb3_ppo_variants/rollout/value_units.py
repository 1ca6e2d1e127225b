"""The rollout side of a value transform: the critic's outputs in return units while collecting.

SB3's ``collect_rollouts`` stores the critic's values, bootstraps time limits with them and
runs GAE on them. With a component that normalises value predictions (a
:class:`~sb3_ppo_variants.components.hooks.TrainingHook` overriding ``denormalize_values``), those
must be in return units, so while collecting (and while recomputing advantages) the output of
the policy's value head is passed through ``denormalize_values``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch as th
from stable_baselines3.common.policies import BasePolicy

from sb3_ppo_variants.common.errors import HyperparameterError
from sb3_ppo_variants.components.hooks import TrainingHook


@contextlib.contextmanager
def values_in_return_units(policy: BasePolicy, transform: TrainingHook | None) -> Iterator[None]:
    """Within the block, ``policy``'s value predictions are ``transform.denormalize_values`` of its
    critic's output (no change without a transform)."""
    if transform is None:
        yield
        return
    value_net = getattr(policy, "value_net", None)
    if not isinstance(value_net, th.nn.Module):
        raise HyperparameterError(
            f"{type(transform).__name__} transforms value predictions, which needs a policy with a value_net "
            f"module (SB3's and sb3-contrib's actor-critic policies): {type(policy).__name__} has none."
        )
    handle = value_net.register_forward_hook(lambda module, inputs, output: transform.denormalize_values(output))
    try:
        yield
    finally:
        handle.remove()
