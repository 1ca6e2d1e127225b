"""Each term sends gradient only where it should, with separate actor and critic networks."""

import pytest
import torch as th

from sb3_ppo_variants import PPOVariant
from sb3_ppo_variants.components import ClippedSurrogate, EntropyBonus, KLPenalty, ValueLoss


@pytest.fixture(scope="module")
def model():
    model = PPOVariant(
        "MlpPolicy",
        "Pendulum-v1",
        n_steps=64,
        batch_size=64,
        seed=0,
        device="cpu",
        policy_kwargs=dict(net_arch=dict(pi=[16], vf=[16]), share_features_extractor=False),
    )
    return model.learn(64)  # fills the rollout buffer


def _grads(model, component):
    model.policy.zero_grad(set_to_none=True)
    model.loss = [component]
    rollout_data = next(model.rollout_buffer.get(64))
    batch = model.evaluate_minibatch(rollout_data)
    if component.needs_old_distribution:  # move away from the old policy so the KL has a gradient
        batch.distribution = th.distributions.Normal(batch.distribution.loc + 0.1, batch.distribution.scale)
    component(batch).loss.backward()
    return {name for name, p in model.policy.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}


def test_value_loss_moves_only_the_critic(model):
    touched = _grads(model, ValueLoss(coef=0.5))
    assert touched and all(name.startswith(("mlp_extractor.value_net", "value_net")) for name in touched)


@pytest.mark.parametrize("component", [ClippedSurrogate(), EntropyBonus(coef=0.1), KLPenalty(adaptive=False)])
def test_policy_terms_move_only_the_actor(model, component):
    touched = _grads(model, component)
    assert touched
    assert not any(name.startswith(("mlp_extractor.value_net", "value_net")) for name in touched)
