from sb3_ppo_variants.ppo_recurrent.policies import CnnLstmPolicy, MlpLstmPolicy, MultiInputLstmPolicy
from sb3_ppo_variants.ppo_recurrent.ppo_recurrent import RecurrentPPOVariant

__all__ = ["CnnLstmPolicy", "MlpLstmPolicy", "MultiInputLstmPolicy", "RecurrentPPOVariant"]
