"""Optuna studies of PPOVariant's hyperparameters and loss components.

``python -m tuning`` (see ``tuning/__main__.py``) or, from Python, :func:`run_study`, or
``study.optimize(Objective(Task.for_env(...)))`` on a study of your own.
"""

from sb3_ppo_variants.tuning.errors import TuningError
from sb3_ppo_variants.tuning.objective import Objective, Task, train_and_evaluate, trial_seed
from sb3_ppo_variants.tuning.samplers import PRUNERS, SAMPLERS
from sb3_ppo_variants.tuning.space import (
    DEFAULT_PARAMETERS,
    Parameter,
    SearchSpace,
    SearchSpaceError,
    Space,
    load_space,
    ppo_variant_arguments,
)
from sb3_ppo_variants.tuning.storage import DEFAULT_STORAGE, open_storage, open_study
from sb3_ppo_variants.tuning.study import run_study

__all__ = [
    "DEFAULT_PARAMETERS",
    "DEFAULT_STORAGE",
    "PRUNERS",
    "SAMPLERS",
    "Objective",
    "Parameter",
    "SearchSpace",
    "SearchSpaceError",
    "Space",
    "Task",
    "TuningError",
    "load_space",
    "open_storage",
    "open_study",
    "ppo_variant_arguments",
    "run_study",
    "train_and_evaluate",
    "trial_seed",
]
