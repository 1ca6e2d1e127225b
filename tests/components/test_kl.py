"""KL penalties, estimators, adaptive rules, early stopping and MDPO's penalty."""

import math

import pytest
import torch as th
from torch.distributions import Categorical, Normal

from sb3_ppo_variants import HyperparameterError, PPOVariant
from sb3_ppo_variants.components import (
    KLEarlyStop,
    KLPenalty,
    MirrorDescentPenalty,
    adapt_kl_coef,
    exact_kl,
    kl_per_sample,
)
from sb3_ppo_variants.variants import variant_arguments
from tests.conftest import FAST, make_batch


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
