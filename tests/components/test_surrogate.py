"""PPO's clipped surrogate and the surrogates since: values and gradients computed by hand."""

import math

import numpy as np
import pytest
import torch as th
from torch.distributions import Categorical

from sb3_ppo_variants import HyperparameterError
from sb3_ppo_variants.components import (
    CISPOSurrogate,
    ClippedSurrogate,
    LogProbClippedSurrogate,
    RollbackSurrogate,
    SoftClipSurrogate,
    SPOSurrogate,
    Surrogate,
    TrustRegionRollbackSurrogate,
)
from tests.conftest import grad_of, make_batch


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_clipped_surrogate_value_gradient_and_clip_fraction():
    # ratio 0.5 (A>0: unclipped branch wins), 1.0 (inside the band), 1.5 (A>0: clipped at 1.2).
    batch = make_batch(ratio=[0.5, 1.0, 1.5], advantages=[1.0, -1.0, 2.0])
    term = ClippedSurrogate(clip_range=0.2)(batch)
    # min(rA, clip(r)A) = [0.5, -1.0, 2.4]
    assert term.loss.item() == pytest.approx(-(0.5 - 1.0 + 2.4) / 3)
    (grad,) = th.autograd.grad(term.loss, batch.log_ratio)
    # d/dlog_r of -mean(r A) is -r A / 3 where the unclipped branch is active, 0 where clipped.
    assert grad.tolist() == pytest.approx([-0.5 / 3, 1.0 / 3, 0.0])
    assert term.stats["clip_fraction"].item() == pytest.approx(2 / 3)
    assert term.stats["clip_range"] == 0.2


def test_dual_clip_bounds_negative_advantages_from_below():
    # A < 0 with r = 5: min(rA, clip(r)A) = -5 is bounded by c A = -3 (no gradient);
    # A < 0 with r = 2: -2 is above -3 (unchanged); A > 0 with r = 5: ordinary clipping (1.2).
    batch = make_batch(ratio=[5.0, 2.0, 5.0], advantages=[-1.0, -1.0, 1.0])
    term = ClippedSurrogate(clip_range=0.2, dual_clip=3.0)(batch)
    assert term.loss.item() == pytest.approx(-(-3.0 - 2.0 + 1.2) / 3)
    (grad,) = th.autograd.grad(term.loss, batch.log_ratio)
    assert grad.tolist() == pytest.approx([0.0, 2.0 / 3, 0.0])  # -(r A) / 3 on the unclipped sample
    assert term.stats["dual_clip_fraction"].item() == pytest.approx(1 / 3)
    plain = ClippedSurrogate(clip_range=0.2)(make_batch(ratio=[5.0, 2.0, 5.0], advantages=[-1.0, -1.0, 1.0]))
    assert plain.loss.item() == pytest.approx(-(-5.0 - 2.0 + 1.2) / 3) and "dual_clip_fraction" not in plain.stats


def test_clipped_surrogate_follows_its_schedule():
    batch = make_batch(ratio=[1.5], advantages=[1.0])
    batch.progress_remaining = 0.5
    term = ClippedSurrogate(clip_range=lambda progress: progress)(batch)  # eps = 0.5 now
    assert term.loss.item() == pytest.approx(-1.5)
    assert term.stats["clip_range"] == 0.5


def test_clip_higher_widens_only_the_upper_bound():
    # eps = 0.2 below, eps_high = 0.3 above: band [0.8, 1.3].
    batch = make_batch(ratio=[0.7, 1.25, 1.35], advantages=[-1.0, 1.0, 1.0])
    term = ClippedSurrogate(clip_range=0.2, clip_range_high=0.3)(batch)
    # 0.7 with A<0 is clipped at 0.8; 1.25 is inside the wider band; 1.35 is clipped at 1.3.
    assert term.loss.item() == pytest.approx(-(-0.8 + 1.25 + 1.3) / 3)
    assert grad_of(term, batch.log_ratio) == pytest.approx([0.0, -1.25 / 3, 0.0])
    assert term.stats["clip_fraction"].item() == pytest.approx(2 / 3)
    assert term.stats["clip_range_high"] == 0.3
    symmetric = ClippedSurrogate(clip_range=0.2)(make_batch(ratio=[0.7, 1.25, 1.35], advantages=[-1.0, 1.0, 1.0]))
    assert symmetric.loss.item() == pytest.approx(-(-0.8 + 1.2 + 1.2) / 3)  # 1.25 clipped at 1.2 there


def test_clip_higher_combines_with_dual_clip():
    batch = make_batch(ratio=[5.0, 1.25], advantages=[-1.0, 1.0])
    term = ClippedSurrogate(clip_range=0.2, clip_range_high=0.28, dual_clip=3.0)(batch)
    assert term.loss.item() == pytest.approx(-(-3.0 + 1.25) / 2)
    assert term.stats["dual_clip_fraction"].item() == pytest.approx(0.5)


def test_unclipped_surrogate_is_the_importance_weighted_policy_gradient():
    batch = make_batch(ratio=[0.5, 3.0], advantages=[2.0, -1.0])
    term = Surrogate()(batch)
    assert term.loss.item() == pytest.approx(-(1.0 - 3.0) / 2)
    assert grad_of(term, batch.log_ratio) == pytest.approx([-1.0 / 2, 3.0 / 2])  # -r A / n: nothing is clipped


def test_rollback_pushes_ratios_outside_the_band_back():
    # eps = 0.2, alpha = 0.3; F(r) = -0.3 r + 1.3 (1 +/- 0.2) outside [0.8, 1.2].
    batch = make_batch(ratio=[1.5, 0.5, 1.1, 1.5], advantages=[1.0, -1.0, 1.0, -1.0])
    term = RollbackSurrogate(clip_range=0.2, rollback=0.3)(batch)
    # r=1.5, A>0: F = -0.45 + 1.56 = 1.11 < 1.5, on the slope; r=0.5, A<0: F A = -(−0.15 + 1.04) = -0.89 < -0.5;
    # r=1.1 inside; r=1.5, A<0: r A = -1.5 is already the minimum (as in PPO).
    assert term.loss.item() == pytest.approx(-(1.11 - 0.89 + 1.1 - 1.5) / 4)
    # On a rollback slope d(F A)/dlog r = -alpha r A: the gradient has the opposite sign to PPO's.
    assert grad_of(term, batch.log_ratio) == pytest.approx([0.45 / 4, -0.15 / 4, -1.1 / 4, 1.5 / 4])
    assert term.stats["rollback_fraction"].item() == pytest.approx(2 / 4)
    assert term.stats["clip_fraction"].item() == pytest.approx(3 / 4)


def test_rollback_with_zero_slope_is_ppo():
    ratio, advantages = [1.5, 0.5, 1.1, 0.7], [1.0, -1.0, 1.0, 2.0]
    rollback = RollbackSurrogate(clip_range=0.2, rollback=0.0)(make_batch(ratio=ratio, advantages=advantages))
    ppo = ClippedSurrogate(clip_range=0.2)(make_batch(ratio=ratio, advantages=advantages))
    assert rollback.loss.item() == pytest.approx(ppo.loss.item())


def test_trust_region_rollback_reverses_the_slope_of_gaining_samples_beyond_the_kl_range():
    old = Categorical(probs=th.tensor([[0.5, 0.5]] * 3))
    new = Categorical(probs=th.tensor([[0.5, 0.5], [0.9, 0.1], [0.9, 0.1]]))
    far = 0.5 * math.log(0.5 / 0.9) + 0.5 * math.log(0.5 / 0.1)  # KL of the last two states, > 0.03
    batch = make_batch(ratio=[1.5, 1.5, 0.8], advantages=[1.0, 1.0, 1.0], old_distribution=old, distribution=new)
    term = TrustRegionRollbackSurrogate(kl_range=0.03, rollback=0.05)(batch)
    # The value is r A everywhere (continuous, as in the authors' code) ...
    assert term.loss.item() == pytest.approx(-(1.5 + 1.5 + 0.8) / 3)
    # ... the gradient is reversed (-alpha r A) only where KL >= delta and r A > A: the second sample.
    assert grad_of(term, batch.log_ratio) == pytest.approx([-1.5 / 3, 0.05 * 1.5 / 3, -0.8 / 3])
    assert term.stats["rollback_fraction"].item() == pytest.approx(1 / 3)
    assert term.stats["kl"].item() == pytest.approx(2 * far / 3)
    assert TrustRegionRollbackSurrogate.needs_old_distribution


def test_spo_penalises_the_ratio_quadratically_around_one():
    batch = make_batch(ratio=[1.2, 0.9], advantages=[2.0, -1.0])
    term = SPOSurrogate(clip_range=0.2)(batch)
    # r A - |A| / (2 eps) (r - 1)^2 = [2.4 - 5 * 0.04, -0.9 - 2.5 * 0.01]
    assert term.loss.item() == pytest.approx(-(2.2 - 0.925) / 2)
    # d/dlog r = r (A - |A| (r - 1) / eps): zero at r = 1 + sign(A) eps, the first sample.
    assert grad_of(term, batch.log_ratio) == pytest.approx([0.0, 0.9 * 0.5 / 2], abs=1e-6)
    assert term.stats["clip_fraction"].item() == 0.0


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
