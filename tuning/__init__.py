"""Optuna studies of PPOVariant's hyperparameters and loss components (work in progress: the search space)."""

from tuning.space import DEFAULT_PARAMETERS, Parameter, SearchSpace, SearchSpaceError, load_space, ppo_variant_arguments

__all__ = ["DEFAULT_PARAMETERS", "Parameter", "SearchSpace", "SearchSpaceError", "load_space", "ppo_variant_arguments"]
