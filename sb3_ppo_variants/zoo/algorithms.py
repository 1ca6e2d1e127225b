"""Our algorithms as the RL Baselines3 Zoo constructs them (see :mod:`.hyperparameters`)."""

from __future__ import annotations

from typing import Any

from sb3_ppo_variants.algorithms.ppo import PPOVariant
from sb3_ppo_variants.algorithms.recurrent import RecurrentPPOVariant
from sb3_ppo_variants.common.errors import TrainingDivergedError
from sb3_ppo_variants.zoo.hyperparameters import zoo_arguments


class ZooTrainingDivergedError(TrainingDivergedError, ValueError):
    """A diverged run under the Zoo: also a ``ValueError``, which the Zoo's ``-optimize`` prunes
    (as it prunes SB3's NaN errors) instead of ending the study."""


class _FromZoo:
    """Takes the Zoo's keyword arguments (``variant``, ``n_minibatches``, ``lin_<x>``, plain-data loss)."""

    def __init__(
        self, policy: Any, env: Any, variant: str | None = None, n_minibatches: int | None = None, **arguments: Any
    ) -> None:
        n_envs = getattr(env, "num_envs", 1)
        policy, arguments = zoo_arguments(policy, arguments, n_envs, variant=variant, n_minibatches=n_minibatches)
        super().__init__(policy, env, **arguments)  # type: ignore[call-arg]

    def learn(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().learn(*args, **kwargs)  # type: ignore[misc]
        except TrainingDivergedError as error:
            raise ZooTrainingDivergedError(str(error)) from error


class ZooPPOVariant(_FromZoo, PPOVariant):
    """:class:`~sb3_ppo_variants.PPOVariant` under the Zoo's name ``ppo_variant``. Its files are
    ``PPOVariant`` files: ``PPOVariant.load`` opens them."""


class ZooRecurrentPPOVariant(_FromZoo, RecurrentPPOVariant):
    """:class:`~sb3_ppo_variants.RecurrentPPOVariant` under the Zoo's name ``ppo_lstm_variant``."""
