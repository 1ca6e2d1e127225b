"""Each component's value and gradient against a hand computation on fixed tensors."""

import math

import pytest
import torch as th
from torch.distributions import Categorical, Normal

from sb3_ppo_variants.components import (
    ClippedSurrogate,
    EntropyBonus,
    KLEarlyStop,
    KLPenalty,
    ValueLoss,
    adapt_kl_coef,
    exact_kl,
)
from tests.conftest import make_batch


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


def test_entropy_bonus_with_and_without_closed_form():
    entropy = th.tensor([0.5, 1.0], requires_grad=True)
    term = EntropyBonus(coef=0.1)(make_batch(entropy=entropy))
    assert term.loss.item() == pytest.approx(-0.1 * 0.75)
    assert term.stats["entropy_loss"].item() == pytest.approx(-0.75)
    (grad,) = th.autograd.grad(term.loss, entropy)
    assert grad.tolist() == pytest.approx([-0.05, -0.05])
    # No closed form: -log pi estimates the entropy, as in SB3.
    term = EntropyBonus(coef=0.1)(make_batch(log_prob=[-2.0, -1.0]))
    assert term.stats["entropy_loss"].item() == pytest.approx(-1.5)


def test_exact_kl_of_categoricals_and_independent_gaussian_dimensions():
    old = Categorical(probs=th.tensor([[0.5, 0.5]]))
    new = Categorical(probs=th.tensor([[0.25, 0.75]]))
    expected = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)
    assert exact_kl(old, new).item() == pytest.approx(expected)
    old_n, new_n = Normal(th.zeros(1, 2), th.ones(1, 2)), Normal(th.tensor([[1.0, 0.0]]), th.tensor([[1.0, 2.0]]))
    # KL(N(0,1)||N(1,1)) = 0.5; KL(N(0,1)||N(0,2)) = log 2 + 1/8 - 1/2
    assert exact_kl(old_n, new_n).item() == pytest.approx(0.5 + math.log(2) + 1 / 8 - 0.5)
    # MultiDiscrete: a list of categoricals, summed
    assert exact_kl([old, old], [new, new]).item() == pytest.approx(2 * expected)


def test_kl_penalty_exact_value_and_gradient():
    logits = th.tensor([[0.0, math.log(3.0)]], requires_grad=True)  # probs [0.25, 0.75]
    batch = make_batch(ratio=[1.0], old_distribution=Categorical(probs=th.tensor([[0.5, 0.5]])))
    batch.distribution = Categorical(logits=logits)
    term = KLPenalty(coef=0.2, adaptive=False)(batch)
    kl = 0.5 * math.log(2) + 0.5 * math.log(0.5 / 0.75)
    assert term.loss.item() == pytest.approx(0.2 * kl)
    (grad,) = th.autograd.grad(term.loss, logits)
    # d KL(p||softmax(z)) / dz = softmax(z) - p
    assert grad.tolist()[0] == pytest.approx([0.2 * (0.25 - 0.5), 0.2 * (0.75 - 0.5)])


@pytest.mark.parametrize(
    ("estimator", "expected"),
    [
        ("k1", -math.log(2)),
        ("k2", 0.5 * math.log(2) ** 2),
        ("k3", (2 - 1) - math.log(2)),
    ],
)
def test_kl_sample_estimators(estimator, expected):
    batch = make_batch(ratio=[2.0])
    assert KLPenalty(coef=1.0, adaptive=False, estimator=estimator)(batch).stats["kl"].item() == pytest.approx(expected)


def test_paper_adaptive_rule_step_by_step():
    target = 0.01
    assert adapt_kl_coef(1.0, 0.001, target, "paper") == 0.5  # below target / 1.5: halve
    assert adapt_kl_coef(1.0, 0.02, target, "paper") == 2.0  # above 1.5 x target: double
    assert adapt_kl_coef(1.0, 0.01, target, "paper") == 1.0  # in between: keep
    assert adapt_kl_coef(1.0, target / 1.5, target, "paper") == 1.0  # the bounds themselves keep
    assert adapt_kl_coef(1.0, 1.5 * target, target, "paper") == 1.0
    coef = 1.0
    for kl in (0.05, 0.05, 0.001, 0.01):
        coef = adapt_kl_coef(coef, kl, target, "paper")
    assert coef == 2.0  # x2, x2, /2, keep


def test_rllib_adaptive_rule_step_by_step():
    target = 0.01
    assert adapt_kl_coef(0.2, 0.03, target, "rllib") == pytest.approx(0.3)  # above 2 x target: x1.5
    assert adapt_kl_coef(0.2, 0.004, target, "rllib") == pytest.approx(0.1)  # below 0.5 x target: x0.5
    assert adapt_kl_coef(0.2, 0.015, target, "rllib") == 0.2  # between: keep
    assert adapt_kl_coef(0.2, 0.02, target, "rllib") == 0.2  # 2 x target is not above it
    assert adapt_kl_coef(0.2, float("nan"), target, "rllib") == 0.2  # a NaN KL changes nothing


def test_kl_penalty_adapts_once_per_train_call_from_the_mean_kl():
    penalty = KLPenalty(coef=0.2, target=0.01, rule="rllib")
    assert penalty.after_train({"kl": 0.05}) == {"kl_coef": pytest.approx(0.3)}
    fixed = KLPenalty(coef=0.2, target=0.01, adaptive=False)
    assert fixed.after_train({"kl": 0.05}) == {"kl_coef": 0.2}


def test_kl_early_stop_decides_above_factor_times_target():
    batch = make_batch(ratio=[2.0])  # k3 = 1 - log 2 = 0.307
    assert KLEarlyStop(target=0.2)(batch).loss is None
    assert KLEarlyStop(target=0.2).stop_early(batch) == "reaching max kl: 0.31"  # 0.307 > 0.3
    assert KLEarlyStop(target=0.21).stop_early(batch) is None  # 0.307 < 0.315
    assert KLEarlyStop(target=None).stop_early(batch) is None


def test_masked_mean_ignores_padding_in_every_component():
    plain = make_batch(
        ratio=[0.5, 1.5], advantages=[1.0, 2.0], values=[1.0, 2.0], returns=[0.0, 0.0], entropy=th.tensor([0.3, 0.6])
    )
    padded = make_batch(
        ratio=[0.5, 1.5, 9.0],
        advantages=[1.0, 2.0, -7.0],
        values=[1.0, 2.0, 50.0],
        returns=[0.0, 0.0, 3.0],
        entropy=th.tensor([0.3, 0.6, 4.0]),
        mask=th.tensor([True, True, False]),
    )
    for component in (
        ClippedSurrogate(),
        ValueLoss(clip_range=0.3),
        EntropyBonus(coef=0.1),
        KLPenalty(adaptive=False, estimator="k3"),
    ):
        assert component(padded).loss.item() == pytest.approx(component(plain).loss.item())


def test_padding_changes_neither_the_exact_kl_nor_the_early_stop_decision():
    old_logits = th.tensor([[0.0, 1.0], [1.0, 0.0], [9.0, -9.0]])
    new_logits = th.tensor([[0.5, 0.5], [0.0, 2.0], [-9.0, 9.0]])
    plain = make_batch(ratio=[1.2, 0.7])
    plain.old_distribution, plain.distribution = Categorical(logits=old_logits[:2]), Categorical(logits=new_logits[:2])
    padded = make_batch(ratio=[1.2, 0.7, 50.0], mask=th.tensor([True, True, False]))
    padded.old_distribution, padded.distribution = Categorical(logits=old_logits), Categorical(logits=new_logits)
    penalty = KLPenalty(adaptive=False)
    assert penalty(padded).loss.item() == pytest.approx(penalty(plain).loss.item())
    stop = KLEarlyStop(target=0.05)
    assert stop.stop_early(padded) == stop.stop_early(plain)
