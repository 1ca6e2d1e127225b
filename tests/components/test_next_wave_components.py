"""The next wave of components and options: value and gradient against hand computations."""

import copy
import math
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from sb3_contrib.common.envs import InvalidActionEnvDiscrete
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.env_util import make_vec_env
from torch.distributions import Categorical

from sb3_ppo_variants import HyperparameterError, MaskablePPOVariant, PPOVariant, RecurrentPPOVariant
from sb3_ppo_variants.components import (
    CISPOSurrogate,
    ClippedSurrogate,
    EWMAProximalSurrogate,
    KLAdaptiveLearningRate,
    LogProbClippedSurrogate,
    MirrorDescentPenalty,
    OuterUpdate,
    RatioDeviationEarlyStop,
    SoftClipSurrogate,
    Surrogate,
    TrustRegionGuidedSurrogate,
    ValueLoss,
    ValueNormalization,
    VTraceAdvantages,
    gaussian_trust_region_kl,
    gaussian_trust_region_ratio_bounds,
    kl_per_sample,
    trust_region_ratio_bounds,
)
from sb3_ppo_variants.variants import variant_arguments
from tests.conftest import FAST, make_batch, parameters_equal, save_continue_and_resume, training_context


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def grad_of(term, tensor) -> list[float]:
    (grad,) = th.autograd.grad(term.loss, tensor)
    return grad.tolist()


def test_soft_clip_is_a_sigmoid_gate_whose_slope_at_one_is_ppos():
    ratios, advantages = [0.5, 1.0, 1.5, 3.0], [1.0, -1.0, 2.0, -0.5]
    batch = make_batch(ratio=ratios, advantages=advantages)
    term = SoftClipSurrogate(temperature=4.0)(batch)
    gates = [sigmoid(4 * (r - 1)) for r in ratios]
    assert term.loss.item() == pytest.approx(-sum(g * a for g, a in zip(gates, advantages, strict=True)) / 4)
    # d/dlog r of (4/tau) sigmoid(tau (r - 1)) A is 4 sigmoid (1 - sigmoid) A r; at r = 1 that is PPO's A.
    expected = [-4 * g * (1 - g) * a * r / 4 for g, a, r in zip(gates, advantages, ratios, strict=True)]
    assert grad_of(term, batch.log_ratio) == pytest.approx(expected, rel=1e-4, abs=1e-7)
    assert expected[1] == pytest.approx(1.0 / 4)  # r = 1, A = -1: -A / n
    assert term.stats["soft_clip_weight"].item() == pytest.approx(np.mean([4 * g * (1 - g) for g in gates]))


def test_sapo_takes_its_temperature_from_the_sign_of_the_advantage():
    ratios, advantages = [1.4, 1.4, 0.6], [1.0, -1.0, -2.0]
    term = SoftClipSurrogate(temperature=1.0, temperature_negative=1.05)(
        make_batch(ratio=ratios, advantages=advantages)
    )
    taus = [1.0, 1.05, 1.05]
    objective = [(4 / t) * sigmoid(t * (r - 1)) * a for t, r, a in zip(taus, ratios, advantages, strict=True)]
    assert term.loss.item() == pytest.approx(-sum(objective) / 3, rel=1e-6)


def test_cispo_keeps_every_samples_gradient_through_a_truncated_weight():
    ratios, advantages = [0.5, 1.0, 1.3, 2.0], [1.0, -1.0, 2.0, 1.0]
    log_prob = th.tensor([-0.7, -1.2, -0.3, -2.0], requires_grad=True)
    batch = make_batch(ratio=ratios, advantages=advantages, log_prob=log_prob)
    term = CISPOSurrogate(clip_range_high=0.2)(batch)
    weights = [0.5, 1.0, 1.2, 1.2]  # truncated above 1.2, no lower bound
    terms = [w * a * v for w, a, v in zip(weights, advantages, log_prob.tolist(), strict=True)]
    assert term.loss.item() == pytest.approx(-sum(terms) / 4)
    # Clipped samples keep their gradient, w A / n, unlike PPO's clip; the weight itself has none.
    assert grad_of(term, log_prob) == pytest.approx([-w * a / 4 for w, a in zip(weights, advantages, strict=True)])
    assert term.stats["clip_fraction"].item() == pytest.approx(0.5)
    log_prob.grad = None
    bounded = CISPOSurrogate(clip_range_high=0.2, clip_range_low=0.3)(make_batch(ratio=ratios, log_prob=log_prob))
    assert th.autograd.grad(bounded.loss, batch.log_ratio, allow_unused=True)[0] is None


def test_log_symmetric_clip_bounds_the_ratio_at_one_over_one_plus_eps():
    batch = make_batch(ratio=[0.7, 0.9, 1.3], advantages=[-1.0, 1.0, 1.0])
    term = ClippedSurrogate(clip_range=0.25, log_symmetric=True)(batch)  # band [0.8, 1.25]
    assert term.loss.item() == pytest.approx(-(-0.8 + 0.9 + 1.25) / 3)
    assert grad_of(term, batch.log_ratio) == pytest.approx([0.0, -0.9 / 3, 0.0])
    assert term.stats["clip_fraction"].item() == pytest.approx(2 / 3)
    plain = ClippedSurrogate(clip_range=0.25)(make_batch(ratio=[0.7, 0.9, 1.3], advantages=[-1.0, 1.0, 1.0]))
    assert plain.loss.item() == pytest.approx(-(-0.75 + 0.9 + 1.25) / 3)  # lower bound 1 - eps there


def test_l1_value_loss_has_the_errors_sign_as_gradient():
    values = th.tensor([1.5, 2.0, 1.0], requires_grad=True)
    term = ValueLoss(coef=0.5, error="l1")(make_batch(values=values, returns=[1.0, 2.5, 3.0]))
    assert term.loss.item() == pytest.approx(0.5 * (0.5 + 0.5 + 2.0) / 3)
    assert grad_of(term, values) == pytest.approx([0.5 / 3, -0.5 / 3, -0.5 / 3])


def test_reverse_kl_swaps_the_exact_distributions():
    old, new = Categorical(probs=th.tensor([[0.2, 0.8]])), Categorical(probs=th.tensor([[0.5, 0.5]]))
    batch = make_batch(ratio=[1.0], distribution=new, old_distribution=old)
    reverse = 0.5 * math.log(0.5 / 0.2) + 0.5 * math.log(0.5 / 0.8)
    forward = 0.2 * math.log(0.2 / 0.5) + 0.8 * math.log(0.8 / 0.5)
    assert kl_per_sample(batch, "exact", "reverse").item() == pytest.approx(reverse)
    assert kl_per_sample(batch, "exact").item() == pytest.approx(forward)


def test_reverse_sample_estimators_are_importance_weighted_and_unbiased():
    log2 = math.log(2.0)
    batch = make_batch(log_ratio=[log2, -log2])  # r = 2 and 1/2
    assert kl_per_sample(batch, "k1", "reverse").tolist() == pytest.approx([2 * log2, -0.5 * log2])
    assert kl_per_sample(batch, "k2", "reverse").tolist() == pytest.approx([log2**2, 0.25 * log2**2])
    assert kl_per_sample(batch, "k3", "reverse").tolist() == pytest.approx([2 * log2 - 1, -0.5 * log2 + 0.5])
    # Averaged over actions drawn from pi_old, reverse k3 is KL(pi || pi_old).
    old, new = th.tensor([0.2, 0.3, 0.5]), th.tensor([0.4, 0.4, 0.2])
    generator = th.Generator().manual_seed(0)
    actions = th.multinomial(old, 200_000, replacement=True, generator=generator)
    sampled = make_batch(log_ratio=(new[actions] / old[actions]).log())
    exact = float((new * (new / old).log()).sum())
    assert kl_per_sample(sampled, "k3", "reverse").mean().item() == pytest.approx(exact, abs=3e-3)


def test_straight_through_k3_has_k3s_value_and_k2s_gradient():
    batch = make_batch(log_ratio=[0.3, -0.5])
    k3_plus = kl_per_sample(batch, "k3+")
    assert k3_plus.tolist() == pytest.approx(kl_per_sample(batch, "k3").tolist())
    (grad,) = th.autograd.grad(k3_plus.sum(), batch.log_ratio)
    assert grad.tolist() == pytest.approx([0.3, -0.5])  # d(x^2 / 2)/dx


def test_kl_adaptive_learning_rate_rule_and_bounds():
    component = KLAdaptiveLearningRate(target=0.01)
    assert component.learning_rate(3e-4) == pytest.approx(3e-4)
    component.after_train({"adaptive_lr_kl": 0.03})  # above 2 x target: / 1.5
    assert component.learning_rate(3e-4) == pytest.approx(2e-4)
    component.after_train({"adaptive_lr_kl": 0.01})  # within the band: unchanged
    assert component.scale == pytest.approx(1 / 1.5)
    component.after_train({"adaptive_lr_kl": 0.001})  # below target / 2: x 1.5
    assert component.scale == pytest.approx(1.0)
    assert component.learning_rate(0.009) == pytest.approx(0.009)
    for _ in range(5):  # bounded at 1e-2, without winding up past it
        component.after_train({"adaptive_lr_kl": 0.0001})
    assert component.learning_rate(0.009) == pytest.approx(0.01) and component.scale == pytest.approx(0.01 / 0.009)
    with pytest.raises(HyperparameterError, match="max_learning_rate=1e-06 is invalid"):
        KLAdaptiveLearningRate(max_learning_rate=1e-6)


def _masked_env():
    return InvalidActionEnvDiscrete(dim=10, n_invalid_actions=3)


@pytest.mark.parametrize(
    ("cls", "policy", "env"),
    [
        (PPOVariant, "MlpPolicy", "Pendulum-v1"),
        (MaskablePPOVariant, "MlpPolicy", _masked_env),
        (RecurrentPPOVariant, "MlpLstmPolicy", "CartPole-v1"),
    ],
)
def test_kl_adaptive_learning_rate_lowers_the_rate_of_a_policy_that_moves_too_far(cls, policy, env, tmp_path):
    loss = [ClippedSurrogate(), ValueLoss(), KLAdaptiveLearningRate(target=1e-9)]
    model = cls(policy, make_vec_env(env, n_envs=2, seed=0), loss=loss, **FAST).learn(128 * 3)
    # The rule ran after each of the three calls; the learning rate of a call reflects the ones before it.
    assert model.loss[2].scale == pytest.approx(1.5**-3)
    assert model.policy.optimizer.param_groups[0]["lr"] == pytest.approx(3e-4 / 1.5**2)
    assert model.logger.name_to_value["train/learning_rate"] == pytest.approx(3e-4 / 1.5**2)
    model.save(tmp_path / "model.zip")
    assert cls.load(tmp_path / "model.zip").loss[2].scale == model.loss[2].scale


def _context(returns: np.ndarray) -> Any:
    class Buffer:
        pass

    buffer = Buffer()
    buffer.returns = returns
    return training_context(rollout_buffer=buffer)


def test_value_normalization_statistics_are_debiased_moving_averages():
    component = ValueNormalization(beta=0.9)
    first, second = np.array([[1.0], [3.0]]), np.array([[10.0], [14.0]])
    component.before_train(_context(first))
    mean, std = component.mean_and_std()
    assert (mean.item(), std.item()) == pytest.approx((2.0, 1.0))  # one update: the rollout's own
    component.before_train(_context(second))
    mean, std = component.mean_and_std()
    # Debiased: (0.1 * 0.9 * 2 + 0.1 * 12) / (0.1 * 0.9 + 0.1)
    expected_mean = (0.09 * 2 + 0.1 * 12) / 0.19
    expected_square = (0.09 * 5 + 0.1 * 148) / 0.19
    assert mean.item() == pytest.approx(expected_mean, rel=1e-5)
    assert std.item() == pytest.approx(math.sqrt(expected_square - expected_mean**2), rel=1e-5)
    values = th.tensor([-3.0, 0.0, 25.0])
    assert th.allclose(component.denormalize_values(component.normalize_values(values)), values, atol=1e-5)
    assert ValueNormalization().mean_and_std()[1].item() == pytest.approx(0.1)  # the variance floor, 1e-2


@pytest.mark.parametrize(
    ("cls", "policy", "env"),
    [
        (PPOVariant, "MlpPolicy", "CartPole-v1"),
        (MaskablePPOVariant, "MlpPolicy", _masked_env),
        (RecurrentPPOVariant, "MlpLstmPolicy", "CartPole-v1"),
    ],
)
def test_value_normalization_trains_the_critic_on_normalised_returns(cls, policy, env, tmp_path):
    model = cls(policy, make_vec_env(env, n_envs=2, seed=0), **variant_arguments("value-norm", FAST))
    model.learn(128 * 2)
    logged = model.logger.name_to_value
    assert logged["train/value_norm_std"] > 0.1 and np.isfinite(logged["train/value_norm_mean"])
    assert model.value_transform is model.loss[4]
    model.save(tmp_path / "model.zip")
    loaded = cls.load(tmp_path / "model.zip", device="cpu")
    for original, restored in zip(model.loss[4].mean_and_std(), loaded.loss[4].mean_and_std(), strict=True):
        assert th.equal(original, restored)


def test_copg_clips_log_pi_in_ppos_band_and_keeps_the_plain_policy_gradient_inside_it():
    old_log_prob = th.full((4,), math.log(0.5))
    ratios, advantages = [1.1, 1.5, 0.5, 0.7], [1.0, 1.0, -1.0, 1.0]
    log_prob = (old_log_prob + th.log(th.tensor(ratios))).requires_grad_(True)
    batch = make_batch(ratio=ratios, advantages=advantages, log_prob=log_prob, old_log_prob=old_log_prob)
    term = LogProbClippedSurrogate(clip_range=0.2)(batch)
    low, high = math.log(0.5 * 0.8), math.log(0.5 * 1.2)
    objective = [min(lp * a, min(max(lp, low), high) * a) for lp, a in zip(log_prob.tolist(), advantages, strict=True)]
    assert term.loss.item() == pytest.approx(-sum(objective) / 4, rel=1e-6)
    # Inside the band and where the min keeps log pi: -A / n, with no ratio factor; clipped: 0.
    (grad,) = th.autograd.grad(term.loss, log_prob)
    assert grad.tolist() == pytest.approx([-0.25, 0.0, 0.0, -0.25])
    assert term.stats["clip_fraction"].item() == pytest.approx(0.75)  # 1.5, 0.5 and 0.7 left the band
    with pytest.raises(HyperparameterError, match="clip_range"):
        LogProbClippedSurrogate(clip_range=1.0)  # log(1 - eps) is -inf


def test_ratio_deviation_stop_reads_the_mean_or_median_of_the_ratios_distance_from_one():
    batch = make_batch(ratio=[1.1, 0.8, 1.5])  # |r - 1|: 0.1, 0.2, 0.5
    assert RatioDeviationEarlyStop(max_deviation=0.25).stop_early(batch) == "reaching a ratio deviation of 0.27"
    assert RatioDeviationEarlyStop(max_deviation=0.25, statistic="median").stop_early(batch) is None
    assert RatioDeviationEarlyStop()(batch).stats["ratio_deviation"].item() == pytest.approx(0.8 / 3)
    with pytest.raises(HyperparameterError, match="statistic"):
        RatioDeviationEarlyStop(statistic="max")


def test_espo_allows_three_times_ppos_epochs_and_its_rule_ends_them():
    assert variant_arguments("espo", {"n_epochs": 4})["n_epochs"] == 12
    assert variant_arguments("espo")["n_epochs"] == 30  # SB3's default, 10, times 3
    loss = [Surrogate(), ValueLoss(), RatioDeviationEarlyStop(max_deviation=1e-9)]
    model = PPOVariant("MlpPolicy", "CartPole-v1", loss=loss, **{**FAST, "n_epochs": 5}).learn(64 * 4)
    # Each call's first step moves the policy, so the second minibatch stops the call in its first epoch:
    # four calls, one epoch each of the five allowed.
    assert model.logger.name_to_value["train/n_updates"] == 4


def test_mdpo_penalty_is_the_reverse_kl_over_an_annealed_step_size_with_a_floor():
    old = Categorical(probs=th.tensor([[0.5, 0.5]]))
    new = Categorical(probs=th.tensor([[0.8, 0.2]]))
    reverse = 0.8 * math.log(0.8 / 0.5) + 0.2 * math.log(0.2 / 0.5)  # KL(pi || pi_old)
    for progress, coef in ((1.0, 1.0), (0.25, 4.0), (0.0, 100.0)):
        batch = make_batch(ratio=[1.0], distribution=new, old_distribution=old, progress_remaining=progress)
        term = MirrorDescentPenalty(min_step_size=0.01)(batch)
        assert term.loss.item() == pytest.approx(coef * reverse, rel=1e-6) and term.stats["kl_coef"] == coef
    with pytest.raises(HyperparameterError, match="min_step_size"):
        MirrorDescentPenalty(min_step_size=0.0)


def test_mdpo_penalty_reaches_its_floored_coefficient_in_the_last_call():
    model = PPOVariant("MlpPolicy", "CartPole-v1", **variant_arguments("mdpo", FAST)).learn(128 * 2)
    assert model.logger.name_to_value["train/kl_coef"] == 100.0  # progress remaining 0 in the last call


def test_vtrace_with_unit_ratios_is_sb3s_gae():
    rng = np.random.default_rng(0)
    n_steps, n_envs = 6, 2
    buffer = RolloutBuffer(n_steps, gym.spaces.Box(-1, 1, (1,)), gym.spaces.Discrete(2), n_envs=n_envs, gamma=0.9)
    buffer.rewards = rng.normal(size=(n_steps, n_envs)).astype(np.float32)
    buffer.values = rng.normal(size=(n_steps, n_envs)).astype(np.float32)
    buffer.episode_starts = (rng.random((n_steps, n_envs)) < 0.3).astype(np.float32)
    last_values, dones = rng.normal(size=n_envs).astype(np.float32), np.array([0.0, 1.0], dtype=np.float32)
    advantages = VTraceAdvantages().advantages(
        buffer.rewards, buffer.values, buffer.episode_starts, last_values, dones,
        np.zeros((n_steps, n_envs), dtype=np.float32), buffer.gamma, buffer.gae_lambda,
    )  # fmt: skip
    buffer.compute_returns_and_advantage(th.as_tensor(last_values), dones)
    np.testing.assert_allclose(advantages, buffer.advantages, rtol=1e-6)


def test_vtrace_truncates_the_td_error_and_the_trace_by_the_ratio():
    # Two steps of one env: ratios 2 (truncated to 1) and 0.5; gamma 0.9, lambda 0.8.
    advantages = VTraceAdvantages(rho_bar=1.0, c_bar=1.0).advantages(
        rewards=np.array([[1.0], [2.0]]), values=np.array([[0.5], [1.0]]), episode_starts=np.zeros((2, 1)),
        last_values=np.array([2.0]), dones=np.zeros(1), log_ratio=np.log(np.array([[2.0], [0.5]])),
        gamma=0.9, gae_lambda=0.8,
    )  # fmt: skip
    last = 0.5 * (2.0 + 0.9 * 2.0 - 1.0)
    first = 1.0 * (1.0 + 0.9 * 1.0 - 0.5) + 0.9 * 0.8 * 1.0 * last
    assert advantages[:, 0].tolist() == pytest.approx([first, last])


def test_vtrace_keeps_the_rollouts_advantages_in_the_first_epoch_and_refuses_an_lstm():
    arguments = {**FAST, "n_epochs": 1, "seed": 3}
    ppo = PPOVariant("MlpPolicy", "CartPole-v1", **arguments).learn(256)
    vtrace = PPOVariant("MlpPolicy", "CartPole-v1", loss=[ClippedSurrogate(), ValueLoss(), VTraceAdvantages()],
                        **arguments).learn(256)  # fmt: skip
    for a, b in zip(ppo.policy.parameters(), vtrace.policy.parameters(), strict=True):
        assert th.equal(a, b)
    two_epochs = PPOVariant("MlpPolicy", "CartPole-v1", **variant_arguments("vtrace", {**arguments, "n_epochs": 2}))
    assert two_epochs.learn(256).logger.name_to_value["train/vtrace_truncated_fraction"] > 0
    with pytest.raises(HyperparameterError, match="V-trace would need to replay the LSTM"):
        RecurrentPPOVariant("MlpLstmPolicy", "CartPole-v1", **variant_arguments("vtrace"))


def _outer_call(component, policy, update):
    """One train() call as the loop makes it: the epochs move the weights by ``update``."""
    context = training_context(policy=policy)
    component.before_train(context)
    with th.no_grad():
        policy.weight.add_(update)
    return component.extra_phase(context)


def test_outer_update_scales_the_calls_update_and_adds_nesterov_momentum():
    policy = th.nn.Linear(1, 1, bias=False)
    with th.no_grad():
        policy.weight.fill_(1.0)
    plain = OuterUpdate(outer_learning_rate=2.0)
    stats = _outer_call(plain, policy, 0.5)
    assert policy.weight.item() == pytest.approx(1.0 + 2.0 * 0.5) and stats["outer_update_norm"] == 0.5
    nesterov = OuterUpdate(outer_learning_rate=1.0, momentum=0.5)
    with th.no_grad():
        policy.weight.fill_(0.0)
    _outer_call(nesterov, policy, 1.0)  # m = 1, step g + mu m = 1.5
    assert policy.weight.item() == pytest.approx(1.5)
    _outer_call(nesterov, policy, 2.0)  # m = 0.5 + 2 = 2.5, step 2 + 1.25
    assert policy.weight.item() == pytest.approx(1.5 + 3.25)
    heavy_ball = OuterUpdate(momentum=0.5, nesterov=False)
    _outer_call(heavy_ball, policy, 1.0)
    _outer_call(heavy_ball, policy, 1.0)  # m = 0.5 + 1
    assert policy.weight.item() == pytest.approx(4.75 + 1.0 + 1.5)
    assert set(heavy_ball.state_dict()) == {"momentum_buffer.weight"}  # the start of a call is not state


def test_an_outer_learning_rate_of_one_is_ppo():
    arguments = {**FAST, "seed": 1}
    ppo = PPOVariant("MlpPolicy", "Pendulum-v1", **arguments).learn(128)
    outer = PPOVariant("MlpPolicy", "Pendulum-v1", loss=[ClippedSurrogate(), ValueLoss(), OuterUpdate()], **arguments)
    outer.learn(128)
    for a, b in zip(ppo.policy.parameters(), outer.policy.parameters(), strict=True):
        assert th.allclose(a, b, atol=1e-7)
    assert outer.logger.name_to_value["train/outer_update_norm"] > 0


@pytest.mark.parametrize("cls", [PPOVariant, MaskablePPOVariant])
def test_outer_momentum_survives_save_load_and_continued_training_bit_for_bit(cls, tmp_path):
    env = "Pendulum-v1" if cls is PPOVariant else _masked_env
    loss = [ClippedSurrogate(), ValueLoss(), OuterUpdate(outer_learning_rate=1.5, momentum=0.9)]
    model = cls("MlpPolicy", make_vec_env(env, n_envs=2, seed=0), loss=loss, **FAST).learn(256)
    model, resumed = save_continue_and_resume(model, tmp_path / "model.zip", 256)
    assert parameters_equal(model.policy, resumed.policy)
    for key, tensor in model.loss[2].momentum_buffer.items():
        assert th.equal(resumed.loss[2].momentum_buffer[key], tensor), key


@pytest.mark.parametrize("p", [0.01, 0.1, 0.5, 0.9])
def test_trust_region_bounds_are_the_two_roots_of_the_kl_constraint(p):
    delta = 0.001
    lower, upper = trust_region_ratio_bounds(th.tensor([p], dtype=th.float64), delta)[0].tolist()

    def kl(r):  # KL(pi_old || pi) when pi gives the action p r and rescales the others
        return (1 - p) * math.log((1 - p) / (1 - p * r)) - p * math.log(r)

    assert kl(lower) == pytest.approx(delta, rel=1e-6) and kl(upper) == pytest.approx(delta, rel=1e-6)
    assert 0 < lower < 1 < upper < 1 / p
    # Second order in the move: KL ~ p x^2 / (2 (1 - p)), so the band is widest for unlikely actions.
    half_width = math.sqrt(2 * delta * (1 - p) / p)
    assert (upper - lower) / 2 == pytest.approx(half_width, rel=0.1)


def test_trgppo_with_the_papers_formula_only_widens_ppos_band_where_the_trust_region_is_wider():
    # p = 0.01: the trust region reaches r ~ 1.51, past PPO's 1.2; p = 0.5: it ends at ~1.045.
    old_log_prob = th.log(th.tensor([0.01, 0.5, 0.01, 0.5]))
    ratios, advantages = [1.4, 1.4, 1.6, 0.7], [1.0, 1.0, 1.0, -1.0]
    batch = make_batch(ratio=ratios, advantages=advantages, old_log_prob=old_log_prob)
    papers = TrustRegionGuidedSurrogate(clip_range=0.2, kl_range=0.001, widen_ppo_band=True, anneal=False)
    term = papers(batch)
    upper_rare = trust_region_ratio_bounds(th.tensor([0.01]), 0.001)[0, 1].item()
    objective = [1.4, 1.2, upper_rare, -0.8]  # inside the widened band; PPO's bound; the rare one's own; PPO's
    assert term.loss.item() == pytest.approx(-sum(objective) / 4, rel=1e-5)
    assert grad_of(term, batch.log_ratio) == pytest.approx([-1.4 / 4, 0.0, 0.0, 0.0], abs=1e-7)
    assert term.stats["clip_fraction"].item() == pytest.approx(0.75)


def test_trgppo_clips_discrete_actions_to_the_annealed_trust_region_bounds_alone_as_the_authors_code():
    old_log_prob = th.log(th.tensor([0.01, 0.5, 0.5]))
    ratios, advantages = [1.4, 1.03, 0.7], [1.0, 1.0, -1.0]
    (_low_rare, up_rare), (low_even, up_even) = trust_region_ratio_bounds(th.tensor([0.01, 0.5]), 0.001).tolist()
    for remaining in (1.0, 0.5):
        batch = make_batch(ratio=ratios, advantages=advantages, old_log_prob=old_log_prob)
        batch.progress_remaining = remaining
        term = TrustRegionGuidedSurrogate(clip_range=0.2)(batch)  # the defaults: delta 0.001, annealed
        # ppo2.py (kl2clip, Discrete): l <- 1 - (1 - l) f, u <- 1 + (u - 1) f; clip(r, l, u), no PPO band.
        upper_rare, upper_even = 1 + (up_rare - 1) * remaining, 1 + (up_even - 1) * remaining
        lower_even = 1 - (1 - low_even) * remaining
        objective = [min(1.4, upper_rare), min(1.03, upper_even), -max(0.7, lower_even)]
        assert term.loss.item() == pytest.approx(-sum(objective) / 3, rel=1e-5), remaining
    # At half the training every ratio is outside its band: 1.4 > 1.25 (rare), and the even action's band
    # [0.978, 1.022] clips 1.03 and 0.7, where PPO's [0.8, 1.2] would clip only 0.7.
    assert term.stats["clip_fraction"].item() == pytest.approx(1.0)


@pytest.mark.parametrize("dims", [1, 3])
def test_trgppos_gaussian_band_reaches_ppos_bound_at_the_old_mean_and_holds_the_kl_constraint(dims):
    kl = gaussian_trust_region_kl(0.2, dims)
    distances = th.tensor([0.0, 0.5, 1.5, 3.0], dtype=th.float64)
    bounds = gaussian_trust_region_ratio_bounds(distances, kl, dims)
    assert bounds[0, 1].item() == pytest.approx(1.2, rel=1e-6)  # the authors' base-clip choice of delta
    # In one dimension against a brute-force search over N(mu, v) with KL(N(mu, v) || N(0, 1)) <= delta / d.
    reach = math.sqrt(2 * kl / dims)  # the region's half-width in the mean; its log-variance is within 2.2 reach
    mean, log_variance = np.meshgrid(
        np.linspace(-1.1 * reach, 1.1 * reach, 2001), np.linspace(-2.5 * reach, 2.5 * reach, 2001)
    )
    variance = np.exp(log_variance)
    inside = variance - 1 - log_variance + mean**2 <= 2 * kl / dims
    for row, x in enumerate(distances.tolist()):
        log_ratio = (-0.5 * log_variance - (x - mean) ** 2 / (2 * variance) + x**2 / 2)[inside]
        expected = np.exp(dims * np.array([log_ratio.min(), log_ratio.max()]))
        assert bounds[row].tolist() == pytest.approx(expected.tolist(), rel=2e-3), x
    assert (bounds[1:, 1] > bounds[:-1, 1]).all() and (bounds[1:, 0] < bounds[:-1, 0]).all()  # wider further out


def test_trgppo_runs_on_gaussian_policies_and_refuses_spaces_the_authors_code_has_no_bounds_for():
    model = PPOVariant("MlpPolicy", "Pendulum-v1", **variant_arguments("trgppo", FAST)).learn(128)
    assert 0 < model.logger.name_to_value["train/trust_region_lower"] < 1
    assert model.logger.name_to_value["train/trust_region_upper"] > 1
    sde = PPOVariant("MlpPolicy", "Pendulum-v1", use_sde=True, **variant_arguments("trgppo", FAST)).learn(128)
    assert sde.logger.name_to_value["train/trust_region_upper"] > 1
    with pytest.raises(HyperparameterError, match="accepted spaces are Discrete and Box"):
        PPOVariant("MlpPolicy", _multi_discrete_env(), loss=[TrustRegionGuidedSurrogate(), ValueLoss()])


def _multi_discrete_env() -> gym.Env:
    from stable_baselines3.common.envs import IdentityEnvMultiDiscrete

    return IdentityEnvMultiDiscrete(dim=2)


def _ewma_batch(proximal_log_prob, **tensors):
    batch = make_batch(**tensors)
    batch.log_prob = batch.old_log_prob + batch.log_ratio  # the policy's, through the leaf
    batch.log_prob_under = lambda policy: th.as_tensor(proximal_log_prob)
    return batch


def test_ewma_surrogate_clips_around_the_proximal_policy_and_weights_by_the_behaviour_ratio():
    old_log_prob = th.log(th.tensor([0.5, 0.5, 0.5]))
    proximal = th.log(th.tensor([0.6, 0.4, 0.5]))
    ratios, advantages = [1.5, 1.1, 0.7], [1.0, -1.0, -1.0]
    component = EWMAProximalSurrogate(clip_range=0.2, decay=0.5)
    component.before_train(training_context())  # the average's own forward pass is log_prob_under's business
    batch = _ewma_batch(proximal, ratio=ratios, advantages=advantages, old_log_prob=old_log_prob)
    term = component(batch)
    pi = [0.5 * r for r in ratios]
    prox = [0.6, 0.4, 0.5]
    objective = [
        min(a * p / 0.5, a * min(max(p / q, 0.8), 1.2) * q / 0.5) for p, q, a in zip(pi, prox, advantages, strict=True)
    ]
    assert term.loss.item() == pytest.approx(-sum(objective) / 3, rel=1e-6)
    # pi / pi_prox: 1.25 (clipped, A > 0), 1.375 (A < 0: the unclipped term is smaller), 0.7 (clipped, A < 0).
    assert grad_of(term, batch.log_ratio) == pytest.approx([0.0, 1.1 / 3, 0.0], abs=1e-7)
    assert term.stats["clip_fraction"].item() == pytest.approx(1.0)


def test_ewma_surrogate_with_the_behaviour_policy_as_anchor_is_ppos_clip():
    ratios, advantages = [1.5, 1.1, 0.7, 0.9], [1.0, -1.0, -1.0, 2.0]
    old_log_prob = th.log(th.tensor([0.5, 0.2, 0.9, 0.3]))
    component = EWMAProximalSurrogate(clip_range=0.2)
    component.before_train(training_context())
    ewma = _ewma_batch(old_log_prob, ratio=ratios, advantages=advantages, old_log_prob=old_log_prob)
    ppo = make_batch(ratio=ratios, advantages=advantages)
    ewma_term, ppo_term = component(ewma), ClippedSurrogate(clip_range=0.2)(ppo)
    assert ewma_term.loss.item() == pytest.approx(ppo_term.loss.item(), rel=1e-6)
    assert grad_of(ewma_term, ewma.log_ratio) == pytest.approx(grad_of(ppo_term, ppo.log_ratio), abs=1e-7)


def test_ewma_of_the_weights_starts_from_the_initial_policy_as_the_authors_does():
    policy = th.nn.Linear(1, 1, bias=False)
    with th.no_grad():
        policy.weight.fill_(1.0)
    copies: list[th.nn.Module] = []
    context = training_context(policy=policy, policy_copy=lambda: copies.append(copy.deepcopy(policy)) or copies[-1])
    component = EWMAProximalSurrogate(decay=0.5)
    component.before_train(context)
    averages = []
    for weight in (2.0, 4.0, 8.0):
        with th.no_grad():
            policy.weight.fill_(weight)
        component.after_step(context)
        averages.append(component.average["weight"].item())
    # openai/ppo-ewma's EwmaModel.update by hand, from total_weight = 1 and the initial weight 1.0.
    total, average, expected = 1.0, 1.0, []
    for weight in (2.0, 4.0, 8.0):
        new_total = 0.5 * total + 1
        average = average * (0.5 * total / new_total) + weight / new_total
        total = new_total
        expected.append(average)
    assert averages == pytest.approx(expected)
    assert averages[0] == pytest.approx((0.5 * 1.0 + 2.0) / 1.5)  # the initial policy counts like one step
    assert copies[0].weight.item() == pytest.approx(averages[-1])  # the average is the copy's weights


def test_ewma_decay_matches_the_age_of_ppos_anchor():
    model = PPOVariant("MlpPolicy", "CartPole-v1", **variant_arguments("ppo-ewma", FAST)).learn(64)
    # 64 samples in minibatches of 32, 2 epochs: 4 updates, mean age 1.5, beta = 1.5 / 2.5.
    assert model.logger.name_to_value["train/ewma_decay"] == pytest.approx(0.6)


@pytest.mark.parametrize("cls", [PPOVariant, MaskablePPOVariant])
def test_ewma_average_survives_save_load_and_continued_training_bit_for_bit(cls, tmp_path):
    env = "Pendulum-v1" if cls is PPOVariant else _masked_env
    model = cls("MlpPolicy", make_vec_env(env, n_envs=2, seed=0), **variant_arguments("ppo-ewma", FAST)).learn(256)
    model, resumed = save_continue_and_resume(model, tmp_path / "model.zip", 256)
    assert parameters_equal(model.policy, resumed.policy)
    assert th.equal(resumed.loss[0].weight_sum, model.loss[0].weight_sum)
    for key, tensor in model.loss[0].average.items():
        assert th.equal(resumed.loss[0].average[key], tensor), key


def test_popart_rescales_the_value_head_so_return_scale_predictions_are_preserved():
    model = PPOVariant("MlpPolicy", "Pendulum-v1", **variant_arguments("popart", FAST)).learn(128)
    component = model.loss[4]
    observations = th.as_tensor(model.rollout_buffer.observations[:8])

    def return_scale_values():
        with th.no_grad():
            return component.denormalize_values(model.policy.predict_values(observations))

    before = return_scale_values()
    mean_before = component.mean_and_std()[0].item()
    context = _context(np.array([[500.0], [700.0]]))  # returns far from those seen so far
    context.policy = model.policy
    component.before_train(context)
    assert component.mean_and_std()[0].item() != pytest.approx(mean_before)  # the statistics moved
    assert th.allclose(return_scale_values(), before, rtol=1e-5, atol=1e-4)


def test_espo_ends_a_call_after_its_maximum_of_minibatch_updates_as_rl_x():
    stop = RatioDeviationEarlyStop(max_deviation=0.25, max_updates=3)
    batch = make_batch(ratio=[1.0, 1.1, 0.9])  # well inside the deviation: only the count stops it
    stop.before_train(None)
    assert [stop.stop_early(batch) for _ in range(4)] == [None, None, None, "reaching 3 minibatch updates"]
    stop.before_train(None)  # each call counts its own
    assert stop.stop_early(batch) is None
    with pytest.raises(HyperparameterError, match="max_updates=0 is invalid: accepted values are integers >= 1"):
        RatioDeviationEarlyStop(max_updates=0)
