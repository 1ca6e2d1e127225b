"""Samplers and pruners by name, as ``python -m tuning --sampler/--pruner`` chooses them."""

from __future__ import annotations

import warnings

import optuna

from sb3_ppo_variants.tuning.errors import TuningError
from sb3_ppo_variants.tuning.objective import Task

SAMPLERS = ("tpe", "random", "cmaes", "gp")
PRUNERS = ("median", "halving", "none")


def make_sampler(name: str, seed: int | None = None, n_startup_trials: int = 10) -> optuna.samplers.BaseSampler:
    """``tpe`` (multivariate, conditional groups, constant liar for parallel workers), ``random``,
    ``cmaes`` or ``gp``; the first ``n_startup_trials`` are random for all but ``random``."""
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        if name == "tpe":
            return optuna.samplers.TPESampler(
                n_startup_trials=n_startup_trials, multivariate=True, group=True, constant_liar=True, seed=seed
            )
        # Both model the numeric parameters shared by all trials; the conditional loss parameters
        # are sampled independently (by TPE), which is expected here, not worth a warning per trial.
        independent = optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup_trials)
        if name in ("cmaes", "gp"):
            sampler = optuna.samplers.CmaEsSampler if name == "cmaes" else optuna.samplers.GPSampler
            return sampler(
                n_startup_trials=n_startup_trials,
                seed=seed,
                independent_sampler=independent,
                warn_independent_sampling=False,
            )
    raise TuningError(f"sampler={name!r} is invalid: accepted values are {', '.join(SAMPLERS)}")


def make_pruner(name: str, task: Task, n_startup_trials: int = 5) -> optuna.pruners.BasePruner:
    """``median`` (after ``n_startup_trials`` trials and the first third of a run), ``halving``
    (successive halving), or ``none``. Steps are environment steps."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=n_startup_trials, n_warmup_steps=task.n_timesteps // 3)
    if name == "halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    if name == "none":
        return optuna.pruners.NopPruner()
    raise TuningError(f"pruner={name!r} is invalid: accepted values are {', '.join(PRUNERS)}")
