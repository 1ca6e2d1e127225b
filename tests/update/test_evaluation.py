"""train()'s evaluation of a minibatch: SB3's evaluate_actions, the same values and gradients."""

import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_ppo_variants import PPOVariant
from sb3_ppo_variants.update.evaluation import evaluate_actions, supports_direct_evaluation

POLICIES = {
    "discrete": ("CartPole-v1", {}),
    "continuous": ("Pendulum-v1", {}),
    "relu-separate-extractors": ("CartPole-v1", {"activation_fn": th.nn.ReLU, "share_features_extractor": False}),
    "elu-called-as-a-module": ("Pendulum-v1", {"activation_fn": th.nn.ELU, "net_arch": {"pi": [8], "vf": [16, 4]}}),
}


def values_and_gradients(policy, evaluate, obs, actions):
    policy.zero_grad()
    values, log_prob, entropy = evaluate(obs, actions)
    (values.sum() + 0.7 * log_prob.sum() - 0.1 * entropy.sum()).backward()
    return [values, log_prob, entropy] + [parameter.grad.clone() for parameter in policy.parameters()]


@pytest.mark.parametrize("case", list(POLICIES))
def test_the_evaluation_gives_sb3s_values_and_gradients_bit_for_bit(case):
    env_id, policy_kwargs = POLICIES[case]
    policy = PPO("MlpPolicy", env_id, policy_kwargs=policy_kwargs, seed=0).policy
    rng = np.random.default_rng(0)
    obs = th.as_tensor(rng.normal(size=(64, *policy.observation_space.shape)), dtype=th.float32)
    actions = th.as_tensor(np.stack([policy.action_space.sample() for _ in range(64)]))
    assert supports_direct_evaluation(policy)
    ours = values_and_gradients(policy, lambda o, a: evaluate_actions(policy, o, a), obs, actions)
    ours_distribution = policy.action_dist.distribution
    theirs = values_and_gradients(policy, policy.evaluate_actions, obs, actions)
    for mine, sb3s in zip(ours, theirs, strict=True):
        assert th.equal(mine, sb3s)
    assert type(ours_distribution) is type(policy.action_dist.distribution)  # left where SB3 leaves it


class CountingPolicy(ActorCriticPolicy):
    """A policy with its own evaluate_actions: train() must call it."""

    calls = 0

    def evaluate_actions(self, obs, actions):
        self.calls += 1  # an instance's own count: each test's policy starts at zero
        return super().evaluate_actions(obs, actions)


def test_a_policy_with_its_own_evaluate_actions_keeps_it():
    model = PPOVariant(CountingPolicy, "CartPole-v1", n_steps=32, batch_size=16, n_epochs=2, seed=0)
    assert not supports_direct_evaluation(model.policy)
    model.learn(32)
    assert model.policy.calls == 4  # two epochs of two minibatches


class DoubledObservations(ActorCriticPolicy):
    """A policy whose own extract_features changes the observations."""

    def extract_features(self, obs, features_extractor=None):
        return super().extract_features(2 * obs, features_extractor)


def test_a_policy_with_its_own_features_is_evaluated_through_them():
    policy = PPO(DoubledObservations, "CartPole-v1", seed=0).policy
    obs, actions = th.ones(8, 4), th.zeros(8, dtype=th.long)
    with th.no_grad():
        for mine, sb3s in zip(
            evaluate_actions(policy, obs, actions), policy.evaluate_actions(obs, actions), strict=True
        ):
            assert th.equal(mine, sb3s)


def test_a_hook_on_the_policys_networks_runs_in_train():
    model = PPOVariant("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=16, n_epochs=2, seed=0)
    shapes = []
    model.policy.value_net.register_forward_hook(lambda module, inputs, output: shapes.append(tuple(output.shape)))
    model.learn(32)
    assert shapes.count((16, 1)) == 4  # each minibatch of train() went through the module
