"""The tuning search space: conditional loss parameters, never-invalid batches, YAML restriction."""

import optuna
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_ppo_variants import PPOVariant
from sb3_ppo_variants.components import ClippedSurrogate, KLPenalty, Surrogate, TrustRegionRollbackSurrogate
from sb3_ppo_variants.tuning import SearchSpace, SearchSpaceError, load_space, ppo_variant_arguments
from sb3_ppo_variants.tuning.space import DEFAULT_PARAMETERS, TUNED_VARIANTS
from sb3_ppo_variants.variants import VARIANTS, variant_arguments

optuna.logging.set_verbosity(optuna.logging.WARNING)


def sampled(space: SearchSpace, n: int = 200, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    values = []
    for _ in range(n):
        trial = study.ask()
        values.append(space.sample(trial))
        study.tell(trial, 0.0)
    return values


def test_the_space_samples_variant_names_and_each_variants_own_constants():
    seen = set()
    for values in sampled(SearchSpace()):
        kind = values["variant"]
        seen.add(kind)
        assert kind in VARIANTS
        assert ("dual_clip" in values) == (kind == "dual-clip")
        assert ("rollback" in values) == (kind == "ppo-rb")
        assert ("tr_kl_range" in values) == ("tr_rollback" in values) == (kind == "tr-ppo-rb")
        assert ("kl_penalty" in values) == (kind in ("ppo", "dual-clip", "clip-higher"))
        assert ("kl_target" in values) == (kind == "ppo-penalty" or values.get("kl_penalty", False))
        assert ("soft_clip_temperature" in values) == (kind == "p3o")
        assert ("cispo_clip_high" in values) == (kind == "cispo")
        assert ("espo_max_deviation" in values) == (kind == "espo")
        assert ("outer_learning_rate" in values) == ("outer_momentum" in values) == values["outer_ppo"]
        assert ("value_clip_range" in values) == (values["value_clip"] != "none")
    assert seen == set(TUNED_VARIANTS)


def test_a_variants_tunable_ranges_are_the_spaces_and_its_constants_the_default():
    for name, variant in VARIANTS.items():
        for key, tunable in variant.tunable.items():
            parameter = DEFAULT_PARAMETERS[key]
            assert (parameter.low, parameter.high, parameter.log) == (tunable.low, tunable.high, tunable.log)
            assert parameter.when({"variant": name}) or key == "kl_target"
    # A variant sampled without its constants trains exactly as the variant does, ESPO's epochs included.
    for name in TUNED_VARIANTS:
        sampled_values = {"variant": name, "n_epochs": 10}
        built = ppo_variant_arguments(sampled_values, 1)
        named = variant_arguments(name, {"n_epochs": 10}, tuned={}) if name != "ppo" else {"n_epochs": 10}
        assert built["n_epochs"] == named["n_epochs"]
        if name == "clip-higher":  # the variant's bound, Scaled(0.2, 1.4), is its value 0.28 in a trial
            assert built["loss"][0].clip_range_high == pytest.approx(named["loss"][0].clip_range_high(1.0))
        elif name != "ppo":
            assert [c.config() for c in built["loss"]] == [c.config() for c in named["loss"]]
    assert ppo_variant_arguments({"variant": "espo", "n_epochs": 10}, 1)["n_epochs"] == 30


def test_every_sampled_configuration_has_a_plain_form():
    from sb3_ppo_variants.persistence.config import from_plain, to_plain

    for values in sampled(SearchSpace(), n=100):
        plain = to_plain(ppo_variant_arguments(values, 1))  # what best.yaml and the Zoo's trials hold
        assert from_plain(plain, allow=())["loss"] == plain["loss"]


def test_the_loss_follows_the_sampled_variant_and_its_values():
    base = {"clip_range": 0.3, "value_clip": "pessimistic", "value_clip_range": 0.5}
    loss = ppo_variant_arguments({**base, "variant": "clip-higher", "clip_high_ratio": 1.5}, 1)["loss"]
    assert isinstance(loss[0], ClippedSurrogate) and loss[0].clip_range_high == pytest.approx(0.45)
    assert loss[2].clip_mode == "pessimistic" and loss[2].clip_range == 0.5
    penalty = ppo_variant_arguments({"variant": "ppo-penalty", "kl_target": 0.02}, 1)["loss"]
    assert isinstance(penalty[0], Surrogate) and penalty[-1] == KLPenalty(coef=1.0, target=0.02)
    tr = ppo_variant_arguments({"variant": "tr-ppo-rb", "tr_kl_range": 0.01, "tr_rollback": 0.2}, 1)["loss"]
    assert tr[0] == TrustRegionRollbackSurrogate(kl_range=0.01, rollback=0.2)
    dual = ppo_variant_arguments({"variant": "dual-clip", "dual_clip": 2.5, "kl_penalty": True}, 1)["loss"]
    assert dual[0].dual_clip == 2.5 and dual[-1] == KLPenalty(coef=0.2, target=0.01, adaptive=True)
    p3o = ppo_variant_arguments({"variant": "p3o", "soft_clip_temperature": 2.0}, 1)["loss"]
    assert p3o[0].temperature == 2.0 and p3o[-1].coef == 0.1  # P3O's own KL term


@pytest.mark.parametrize("n_envs", [1, 8])
def test_every_sampled_configuration_builds_a_valid_model(n_envs):
    space = SearchSpace()
    space.check(n_envs)
    env = make_vec_env("Pendulum-v1", n_envs=n_envs)
    for values in sampled(space, n=25, seed=n_envs):
        arguments = ppo_variant_arguments(values, n_envs)
        assert 2 <= arguments["batch_size"] <= arguments["n_steps"] * n_envs
        PPOVariant("MlpPolicy", env, device="cpu", **arguments)  # validation happens at construction


def test_trials_sampled_before_the_variant_names_rebuild_as_they_ran():
    base = {"clip_range": 0.3, "value_clip": "pessimistic", "value_clip_range": 0.5}
    loss = ppo_variant_arguments({**base, "policy_loss": "clip_higher", "clip_high_ratio": 1.5}, 1)["loss"]
    assert isinstance(loss[0], ClippedSurrogate) and loss[0].clip_range_high == pytest.approx(0.45)
    assert loss[2].clip_mode == "pessimistic" and loss[2].clip_range == 0.5
    penalty = ppo_variant_arguments({"policy_loss": "penalty", "kl_target": 0.02}, 1)["loss"]
    assert isinstance(penalty[0], Surrogate) and penalty[-1] == KLPenalty(coef=1.0, target=0.02)
    tr = ppo_variant_arguments({"policy_loss": "tr_rollback", "tr_kl_range": 0.01, "tr_rollback": 0.2}, 1)["loss"]
    assert tr[0] == TrustRegionRollbackSurrogate(kl_range=0.01, rollback=0.2)
    arguments = ppo_variant_arguments({"n_steps": 256, "n_minibatches": 4, "activation_fn": "relu"}, 2)
    assert arguments["batch_size"] == 128 and arguments["policy_kwargs"]["activation_fn"] is th.nn.ReLU


@pytest.mark.parametrize("loss", ["variant: spo", "policy_loss: spo"])  # the name before variant= too
def test_yaml_fixes_and_restricts_parameters(tmp_path, loss):
    path = tmp_path / "space.yaml"
    path.write_text(
        f"fixed:\n  {loss}\n  n_epochs: 10\n"
        "parameters:\n  clip_range: {choices: [0.1, 0.2]}\n  learning_rate: {low: 1.0e-4, high: 1.0e-3, log: true}\n"
    )
    space = load_space(path)
    for values in sampled(space, n=50):
        assert values["variant"] == "spo" and values["n_epochs"] == 10
        assert values["clip_range"] in (0.1, 0.2) and 1e-4 <= values["learning_rate"] <= 1e-3
        assert "dual_clip" not in values and "kl_penalty" not in values


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("parameters:\n  lr: {low: 1, high: 2}\n", "unknown parameter 'lr'"),
        ("parameters:\n  clip_range: {low: 0.3, high: 0.1}\n", "clip_range: low=0.3 and high=0.1"),
        ("parameters:\n  clip_range: {choices: []}\n", "choices must not be empty"),
        ("parameters:\n  clip_range: {between: [1, 2]}\n", "accepted keys are choices"),
        ("sample: {}\n", "accepted top-level keys are 'fixed' and 'parameters'"),
        ("parameters: [\n", "search-space file"),
        ("parameters:\n  variant: {choices: [spo, dual_clip]}\n", "variant 'dual_clip' is unknown"),
        ("parameters:\n  policy_loss: {choices: [spo, dual-clip]}\n", "policy_loss 'dual-clip' is unknown"),
    ],
)
def test_invalid_search_space_files_are_clear_errors(tmp_path, text, message):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    with pytest.raises(SearchSpaceError, match=message.replace("(", r"\(")):
        load_space(path)


def test_a_space_that_could_sample_a_one_sample_minibatch_is_refused():
    space = SearchSpace(fixed={"n_steps": 16})
    with pytest.raises(SearchSpaceError, match="gives minibatches of 0 sample"):
        space.check(n_envs=1)
    with pytest.raises(SearchSpaceError, match="unknown parameter"):
        SearchSpace(fixed={"batch_size": 64}).check(n_envs=1)


def test_the_next_wave_of_trials_before_the_variant_names_rebuild_as_they_ran():
    values = {"policy_loss": "cispo", "cispo_clip_high": 4.0, "kl_target": 0.02, "value_error": "l1"}
    loss = ppo_variant_arguments({**values, "value_normalization": "value_norm", "kl_adaptive_lr": True}, 1)["loss"]
    assert [type(c).__name__ for c in loss] == [
        "CISPOSurrogate", "EntropyBonus", "ValueLoss", "KLEarlyStop", "ValueNormalization", "KLAdaptiveLearningRate",
    ]  # fmt: skip
    assert loss[0].clip_range_high == 4.0 and loss[2].error == "l1" and loss[3].target == 0.02
    soft = ppo_variant_arguments({"policy_loss": "soft_clip", "soft_clip_temperature": 2.0, "kl_penalty": True}, 1)
    assert soft["loss"][0].temperature == 2.0 and type(soft["loss"][-1]).__name__ == "KLPenalty"
    espo = ppo_variant_arguments({"policy_loss": "espo", "espo_max_deviation": 0.1, "vtrace": True}, 1)["loss"]
    assert [type(c).__name__ for c in espo] == [
        "Surrogate", "EntropyBonus", "ValueLoss", "RatioDeviationEarlyStop", "VTraceAdvantages",
    ]  # fmt: skip
    assert espo[3].max_deviation == 0.1
    mdpo = ppo_variant_arguments({"policy_loss": "mdpo"}, 1)["loss"][-1]
    assert type(mdpo).__name__ == "MirrorDescentPenalty" and mdpo.direction == "reverse"
    outer = ppo_variant_arguments({"outer_ppo": True, "outer_learning_rate": 2.0, "outer_momentum": 0.5}, 1)
    assert (outer["loss"][-1].outer_learning_rate, outer["loss"][-1].momentum) == (2.0, 0.5)
    popart = ppo_variant_arguments({"value_normalization": "popart"}, 1)["loss"][-1]
    assert type(popart).__name__ == "ValueNormalization" and popart.preserve_outputs
    copg = ppo_variant_arguments({"policy_loss": "copg", "clip_range": 0.3}, 1)["loss"][0]
    assert type(copg).__name__ == "LogProbClippedSurrogate" and copg.clip_range == 0.3
    for kind, component in (("ewma", "EWMAProximalSurrogate"), ("trgppo", "TrustRegionGuidedSurrogate")):
        assert type(ppo_variant_arguments({"policy_loss": kind}, 1)["loss"][0]).__name__ == component
