from sb3_ppo_variants.ppo_variant.policies import CnnPolicy, MlpPolicy, MultiInputPolicy
from sb3_ppo_variants.ppo_variant.ppo_variant import PPOVariant

__all__ = ["CnnPolicy", "MlpPolicy", "MultiInputPolicy", "PPOVariant"]
