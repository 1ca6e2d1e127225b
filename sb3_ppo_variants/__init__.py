"""PPO variants for Stable-Baselines3: SB3's PPO with a loss made of pluggable components."""

from sb3_ppo_variants.common.errors import (
    HyperparameterError,
    ModelFileError,
    ModelFileWarning,
    NoValueLossWarning,
    RolloutDivergedError,
    TrainingDivergedError,
)
from sb3_ppo_variants.ppo_mask import MaskablePPOVariant
from sb3_ppo_variants.ppo_recurrent import RecurrentPPOVariant
from sb3_ppo_variants.ppo_variant import CnnPolicy, MlpPolicy, MultiInputPolicy, PPOVariant
from sb3_ppo_variants.training.safe_loading import load_vec_normalize

__version__ = "0.1.0"

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
]
