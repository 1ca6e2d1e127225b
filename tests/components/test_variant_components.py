"""The PPO variants from the literature: value and gradient against hand computations."""

import math

import pytest
import torch as th
from torch.distributions import Categorical

from sb3_ppo_variants.common.errors import HyperparameterError
from sb3_ppo_variants.components import (
    ClippedSurrogate,
    RollbackSurrogate,
    SPOSurrogate,
    Surrogate,
    TrustRegionRollbackSurrogate,
    ValueLoss,
)
from tests.conftest import make_batch


def grad_of(term, batch) -> list[float]:
    (grad,) = th.autograd.grad(term.loss, batch.log_ratio)
    return grad.tolist()


def test_clip_higher_widens_only_the_upper_bound():
    # eps = 0.2 below, eps_high = 0.3 above: band [0.8, 1.3].
    batch = make_batch(ratio=[0.7, 1.25, 1.35], advantages=[-1.0, 1.0, 1.0])
    term = ClippedSurrogate(clip_range=0.2, clip_range_high=0.3)(batch)
    # 0.7 with A<0 is clipped at 0.8; 1.25 is inside the wider band; 1.35 is clipped at 1.3.
    assert term.loss.item() == pytest.approx(-(-0.8 + 1.25 + 1.3) / 3)
    assert grad_of(term, batch) == pytest.approx([0.0, -1.25 / 3, 0.0])
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
    assert grad_of(term, batch) == pytest.approx([-1.0 / 2, 3.0 / 2])  # -r A / n: nothing is clipped


def test_rollback_pushes_ratios_outside_the_band_back():
    # eps = 0.2, alpha = 0.3; F(r) = -0.3 r + 1.3 (1 +/- 0.2) outside [0.8, 1.2].
    batch = make_batch(ratio=[1.5, 0.5, 1.1, 1.5], advantages=[1.0, -1.0, 1.0, -1.0])
    term = RollbackSurrogate(clip_range=0.2, rollback=0.3)(batch)
    # r=1.5, A>0: F = -0.45 + 1.56 = 1.11 < 1.5, on the slope; r=0.5, A<0: F A = -(−0.15 + 1.04) = -0.89 < -0.5;
    # r=1.1 inside; r=1.5, A<0: r A = -1.5 is already the minimum (as in PPO).
    assert term.loss.item() == pytest.approx(-(1.11 - 0.89 + 1.1 - 1.5) / 4)
    # On a rollback slope d(F A)/dlog r = -alpha r A: the gradient has the opposite sign to PPO's.
    assert grad_of(term, batch) == pytest.approx([0.45 / 4, -0.15 / 4, -1.1 / 4, 1.5 / 4])
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
    assert grad_of(term, batch) == pytest.approx([-1.5 / 3, 0.05 * 1.5 / 3, -0.8 / 3])
    assert term.stats["rollback_fraction"].item() == pytest.approx(1 / 3)
    assert term.stats["kl"].item() == pytest.approx(2 * far / 3)
    assert TrustRegionRollbackSurrogate.needs_old_distribution


def test_spo_penalises_the_ratio_quadratically_around_one():
    batch = make_batch(ratio=[1.2, 0.9], advantages=[2.0, -1.0])
    term = SPOSurrogate(clip_range=0.2)(batch)
    # r A - |A| / (2 eps) (r - 1)^2 = [2.4 - 5 * 0.04, -0.9 - 2.5 * 0.01]
    assert term.loss.item() == pytest.approx(-(2.2 - 0.925) / 2)
    # d/dlog r = r (A - |A| (r - 1) / eps): zero at r = 1 + sign(A) eps, the first sample.
    assert grad_of(term, batch) == pytest.approx([0.0, 0.9 * 0.5 / 2], abs=1e-6)
    assert term.stats["clip_fraction"].item() == 0.0


def _value_batch(values, returns, old_values):
    return make_batch(values=th.tensor(values, requires_grad=True), returns=returns, old_values=old_values)


def test_huber_value_loss_is_quadratic_near_zero_and_linear_beyond_delta():
    batch = _value_batch([0.0, 0.0], returns=[0.5, 3.0], old_values=[0.0, 0.0])
    term = ValueLoss(coef=1.0, error="huber", huber_delta=1.0)(batch)
    assert term.stats["value_loss"].item() == pytest.approx((0.5 * 0.25 + (3.0 - 0.5)) / 2)
    (grad,) = th.autograd.grad(term.loss, batch.values)
    assert grad.tolist() == pytest.approx([-0.5 / 2, -1.0 / 2])  # the large error's gradient is capped at delta


def test_pessimistic_value_clipping_takes_the_larger_loss():
    # V_old = 0, c = 0.5. Sample 1: V = 1 moves past R = 0.8; the clipped 0.5 is further from R.
    # Sample 2: V = 1 towards R = 2; the clipped 0.5 is further from R again, so both use the clipped loss,
    # sample 3: V = 0.2 inside the band: both losses equal.
    batch = _value_batch([1.0, 1.0, 0.2], returns=[0.8, 2.0, 1.0], old_values=[0.0, 0.0, 0.0])
    term = ValueLoss(coef=1.0, clip_range=0.5, clip_mode="pessimistic")(batch)
    unclipped, clipped = [0.04, 1.0, 0.64], [0.09, 2.25, 0.64]
    assert term.stats["value_loss"].item() == pytest.approx(sum(map(max, unclipped, clipped)) / 3)
    (grad,) = th.autograd.grad(term.loss, batch.values)
    assert grad.tolist() == pytest.approx([0.0, 0.0, -2 * 0.8 / 3])  # the clipped branch sends no gradient
    assert term.stats["value_clip_fraction"].item() == pytest.approx(2 / 3)
    # SB3's clipping would take the clipped loss even when it is the smaller one:
    batch = _value_batch([0.3, 1.0], returns=[1.0, 0.4], old_values=[0.0, 0.0])
    sb3 = ValueLoss(coef=1.0, clip_range=0.5)(batch).stats["value_loss"].item()
    pessimistic = ValueLoss(coef=1.0, clip_range=0.5, clip_mode="pessimistic")(batch).stats["value_loss"].item()
    assert sb3 == pytest.approx((0.49 + 0.01) / 2) and pessimistic == pytest.approx((0.49 + 0.36) / 2)


def test_rllib_value_clipping_caps_each_samples_squared_error():
    batch = _value_batch([0.0, 0.0], returns=[1.0, 4.0], old_values=[0.0, 0.0])
    term = ValueLoss(coef=1.0, clip_range=10.0, clip_mode="error")(batch)
    assert term.stats["value_loss"].item() == pytest.approx((1.0 + 10.0) / 2)
    (grad,) = th.autograd.grad(term.loss, batch.values)
    assert grad.tolist() == pytest.approx([-1.0, 0.0])  # a capped error sends no gradient
    assert term.stats["value_clip_fraction"].item() == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: ClippedSurrogate(clip_range_high=0.0), "clip_range_high=0.0 is invalid: accepted values are numbers"),
        (lambda: RollbackSurrogate(rollback=-0.3), "rollback=-0.3 is invalid: accepted values are numbers >= 0"),
        (lambda: TrustRegionRollbackSurrogate(kl_range=0), "kl_range=0 is invalid: accepted values are numbers > 0"),
        (lambda: SPOSurrogate(clip_range=0), "clip_range=0 is invalid"),
        (lambda: ValueLoss(clip_mode="max"), "clip_mode='max' is invalid: accepted values are one of 'prediction'"),
        (lambda: ValueLoss(error="l2"), "error='l2' is invalid: accepted values are one of 'squared', 'huber', 'l1'"),
    ],
)
def test_invalid_variant_parameters_name_the_parameter(build, message):
    with pytest.raises(HyperparameterError, match=message.replace("(", r"\(")):
        build()
