"""PPO variants for Stable-Baselines3: SB3's PPO with a loss made of pluggable components."""

from sb3_ppo_variants import old_paths
from sb3_ppo_variants.algorithms import MaskablePPOVariant, PPOVariant, RecurrentPPOVariant
from sb3_ppo_variants.algorithms.ppo import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_ppo_variants.common.errors import (
    HyperparameterError,
    ModelFileError,
    ModelFileWarning,
    NoValueLossWarning,
    RolloutDivergedError,
    TrainingDivergedError,
)
from sb3_ppo_variants.persistence.safe_loading import load_vec_normalize

__version__ = "0.1.0"
old_paths.install()

__all__ = [
    "CnnPolicy",
    "HyperparameterError",
    "MaskablePPOVariant",
    "MlpPolicy",
    "ModelFileError",
    "ModelFileWarning",
    "MultiInputPolicy",
    "NoValueLossWarning",
    "PPOVariant",
    "RecurrentPPOVariant",
    "RolloutDivergedError",
    "TrainingDivergedError",
    "__version__",
    "load_vec_normalize",
    "load_zoo_folder",
]


def __getattr__(name: str) -> object:
    # load_zoo_folder lives with the Zoo launcher, whose package imports Optuna: only when asked for.
    if name == "load_zoo_folder":
        from sb3_ppo_variants.zoo.folders import load_zoo_folder

        return load_zoo_folder
    raise AttributeError(f"module 'sb3_ppo_variants' has no attribute {name!r}")
