"""The next wave of components and options: value and gradient against hand computations."""

import math

import numpy as np
import pytest
import torch as th
from sb3_contrib.common.envs import InvalidActionEnvDiscrete
from stable_baselines3.common.env_util import make_vec_env
from torch.distributions import Categorical

from sb3_ppo_variants import HyperparameterError, MaskablePPOVariant, PPOVariant, RecurrentPPOVariant
from sb3_ppo_variants.common.hooks import TrainingContext
from sb3_ppo_variants.losses import (
    CISPOSurrogate,
    ClippedSurrogate,
    KLAdaptiveLearningRate,
    SoftClipSurrogate,
    ValueLoss,
    ValueNormalization,
    kl_per_sample,
)
from sb3_ppo_variants.variants import variant_arguments
from tests.conftest import FAST, make_batch


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


def _context(returns: np.ndarray) -> TrainingContext:
    class Buffer:
        pass

    buffer = Buffer()
    buffer.returns = returns
    return TrainingContext(None, None, None, buffer, 1.0, step=None)


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
