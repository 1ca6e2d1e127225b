"""The policy on a minibatch, as ``train()`` scores it: SB3's ``evaluate_actions`` in fewer Python
calls.

SB3's ``ActorCriticPolicy.evaluate_actions`` goes through a dozen ``nn.Module`` calls and SB3's
distribution wrappers for every minibatch, whose Python is a visible part of a gradient step at
SB3's 64x64 networks (``benchmarks/train_profile.py``). For the distributions SB3's PPO uses by
default (``Categorical`` for ``Discrete`` actions, ``Normal`` for ``Box``), :func:`evaluate_actions`
calls the networks as the functions their modules call
(:func:`~sb3_ppo_variants.common.networks.policy_heads`) and builds the same torch distribution
directly: the same differentiable operations on the same tensors, so the same values and gradients
(``tests/parity/test_parity.py`` compares whole ``learn()`` calls bit for bit). Its argument checks
are off, as they are for every distribution during ``train()``
(:func:`~sb3_ppo_variants.update.trainer.distribution_checks_off`). Any other policy or distribution
keeps its own ``evaluate_actions``.
"""

from __future__ import annotations

from typing import Any

import torch as th
from stable_baselines3.common.distributions import (
    CategoricalDistribution,
    DiagGaussianDistribution,
    sum_independent_dims,
)
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from torch.distributions import Categorical, Normal

from sb3_ppo_variants.common.networks import Heads, policy_heads
from sb3_ppo_variants.update.scoring import Evaluate, PolicyEvaluation


def supports_direct_evaluation(policy: BasePolicy) -> bool:
    """Whether :func:`evaluate_actions` reproduces ``policy.evaluate_actions`` for this policy:
    SB3's ``ActorCriticPolicy`` (or a subclass that keeps its evaluation) with a ``Categorical``
    or diagonal-Gaussian action distribution."""
    if not isinstance(policy, ActorCriticPolicy):
        return False
    return (
        _function_of(policy.evaluate_actions) is ActorCriticPolicy.evaluate_actions
        and _function_of(policy._get_action_dist_from_latent) is ActorCriticPolicy._get_action_dist_from_latent
        and type(policy.action_dist) in (CategoricalDistribution, DiagGaussianDistribution)
    )


def _function_of(method: Any) -> Any:
    """The function behind a bound method (a subclass's override, or one set on the instance)."""
    return getattr(method, "__func__", method)


def direct_evaluation(policy: BasePolicy, evaluate: Evaluate) -> Evaluate:
    """A scorer's ``evaluate`` for one ``train()`` call: :func:`evaluate_actions` for ``policy`` if
    :func:`supports_direct_evaluation` accepts it, with its networks resolved once for the call;
    ``evaluate`` for any other policy (a copy: the pre-update policy, a component's own)."""
    if not supports_direct_evaluation(policy):
        return evaluate
    heads = policy_heads(policy)  # type: ignore[arg-type]

    def evaluate_directly(evaluated: BasePolicy, rollout_data: Any, actions: th.Tensor) -> PolicyEvaluation:
        if evaluated is not policy:
            return evaluate(evaluated, rollout_data, actions)
        values, log_prob, entropy = evaluate_actions(policy, rollout_data.observations, actions, heads)  # type: ignore[arg-type]
        return PolicyEvaluation(values.flatten(), log_prob, entropy, policy.action_dist.distribution)  # type: ignore[attr-defined]

    return evaluate_directly


def evaluate_actions(
    policy: ActorCriticPolicy, obs: th.Tensor, actions: th.Tensor, heads: Heads | None = None
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """``policy.evaluate_actions(obs, actions)`` for a policy :func:`supports_direct_evaluation`
    accepts: ``(values, log_prob, entropy)``. As SB3's does, it leaves the distribution in
    ``policy.action_dist.distribution`` (the loss components read it there). ``heads``: the
    policy's :func:`~sb3_ppo_variants.common.networks.policy_heads`, resolved once for many calls."""
    parameters, values = (heads or policy_heads(policy))(obs)
    if isinstance(policy.action_dist, CategoricalDistribution):
        distribution = Categorical(logits=parameters, validate_args=False)
        log_prob = distribution.log_prob(actions)
        entropy = distribution.entropy()
    else:  # DiagGaussianDistribution.proba_distribution, log_prob and entropy
        std = th.ones_like(parameters) * policy.log_std.exp()
        distribution = Normal(parameters, std, validate_args=False)
        log_prob = sum_independent_dims(distribution.log_prob(actions))
        entropy = sum_independent_dims(distribution.entropy())
    policy.action_dist.distribution = distribution
    return values, log_prob, entropy
