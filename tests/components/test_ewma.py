"""PPO-EWMA: the clip around an average of past policies, and the average itself."""

import copy

import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_ppo_variants import MaskablePPOVariant, PPOVariant
from sb3_ppo_variants.components import (
    ClippedSurrogate,
    EWMAProximalSurrogate,
)
from sb3_ppo_variants.variants import variant_arguments
from tests.conftest import (
    FAST,
    grad_of,
    make_batch,
    masked_env,
    parameters_equal,
    save_continue_and_resume,
    training_context,
)


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
    env = "Pendulum-v1" if cls is PPOVariant else masked_env
    model = cls("MlpPolicy", make_vec_env(env, n_envs=2, seed=0), **variant_arguments("ppo-ewma", FAST)).learn(256)
    model, resumed = save_continue_and_resume(model, tmp_path / "model.zip", 256)
    assert parameters_equal(model.policy, resumed.policy)
    assert th.equal(resumed.loss[0].weight_sum, model.loss[0].weight_sum)
    for key, tensor in model.loss[0].average.items():
        assert th.equal(resumed.loss[0].average[key], tensor), key
