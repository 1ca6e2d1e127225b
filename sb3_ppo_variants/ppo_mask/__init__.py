from sb3_ppo_variants.ppo_mask.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_ppo_variants.ppo_mask.ppo_mask import MaskablePPOVariant

__all__ = ["CnnPolicy", "MaskablePPOVariant", "MlpPolicy", "MultiInputPolicy"]
