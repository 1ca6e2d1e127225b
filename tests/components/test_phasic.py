"""Phasic Policy Gradient: the auxiliary head, the auxiliary phase every N calls, and its state."""

import numpy as np
import pytest
import torch as th
from sb3_contrib.common.envs import InvalidActionEnvDiscrete
from stable_baselines3.common.env_util import make_vec_env

from sb3_ppo_variants import HyperparameterError, MaskablePPOVariant, PPOVariant, RecurrentPPOVariant
from sb3_ppo_variants.algorithms.policies import PhasicActorCriticCnnPolicy
from sb3_ppo_variants.components import ClippedSurrogate, ValueLoss
from sb3_ppo_variants.components.phasic import PhasicAuxiliaryPhase
from sb3_ppo_variants.variants import variant_arguments, variant_policy
from tests.conftest import FAST, ImageEnv, parameters_equal, save_continue_and_resume

CALL = FAST["n_steps"] * 2  # samples per train() call with two environments


def _ppg(env_id="CartPole-v1", policy="PhasicMlpPolicy", **phase):
    loss = [ClippedSurrogate(), ValueLoss(), PhasicAuxiliaryPhase(**{"n_iterations": 2, **phase})]
    return PPOVariant(policy, make_vec_env(env_id, n_envs=2, seed=0), loss=loss, **FAST)


def _saved(model, tmp_path):
    model.save(tmp_path / "saved.zip")
    return tmp_path / "saved.zip"


def _head(model):
    return {k: v.clone() for k, v in model.policy.aux_value_net.state_dict().items()}


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_the_auxiliary_phase_runs_every_n_calls_over_what_they_kept(env_id):
    model = _ppg(env_id)
    head = _head(model)
    model.learn(CALL)  # call 1: the policy phase only
    phase = model.loss[2]
    assert len(phase.kept["returns"]) == CALL and phase.kept["obs"].shape[0] == CALL
    assert all(th.equal(v, head[k]) for k, v in _head(model).items())  # no gradient reaches the head
    assert "train/aux_value_loss" not in model.logger.name_to_value
    model.learn(CALL, reset_num_timesteps=False)  # call 2: then the auxiliary phase
    logged = model.logger.name_to_value
    assert np.isfinite(logged["train/aux_value_loss"]) and logged["train/aux_kl"] >= 0
    assert not all(th.equal(v, head[k]) for k, v in _head(model).items())
    assert phase.kept == {} and phase.calls.item() == 2


def test_the_auxiliary_phase_fits_the_head_to_the_kept_returns():
    model = _ppg(aux_epochs=20)
    model.learn(CALL)
    phase = model.loss[2]
    observations, returns = phase.kept["obs"], phase.kept["returns"]

    def head_error():
        with th.no_grad():
            return ((model.policy.auxiliary_values(observations).flatten() - returns) ** 2).mean().item()

    before = head_error()
    model.learn(CALL, reset_num_timesteps=False)  # the phase fits the first call's data and the second's
    assert head_error() < 0.75 * before


def test_phasic_cnn_policy_trains_with_an_auxiliary_phase():
    model = _ppg(policy=PhasicActorCriticCnnPolicy, env_id=ImageEnv)
    model.learn(2 * CALL)
    assert np.isfinite(model.logger.name_to_value["train/aux_kl"])
    assert model.loss[2].kept == {}


def test_ppg_variant_uses_the_phasic_aliases_and_one_policy_epoch():
    assert variant_policy("ppg", "MlpPolicy") == "PhasicMlpPolicy"
    assert variant_policy("ppg", "CnnPolicy") == "PhasicCnnPolicy"
    assert variant_policy("ppo-rb", "MlpPolicy") == "MlpPolicy"
    arguments = variant_arguments("ppg", {"n_epochs": 20})
    assert arguments["n_epochs"] == 1 and arguments["loss"][-1] == PhasicAuxiliaryPhase()


def test_ppg_refuses_policies_without_the_auxiliary_head():
    with pytest.raises(HyperparameterError, match="accepted policies are PhasicActorCriticPolicy"):
        PPOVariant("MlpPolicy", "CartPole-v1", **variant_arguments("ppg"))
    masked = InvalidActionEnvDiscrete(dim=4, n_invalid_actions=2)
    with pytest.raises(HyperparameterError, match="invalid for policy MaskableActorCriticPolicy"):
        MaskablePPOVariant("MlpPolicy", masked, **variant_arguments("ppg"))
    with pytest.raises(HyperparameterError, match="invalid for policy RecurrentActorCriticPolicy"):
        RecurrentPPOVariant("MlpLstmPolicy", "CartPole-v1", **variant_arguments("ppg"))
    with pytest.raises(HyperparameterError, match="n_iterations"):
        PhasicAuxiliaryPhase(n_iterations=0)


def test_kept_rollouts_survive_save_load_and_continued_training_bit_for_bit(tmp_path):
    model = _ppg(n_iterations=3).learn(2 * CALL)  # mid-phase: two rollouts kept
    loaded = PPOVariant.load(_saved(model, tmp_path), device="cpu")
    assert len(loaded.loss[2].kept["returns"]) == 2 * CALL and loaded.loss[2].calls.item() == 2
    # The phase runs after the third call, in both.
    model, resumed = save_continue_and_resume(model, tmp_path / "model.zip", 2 * CALL)
    assert parameters_equal(model.policy, resumed.policy)
    assert resumed.loss[2].calls.item() == model.loss[2].calls.item() == 4
    assert th.equal(resumed.loss[2].kept["obs"], model.loss[2].kept["obs"])
