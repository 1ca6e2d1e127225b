"""The value loss: errors and clipping modes."""

import pytest
import torch as th

from sb3_ppo_variants.components import (
    ValueLoss,
)
from tests.conftest import grad_of, make_batch


def _value_batch(values, returns, old_values):
    return make_batch(values=th.tensor(values, requires_grad=True), returns=returns, old_values=old_values)


def test_value_loss_unclipped():
    values = th.tensor([1.0, 2.0, 3.0], requires_grad=True)
    batch = make_batch(values=values, returns=[1.5, 1.0, 3.0])
    term = ValueLoss(coef=0.5)(batch)
    assert term.stats["value_loss"].item() == pytest.approx((0.25 + 1.0 + 0.0) / 3)
    assert term.loss.item() == pytest.approx(0.5 * 1.25 / 3)
    (grad,) = th.autograd.grad(term.loss, values)
    # d/dV of 0.5 * mean((R - V)^2) = -(R - V) / 3
    assert grad.tolist() == pytest.approx([-0.5 / 3, 1.0 / 3, 0.0])


def test_value_loss_clipped_around_old_value_as_sb3():
    values = th.tensor([1.0, 2.0, 3.0], requires_grad=True)
    batch = make_batch(values=values, returns=[1.5, 1.0, 3.0], old_values=[0.0, 2.0, 4.0])
    term = ValueLoss(coef=0.5, clip_range=0.5)(batch)
    # V_clip = old + clip(V - old, -0.5, 0.5) = [0.5, 2.0, 3.5]; errors [1, -1, -0.5]
    assert term.stats["value_loss"].item() == pytest.approx((1 + 1 + 0.25) / 3)
    (grad,) = th.autograd.grad(term.loss, values)
    assert grad.tolist() == pytest.approx([0.0, 1.0 / 3, 0.0])  # clipped samples send no gradient
    assert term.stats["clip_range_vf"] == 0.5


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


def test_l1_value_loss_has_the_errors_sign_as_gradient():
    values = th.tensor([1.5, 2.0, 1.0], requires_grad=True)
    term = ValueLoss(coef=0.5, error="l1")(make_batch(values=values, returns=[1.0, 2.5, 3.0]))
    assert term.loss.item() == pytest.approx(0.5 * (0.5 + 0.5 + 2.0) / 3)
    assert grad_of(term, values) == pytest.approx([0.5 / 3, -0.5 / 3, -0.5 / 3])
