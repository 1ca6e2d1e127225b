"""Properties of every built-in component over random minibatches (hypothesis), not just examples:
finite losses and gradients for finite inputs up to the log-ratio clamp, invariance to padding,
configurations that rebuild the same component or are refused, and the compiled update equal to
the eager one on random rollouts."""

from __future__ import annotations

import math

import pytest
import torch as th
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.env_util import make_vec_env

from sb3_ppo_variants import HyperparameterError, PPOVariant
from sb3_ppo_variants.components import (
    LOG_RATIO_LIMIT,
    CISPOSurrogate,
    ClippedSurrogate,
    EntropyBonus,
    EWMAProximalSurrogate,
    KLPenalty,
    LogProbClippedSurrogate,
    MirrorDescentPenalty,
    RatioDeviationEarlyStop,
    RollbackSurrogate,
    SoftClipSurrogate,
    SPOSurrogate,
    Surrogate,
    TrustRegionGuidedSurrogate,
    ValueLoss,
    VTraceAdvantages,
    build_component,
)
from sb3_ppo_variants.components.protocol import Minibatch
from tests.conftest import training_context

# Components whose term is computed from a minibatch's tensors alone (no distribution objects).
COMPONENTS = [
    ClippedSurrogate(),
    ClippedSurrogate(dual_clip=3.0),
    ClippedSurrogate(clip_range_high=0.28),
    ClippedSurrogate(log_symmetric=True),
    Surrogate(),
    RollbackSurrogate(),
    SPOSurrogate(),
    SoftClipSurrogate(),
    SoftClipSurrogate(temperature=1.0, temperature_negative=1.05),
    CISPOSurrogate(),
    CISPOSurrogate(clip_range_low=0.2),
    LogProbClippedSurrogate(),
    TrustRegionGuidedSurrogate(),
    EWMAProximalSurrogate(),
    ValueLoss(),
    ValueLoss(clip_range=0.2),
    ValueLoss(clip_range=0.2, clip_mode="pessimistic", error="huber"),
    ValueLoss(clip_range=0.5, clip_mode="error", error="l1"),
    EntropyBonus(coef=0.01),
    *[KLPenalty(estimator=e, direction=d) for e in ("k1", "k2", "k3", "k3+") for d in ("forward", "reverse")],
    MirrorDescentPenalty(estimator="k3"),
]
IDS = [f"{c.name}-{i}" for i, c in enumerate(COMPONENTS)]

finite = st.floats(-1e3, 1e3, allow_nan=False, width=32)
log_ratios = st.floats(-LOG_RATIO_LIMIT, LOG_RATIO_LIMIT, allow_nan=False, width=32)
log_probs = st.floats(-30.0, 0.0, allow_nan=False, width=32)


@st.composite
def samples(draw, n: int) -> dict[str, list[float]]:
    def column(strategy):
        return draw(st.lists(strategy, min_size=n, max_size=n))

    return {
        "log_ratio": column(log_ratios),
        "advantages": column(finite),
        "returns": column(finite),
        "values": column(finite),
        "old_values": column(finite),
        "old_log_prob": column(log_probs),
        "proximal_log_prob": column(log_probs),
        "entropy": column(st.floats(0.0, 10.0, width=32)),
    }


def minibatch(columns: dict[str, list[float]], mask: list[bool] | None = None) -> Minibatch:
    tensors = {key: th.tensor(value, dtype=th.float32) for key, value in columns.items()}
    log_ratio = tensors.pop("log_ratio").requires_grad_(True)
    values = tensors.pop("values").requires_grad_(True)
    tensors["entropy"].requires_grad_(True)
    proximal = tensors.pop("proximal_log_prob")
    old_log_prob = tensors.pop("old_log_prob")
    return Minibatch(
        observations=th.zeros(len(log_ratio)),
        actions=th.zeros(len(log_ratio)),
        old_log_prob=old_log_prob,
        log_prob=old_log_prob + log_ratio,
        log_ratio=log_ratio,
        ratio=th.exp(log_ratio),
        values=values,
        distribution=None,
        old_distribution=None,
        mask=None if mask is None else th.tensor(mask),
        progress_remaining=1.0,
        policy=th.nn.Identity(),
        log_prob_under=lambda policy: proximal,
        **tensors,
    )


def _prepared(component):
    if isinstance(component, EWMAProximalSurrogate):
        component.before_train(training_context())  # its average's log-probabilities come from log_prob_under
    return component


@pytest.mark.parametrize("component", COMPONENTS, ids=IDS)
@given(data=st.data(), n=st.integers(2, 16))
def test_every_loss_and_its_gradient_are_finite_for_finite_inputs(component, data, n):
    batch = minibatch(data.draw(samples(n)))
    term = _prepared(component)(batch)
    assert term.loss is not None and th.isfinite(term.loss)
    inputs = [batch.log_ratio, batch.values, batch.entropy]
    gradients = th.autograd.grad(term.loss, inputs, allow_unused=True)
    assert all(g is None or th.isfinite(g).all() for g in gradients)
    assert any(g is not None for g in gradients)  # the term does depend on the minibatch
    assert all(math.isfinite(float(th.as_tensor(value).detach())) for value in term.stats.values())


@pytest.mark.parametrize("component", COMPONENTS, ids=IDS)
@given(data=st.data(), real=st.integers(2, 12), padding=st.integers(1, 6))
def test_padding_changes_nothing(component, data, real, padding):
    columns = data.draw(samples(real))
    junk = data.draw(samples(padding))
    padded = minibatch({k: columns[k] + junk[k] for k in columns}, mask=[True] * real + [False] * padding)
    plain = minibatch(columns)
    component = _prepared(component)
    assert th.allclose(component(padded).loss, component(plain).loss, rtol=1e-5, atol=1e-5)


@given(data=st.data(), real=st.integers(2, 12), padding=st.integers(1, 6))
def test_stopping_rules_ignore_padding(data, real, padding):
    columns, junk = data.draw(samples(real)), data.draw(samples(padding))
    padded = minibatch({k: columns[k] + junk[k] for k in columns}, mask=[True] * real + [False] * padding)
    plain = minibatch(columns)
    for rule in (RatioDeviationEarlyStop(statistic="mean"), RatioDeviationEarlyStop(statistic="median")):
        assert th.allclose(rule(padded).stats["ratio_deviation"], rule(plain).stats["ratio_deviation"], rtol=1e-5)
    assert th.allclose(
        VTraceAdvantages()(padded).stats["vtrace_truncated_fraction"],
        VTraceAdvantages()(plain).stats["vtrace_truncated_fraction"],
    )


positive = st.floats(1e-3, 10.0, allow_nan=False)
configurations = st.one_of(
    st.builds(ClippedSurrogate, clip_range=st.floats(1e-3, 0.9), dual_clip=st.none() | st.floats(1.01, 10.0)),
    st.builds(RollbackSurrogate, clip_range=st.floats(1e-3, 0.9), rollback=st.floats(0.0, 5.0)),
    st.builds(SoftClipSurrogate, temperature=positive, temperature_negative=st.none() | positive),
    st.builds(CISPOSurrogate, clip_range_high=positive, clip_range_low=st.none() | st.floats(1e-3, 1.0)),
    st.builds(TrustRegionGuidedSurrogate, clip_range=st.floats(1e-3, 0.9), kl_range=positive),
    st.builds(
        EWMAProximalSurrogate, decay=st.none() | st.floats(0.0, 0.999), max_importance_weight=st.floats(1.5, 1e3)
    ),
    st.builds(
        ValueLoss,
        coef=st.floats(0.0, 10.0),
        clip_range=st.none() | positive,
        error=st.sampled_from(["squared", "huber", "l1"]),
    ),
    st.builds(
        KLPenalty,
        coef=positive,
        target=positive,
        rule=st.sampled_from(["paper", "rllib"]),
        estimator=st.sampled_from(["exact", "k1", "k2", "k3", "k3+"]),
        direction=st.sampled_from(["forward", "reverse"]),
    ),
    st.builds(RatioDeviationEarlyStop, max_deviation=positive, statistic=st.sampled_from(["mean", "median"])),
    st.builds(MirrorDescentPenalty, min_step_size=st.floats(1e-4, 1.0), estimator=st.sampled_from(["exact", "k3"])),
)


@given(component=configurations)
def test_a_configuration_rebuilds_an_equal_component(component):
    assert build_component(component.config()) == component


invalid = st.one_of(
    st.tuples(st.just(ClippedSurrogate), st.just("clip_range"), st.floats(-10.0, 0.0)),
    st.tuples(st.just(ClippedSurrogate), st.just("dual_clip"), st.floats(-10.0, 1.0)),
    st.tuples(st.just(SoftClipSurrogate), st.just("temperature"), st.floats(-10.0, 0.0)),
    st.tuples(st.just(CISPOSurrogate), st.just("clip_range_low"), st.floats(1.001, 10.0)),
    st.tuples(st.just(TrustRegionGuidedSurrogate), st.just("kl_range"), st.floats(-1.0, 0.0)),
    st.tuples(st.just(EWMAProximalSurrogate), st.just("decay"), st.floats(1.0, 10.0)),
    st.tuples(st.just(ValueLoss), st.just("error"), st.text(max_size=5)),
    st.tuples(st.just(KLPenalty), st.just("estimator"), st.text(max_size=5)),
    st.tuples(st.just(RatioDeviationEarlyStop), st.just("max_deviation"), st.floats(-1.0, 0.0)),
    st.tuples(st.just(LogProbClippedSurrogate), st.just("clip_range"), st.floats(1.0, 10.0)),
    st.tuples(st.just(MirrorDescentPenalty), st.just("min_step_size"), st.floats(-1.0, 0.0)),
)


@given(case=invalid)
def test_an_invalid_parameter_is_refused_with_its_name(case):
    cls, name, value = case
    with pytest.raises(HyperparameterError, match=name):
        build_component({"name": cls.name, name: value})


# Policy losses that compile as one graph; aot_eager traces the same graph without generating code.
COMPILED = [
    ClippedSurrogate(),
    ClippedSurrogate(dual_clip=3.0),
    ClippedSurrogate(clip_range_high=0.28),
    RollbackSurrogate(),
    SPOSurrogate(),
    SoftClipSurrogate(),
    CISPOSurrogate(),
    LogProbClippedSurrogate(),
    KLPenalty(estimator="k3"),
]


@settings(max_examples=min(settings().max_examples, 4))  # each example compiles a graph
@given(
    policy_loss=st.sampled_from(COMPILED),
    seed=st.integers(0, 2**16),
    ent_coef=st.floats(0.0, 0.1),
    clip_range=st.floats(0.05, 0.5),
)
def test_the_compiled_update_equals_the_eager_one_on_random_rollouts(policy_loss, seed, ent_coef, clip_range):
    loss = [policy_loss, ValueLoss(clip_range=clip_range), EntropyBonus(coef=ent_coef)]

    def one_update(compile):
        env = make_vec_env("CartPole-v1", n_envs=2, seed=seed)
        options = dict(n_steps=32, batch_size=64, n_epochs=1, seed=seed, compile=compile)
        return PPOVariant("MlpPolicy", env, loss=loss, **options).learn(64)

    eager, compiled = one_update(False), one_update({"backend": "aot_eager"})
    assert compiled.compiled_path == "one graph"
    for (name, parameter), reference in zip(compiled.policy.named_parameters(), eager.policy.parameters(), strict=True):
        assert th.allclose(parameter, reference, rtol=1e-5, atol=1e-6), name
