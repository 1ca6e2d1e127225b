"""Our algorithms in the RL Baselines3 Zoo (``rl_zoo3``; install the ``zoo`` extra).

The Zoo has no plugin mechanism: its scripts read the module-level tables
``rl_zoo3.utils.ALGOS``, ``rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER`` and
``HYPERPARAMS_CONVERTER``, and the Zoo's own guide registers a new algorithm by adding to them
before calling its ``train()``. :func:`register` does that; ``python -m sb3_ppo_variants.zoo``
registers and runs the Zoo's ``train``, ``enjoy`` or ``record_video`` with the Zoo's own
arguments::

    python -m sb3_ppo_variants.zoo train --algo ppo_variant --env CartPole-v1 -n 50000 -f logs/
    python -m sb3_ppo_variants.zoo enjoy --algo ppo_variant --env CartPole-v1 -f logs/ --no-render -n 500

``ppo_variant`` is :class:`~sb3_ppo_variants.PPOVariant` and ``ppo_lstm_variant``
:class:`~sb3_ppo_variants.RecurrentPPOVariant`; the Zoo's ``ppo`` and ``ppo_lstm`` stay SB3's
classes, so saved Zoo runs keep loading with them. The masked variant is not registered: the
Zoo evaluates without action masks.
"""

from __future__ import annotations

from pathlib import Path

from sb3_ppo_variants.zoo.algorithms import ZooPPOVariant, ZooRecurrentPPOVariant, ZooTrainingDivergedError
from sb3_ppo_variants.zoo.hyperparameters import zoo_arguments
from sb3_ppo_variants.zoo.search import ZooSampler, trial_hyperparameters

ALGORITHMS = {"ppo_variant": ZooPPOVariant, "ppo_lstm_variant": ZooRecurrentPPOVariant}
"""The Zoo names we register."""

ZOO_HYPERPARAMETERS = {"ppo_variant": "ppo.yml", "ppo_lstm_variant": "ppo_lstm.yml"}
"""The Zoo's file each name reads without ``-conf``: the Zoo's tuned PPO (and LSTM PPO) values."""


def register(search_space: str | Path | None = None) -> None:
    """Add our algorithms to the Zoo's tables. ``-optimize`` samples ``search_space`` (a
    :func:`tuning.load_space` file; the default space without one)."""
    from rl_zoo3 import hyperparams_opt, utils

    from sb3_ppo_variants.tuning.space import load_space

    sampler = ZooSampler(load_space(search_space))
    for name, algorithm in ALGORITHMS.items():
        utils.ALGOS[name] = algorithm
        hyperparams_opt.HYPERPARAMS_SAMPLER[name] = sampler
        hyperparams_opt.HYPERPARAMS_CONVERTER[name] = trial_hyperparameters


def zoo_hyperparameters_file(algorithm: str) -> Path:
    """The Zoo's hyperparameter file that ``algorithm`` (one of :data:`ALGORITHMS`) reads by default."""
    import rl_zoo3

    return Path(rl_zoo3.__file__).parent / "hyperparams" / ZOO_HYPERPARAMETERS[algorithm]


__all__ = [
    "ALGORITHMS",
    "ZooPPOVariant",
    "ZooRecurrentPPOVariant",
    "ZooSampler",
    "ZooTrainingDivergedError",
    "register",
    "trial_hyperparameters",
    "zoo_arguments",
    "zoo_hyperparameters_file",
]
