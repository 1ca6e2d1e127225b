"""Each named variant trains end to end, logs its own statistics, and is built from PPO's arguments."""

import numpy as np
import pytest
import torch as th
from sb3_contrib.common.envs import InvalidActionEnvDiscrete
from stable_baselines3.common.env_util import make_vec_env

from sb3_ppo_variants import HyperparameterError, MaskablePPOVariant, PPOVariant, RecurrentPPOVariant
from sb3_ppo_variants.components import (
    ClippedSurrogate,
    EntropyBonus,
    KLEarlyStop,
    RatioDeviationEarlyStop,
    RollbackSurrogate,
    SoftClipSurrogate,
    TrustRegionGuidedSurrogate,
    ValueLoss,
)
from sb3_ppo_variants.components.phasic import PhasicAuxiliaryPhase
from sb3_ppo_variants.variants import (
    Scaled,
    resolve_variant,
    variant_arguments,
    variant_names,
    variant_policy,
)
from tests.conftest import FAST, parameters_equal

# The statistic that shows each variant is at work, beside SB3's.
OWN_STATISTIC = {
    "dual-clip": "dual_clip_fraction",
    "clip-higher": "clip_range_high",
    "ppo-penalty": "kl_coef",
    "ppo-rb": "rollback_fraction",
    "tr-ppo-rb": "rollback_fraction",
    "spo": "clip_fraction",
    "value-pessimistic": "value_clip_fraction",
    "p3o": "kl",
    "sapo": "soft_clip_weight",
    "cispo": "clip_fraction",
    "kl-adaptive-lr": "learning_rate_scale",
    "value-norm": "value_norm_std",
    "copg": "clip_fraction",
    "espo": "ratio_deviation",
    "mdpo": "kl_coef",
    "vtrace": "vtrace_truncated_fraction",
    "outer-ppo": "outer_update_norm",
    "trgppo": "trust_region_upper",
    "ppo-ewma": "proximal_kl",
    "popart": "value_norm_std",
}


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
@pytest.mark.parametrize("name", variant_names())
def test_each_variant_trains_end_to_end(name, env_id):
    env = make_vec_env(env_id, n_envs=2, seed=0)
    arguments = variant_arguments(name, {"clip_range": 0.2, "ent_coef": 0.01, **FAST})
    model = PPOVariant(variant_policy(name, "MlpPolicy"), env, **arguments).learn(256)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
    logged = model.logger.name_to_value
    for key in ("train/policy_gradient_loss", "train/value_loss", "train/approx_kl"):
        assert np.isfinite(logged[key])
    if name.split("@")[0] in OWN_STATISTIC:
        assert f"train/{OWN_STATISTIC[name.split('@')[0]]}" in logged


MASKED = ["dual-clip", "ppo-penalty", "tr-ppo-rb", "spo", "recompute-advantages", "p3o", "sapo", "cispo", "copg"]
MASKED += ["espo", "mdpo", "vtrace", "outer-ppo", "trgppo", "ppo-ewma", "popart"]
LSTM = ["clip-higher", "ppo-rb", "tr-ppo-rb", "spo", "value-huber", "p3o", "sapo", "cispo", "kl-adaptive-lr"]
LSTM += ["copg", "espo", "mdpo", "outer-ppo", "trgppo", "ppo-ewma", "popart"]


@pytest.mark.parametrize("name", MASKED)
def test_variants_train_with_action_masks(name):
    env = InvalidActionEnvDiscrete(dim=4, n_invalid_actions=2)
    model = MaskablePPOVariant("MlpPolicy", env, **variant_arguments(name, FAST)).learn(128)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


@pytest.mark.parametrize("name", LSTM)
def test_variants_train_with_an_lstm(name):
    arguments = variant_arguments(name, {**FAST, "n_steps": 32, "batch_size": 32})
    model = RecurrentPPOVariant("MlpLstmPolicy", "CartPole-v1", **arguments).learn(64)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


def test_variant_arguments_move_ppos_loss_arguments_into_the_components():
    arguments = variant_arguments("ppo-rb", {"clip_range": 0.1, "ent_coef": 0.01, "vf_coef": 0.7, "n_steps": 64})
    assert arguments["n_steps"] == 64 and "clip_range" not in arguments and "ent_coef" not in arguments
    rollback, entropy, value, early_stop = arguments["loss"]
    assert rollback == RollbackSurrogate(clip_range=0.1, rollback=0.3)
    assert entropy == EntropyBonus(coef=0.01) and value == ValueLoss(coef=0.7) and early_stop == KLEarlyStop()


def test_clip_higher_scales_a_schedule_and_pessimistic_value_clipping_uses_the_clip_range():
    (surrogate, *_) = variant_arguments("clip-higher", {"clip_range": lambda progress: 0.2 * progress})["loss"]
    assert isinstance(surrogate, ClippedSurrogate) and surrogate.clip_range_high == Scaled(surrogate.clip_range, 1.4)
    assert surrogate.clip_range_high(0.5) == pytest.approx(0.14)
    value = variant_arguments("value-pessimistic", {"clip_range": 0.3})["loss"][2]
    assert value.clip_range == 0.3 and value.clip_mode == "pessimistic"


def test_ppo_variant_is_the_arguments_unchanged_and_unknown_names_are_errors():
    assert variant_arguments("ppo", {"clip_range": 0.1}) == {"clip_range": 0.1}
    with pytest.raises(HyperparameterError, match="variant='ppo2' is unknown: accepted values are ppo, dual-clip"):
        variant_arguments("ppo2")
    with pytest.raises(HyperparameterError, match=r"loss=\.\.\. cannot be combined with a named variant"):
        variant_arguments("spo", {"loss": []})


def test_unknown_variant_names_suggest_the_closest_one():
    with pytest.raises(HyperparameterError, match="Did you mean 'dual-clip'"):
        variant_arguments("dual_clip")
    with pytest.raises(HyperparameterError, match="Did you mean 'ppg@recommended'"):
        variant_arguments("ppg@recomended")
    with pytest.raises(HyperparameterError, match="is unknown"):
        variant_arguments("spo@recommended")  # SPO's defaults are its settings for control tasks


def test_recommended_settings_change_only_what_their_description_names():
    assert all(resolve_variant(n).description for n in variant_names() if "@" in n)
    ppg = variant_arguments("ppg@recommended", {"n_epochs": 10})
    assert ppg["n_epochs"] == 10 and ppg["loss"][-1] == PhasicAuxiliaryPhase(n_iterations=4)  # PPO's epochs kept
    assert variant_policy("ppg@recommended", "MlpPolicy") == "PhasicMlpPolicy"
    assert variant_arguments("sapo@recommended")["loss"][0] == SoftClipSurrogate(
        temperature=4.0, temperature_negative=4.2
    )
    cispo = variant_arguments("cispo@recommended")["loss"][0]
    assert (cispo.clip_range_low, cispo.clip_range_high) == (0.2, 0.2)
    espo = variant_arguments("espo@recommended", {"learning_rate": 1e-3, "n_epochs": 10})
    assert (espo["learning_rate"], espo["batch_size"]) == (3e-4, 64)
    assert espo["loss"][-1] == RatioDeviationEarlyStop(max_deviation=0.25, max_updates=300)
    trgppo = variant_arguments("trgppo@recommended", {"clip_range": 0.1})["loss"][0]
    assert trgppo == TrustRegionGuidedSurrogate(clip_range=0.1, widen_ppo_band=True, anneal=False)


def test_cispo_stops_early_on_the_kl_unless_target_kl_says_otherwise():
    *_, early_stop = variant_arguments("cispo", {})["loss"]
    assert early_stop == KLEarlyStop(target=0.02)
    *_, early_stop = variant_arguments("cispo", {"target_kl": 0.05})["loss"]
    assert early_stop == KLEarlyStop(target=0.05)


@pytest.mark.parametrize("cls", [PPOVariant, MaskablePPOVariant, RecurrentPPOVariant])
def test_the_variant_keyword_builds_what_variant_arguments_builds(cls, tmp_path):
    env_id = "CartPole-v1" if cls is not MaskablePPOVariant else InvalidActionEnvDiscrete(dim=4, n_invalid_actions=2)
    policy = "MlpLstmPolicy" if cls is RecurrentPPOVariant else "MlpPolicy"
    settings = {**FAST, "n_steps": 32, "batch_size": 32, "clip_range": 0.1}
    by_keyword = cls(policy, env_id, variant="spo", **settings).learn(64)
    by_hand = cls(policy, env_id, **variant_arguments("spo", settings)).learn(64)
    assert parameters_equal(by_keyword.policy, by_hand.policy)
    assert by_keyword.loss_config() == by_hand.loss_config() and by_keyword.variant == "spo"
    by_keyword.save(tmp_path / "model.zip")
    assert cls.load(tmp_path / "model.zip").variant == "spo"


def test_the_variant_keyword_gives_ppg_its_phasic_policy_and_refuses_what_a_variant_cannot_serve():
    model = PPOVariant("MlpPolicy", "CartPole-v1", variant="ppg", **FAST)
    assert type(model.policy).__name__ == "PhasicActorCriticPolicy" and model.n_epochs == 1
    with pytest.raises(HyperparameterError, match="accepted policies are PhasicActorCriticPolicy"):
        MaskablePPOVariant("MlpPolicy", InvalidActionEnvDiscrete(dim=4, n_invalid_actions=2), variant="ppg")
    with pytest.raises(HyperparameterError, match="V-trace would need to replay the LSTM"):
        RecurrentPPOVariant("MlpLstmPolicy", "CartPole-v1", variant="vtrace")
    with pytest.raises(HyperparameterError, match="Did you mean 'spo'"):
        PPOVariant("MlpPolicy", "CartPole-v1", variant="sppo")
    with pytest.raises(HyperparameterError, match="cannot be combined with a named variant"):
        PPOVariant("MlpPolicy", "CartPole-v1", variant="spo", loss=["clipped_surrogate", "value"])
    assert PPOVariant("MlpPolicy", "CartPole-v1").variant is None
