"""Without loss=, MaskablePPOVariant and RecurrentPPOVariant are sb3-contrib's algorithms, bit for bit."""

import pytest
from sb3_contrib import MaskablePPO, RecurrentPPO
from sb3_contrib.common.envs import InvalidActionEnvDiscrete, InvalidActionEnvMultiDiscrete
from stable_baselines3.common.env_util import make_vec_env

from sb3_ppo_variants import MaskablePPOVariant, RecurrentPPOVariant
from tests.conftest import CueRecallEnv, parameters_equal

MASKED = {
    "discrete": (lambda: InvalidActionEnvDiscrete(dim=10, n_invalid_actions=3), {}),
    "multidiscrete": (lambda: InvalidActionEnvMultiDiscrete(dims=[3, 4], n_invalid_actions=2), {"clip_range_vf": 0.2}),
    "target-kl": (
        lambda: InvalidActionEnvDiscrete(dim=10, n_invalid_actions=3),
        {"target_kl": 0.003, "learning_rate": 3e-3},
    ),
}


@pytest.mark.parametrize("case", list(MASKED))
def test_maskable_default_loss_is_bit_identical(case):
    make_env, kwargs = MASKED[case]
    models = []
    for cls in (MaskablePPO, MaskablePPOVariant):
        env = make_vec_env(make_env, n_envs=2, seed=0)
        model = cls("MlpPolicy", env, **{"n_steps": 64, "batch_size": 32, "n_epochs": 4, "seed": 0, **kwargs})
        models.append(model.learn(64 * 2 * 3))
    reference, ours = models
    assert ours._n_updates == reference._n_updates
    assert parameters_equal(ours.policy, reference.policy)
    if "target_kl" in kwargs:
        assert reference._n_updates < 12  # early stopping fired


RECURRENT = {
    "discrete-memory": (CueRecallEnv, {}),
    "continuous": ("Pendulum-v1", {"clip_range_vf": 0.2, "ent_coef": 0.01}),
}


@pytest.mark.parametrize("case", list(RECURRENT))
def test_recurrent_default_loss_is_bit_identical(case):
    env_id, kwargs = RECURRENT[case]
    models = []
    for cls in (RecurrentPPO, RecurrentPPOVariant):
        env = make_vec_env(env_id, n_envs=2, seed=0)
        model = cls("MlpLstmPolicy", env, **{"n_steps": 64, "batch_size": 32, "n_epochs": 3, "seed": 0,
                                             "policy_kwargs": {"lstm_hidden_size": 16}, **kwargs})  # fmt: skip
        models.append(model.learn(64 * 2 * 3))
    reference, ours = models
    assert ours._n_updates == reference._n_updates
    assert parameters_equal(ours.policy, reference.policy)
