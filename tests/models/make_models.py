"""Write the saved models that tests/persistence/test_model_files.py loads: one per algorithm, written by the
version of the package they were made with. Keep the files; add a new set (not a replacement)
when the saved format changes, with a migration that loads the old one.

    python tests/models/make_models.py
"""

from pathlib import Path

from sb3_contrib.common.envs import InvalidActionEnvDiscrete

from sb3_ppo_variants import MaskablePPOVariant, PPOVariant, RecurrentPPOVariant
from sb3_ppo_variants.components import ClippedSurrogate, KLPenalty, OuterUpdate, ValueLoss, ValueNormalization

HERE = Path(__file__).parent
SMALL = dict(n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")
WITH_STATE = [
    ClippedSurrogate(),
    ValueLoss(),
    KLPenalty(coef=0.5, adaptive=True),
    ValueNormalization(),
    OuterUpdate(momentum=0.9),
]


def models() -> dict[str, object]:
    tiny = {"net_arch": [8]}
    return {
        # These two name this package's module paths in their pickles: PPG's policy class and
        # clip-higher's Scaled schedule. They keep the paths of 0.1.0 loading after a move.
        "ppg": PPOVariant("MlpPolicy", "CartPole-v1", variant="ppg", policy_kwargs=tiny, **SMALL),
        "clip_higher": PPOVariant("MlpPolicy", "CartPole-v1", variant="clip-higher", policy_kwargs=tiny, **SMALL),
        "ppo_default": PPOVariant("MlpPolicy", "CartPole-v1", policy_kwargs=tiny, **SMALL),
        "ppo_with_state": PPOVariant("MlpPolicy", "Pendulum-v1", loss=WITH_STATE, policy_kwargs=tiny, **SMALL),
        "masked_default": MaskablePPOVariant(
            "MlpPolicy", InvalidActionEnvDiscrete(dim=4, n_invalid_actions=2), policy_kwargs=tiny, **SMALL
        ),
        "recurrent_default": RecurrentPPOVariant(
            "MlpLstmPolicy", "CartPole-v1", policy_kwargs={**tiny, "lstm_hidden_size": 8}, **SMALL
        ),
    }


if __name__ == "__main__":
    import sb3_ppo_variants

    for name, model in models().items():
        path = HERE / f"{name}-{sb3_ppo_variants.__version__}.zip"
        if not path.exists():  # a committed file is never rewritten
            model.learn(64).save(path)
