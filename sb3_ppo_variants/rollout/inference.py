"""The rollout's policy forward: what ``policy(obs)`` returns, the same draws and the same numbers,
in fewer operations.

SB3's ``ActorCriticPolicy.forward`` (and sb3-contrib's masked one) builds a torch distribution
object for every step: it checks its arguments, broadcasts, and keeps state the rollout never
reads. For the distributions that SB3's PPO uses by default (``Categorical`` for ``Discrete``
actions, ``DiagGaussian`` for ``Box``), :func:`rollout_forward` does the same arithmetic on the
tensors directly, in the same order, consuming the random generator the same way, so that a
rollout collected with it is bit-identical to SB3's (``tests/parity/test_parity.py`` compares whole
``learn()`` calls). Any other policy or distribution (gSDE, a squashed or multi-dimensional
distribution, a policy that overrides ``forward``) keeps the policy's own forward.

What torch's argument checks caught (non-finite logits or means, which SB3 reports with a
``ValueError`` from inside torch) is checked once per step on the action parameters and raised
as :class:`~sb3_ppo_variants.common.errors.RolloutDivergedError`, which names the environments
(and, from the rollout loop, the step).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch as th
from sb3_contrib.common.maskable.distributions import MaskableCategoricalDistribution
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy

from sb3_ppo_variants.common.errors import RolloutDivergedError
from sb3_ppo_variants.common.networks import Heads, policy_heads

RolloutForward = Callable[[th.Tensor, "np.ndarray | None"], tuple[th.Tensor, th.Tensor, th.Tensor]]
"""``(obs_tensor, action_masks) -> (actions, values, log_probs)``, as ``policy(obs_tensor)`` returns them."""


# SB3's forward and the distribution head it calls; a subclass that overrides either keeps its own.
_STANDARD_FORWARD = {
    ActorCriticPolicy: (ActorCriticPolicy.forward, ActorCriticPolicy._get_action_dist_from_latent),
    MaskableActorCriticPolicy: (
        MaskableActorCriticPolicy.forward,
        MaskableActorCriticPolicy._get_action_dist_from_latent,
    ),
}
_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))  # torch's Normal.log_prob spells it this way


def supports_rollout_forward(policy: BasePolicy) -> bool:
    """Whether :func:`rollout_forward` reproduces ``policy(obs)`` for this policy."""
    base = next((cls for cls in _STANDARD_FORWARD if isinstance(policy, cls)), None)
    if base is None or (type(policy).forward, type(policy)._get_action_dist_from_latent) != _STANDARD_FORWARD[base]:
        return False
    distribution = type(policy.action_dist)  # type: ignore[attr-defined]
    if base is MaskableActorCriticPolicy:
        return distribution is MaskableCategoricalDistribution
    return distribution in (CategoricalDistribution, DiagGaussianDistribution)


def rollout_forward(policy: ActorCriticPolicy, heads: Heads | None = None) -> RolloutForward:
    """``policy(obs, action_masks=...)`` for a policy :func:`supports_rollout_forward` accepts.

    ``heads``: the networks to run (default
    :func:`~sb3_ppo_variants.common.networks.policy_heads`; ``benchmarks/rollout_profile.py`` passes
    them compiled).
    """
    heads = heads or policy_heads(policy)
    distribution = policy.action_dist
    action_shape = policy.action_space.shape

    if isinstance(distribution, DiagGaussianDistribution):
        log_std = policy.log_std
        # The std's terms depend only on log_std: computed again when it changes (an optimizer
        # step or a loaded state bumps its version), not at every step of a rollout.
        std_terms: dict[tuple[int, th.Size], tuple[th.Tensor, th.Tensor, th.Tensor]] = {}

        def gaussian(obs: th.Tensor, action_masks: np.ndarray | None) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
            mean, values = heads(obs)
            _check_finite(mean, "mean actions")
            key = (log_std._version, mean.shape)
            if key not in std_terms:
                std_terms.clear()
                std = th.ones_like(mean) * log_std.exp()  # DiagGaussianDistribution.proba_distribution
                std_terms[key] = std, 2 * std**2, std.log()
            std, twice_variance, log_scale = std_terms[key]
            actions = mean + th.empty_like(mean).normal_() * std  # Normal.rsample
            log_prob = -((actions - mean) ** 2) / twice_variance - log_scale - _LOG_SQRT_2PI  # Normal.log_prob
            return actions.reshape((-1, *action_shape)), values, log_prob.sum(dim=1)

        return gaussian

    masked = isinstance(distribution, MaskableCategoricalDistribution)

    def categorical(obs: th.Tensor, action_masks: np.ndarray | None) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        logits, values = heads(obs)
        _check_finite(logits, "action logits")
        if masked:  # MaskableCategorical normalises, masks (or not), and normalises again
            logits = logits.view(-1, distribution.action_dim)  # type: ignore[attr-defined]
            logits = logits - logits.logsumexp(dim=-1, keepdim=True)
            if action_masks is not None:
                masks = th.as_tensor(action_masks, dtype=th.bool, device=logits.device).reshape(logits.shape)
                logits = th.where(masks, logits, th.tensor(-1e8, dtype=logits.dtype, device=logits.device))
        logits = logits - logits.logsumexp(dim=-1, keepdim=True)  # Categorical(logits=...)
        actions = th.multinomial(th.softmax(logits, dim=-1), 1, True)  # Categorical.sample
        log_prob = logits.gather(-1, actions).squeeze(-1)  # Categorical.log_prob
        return actions.reshape((-1, *action_shape)), values, log_prob

    return categorical


def _check_finite(parameters: th.Tensor, name: str) -> None:
    # A finite sum means finite elements; an infinite one may be an overflow, so look closer.
    if not math.isfinite(parameters.sum().item()) and not bool(th.isfinite(parameters).all()):
        rows = (~th.isfinite(parameters)).reshape(parameters.shape[0], -1).any(dim=1).nonzero().flatten().tolist()
        raise RolloutDivergedError(
            f"the policy's {name} are not finite in environment(s) {rows}: "
            "the observations or the policy's parameters hold NaN or inf (torch's distributions would raise "
            "a ValueError here; the rollout stopped before acting on them)"
        )
