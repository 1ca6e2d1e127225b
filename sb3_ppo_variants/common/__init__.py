from sb3_ppo_variants.common.errors import HyperparameterError, TrainingDivergedError

__all__ = ["HyperparameterError", "TrainingDivergedError"]
