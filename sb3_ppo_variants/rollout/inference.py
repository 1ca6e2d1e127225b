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
import torch.nn.functional as F
from sb3_contrib.common.maskable.distributions import MaskableCategoricalDistribution
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.distributions import CategoricalDistribution, DiagGaussianDistribution
from stable_baselines3.common.policies import ActorCriticPolicy, BasePolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import FlattenExtractor, MlpExtractor
from torch import nn

from sb3_ppo_variants.common.errors import RolloutDivergedError

RolloutForward = Callable[[th.Tensor, "np.ndarray | None"], tuple[th.Tensor, th.Tensor, th.Tensor]]
"""``(obs_tensor, action_masks) -> (actions, values, log_probs)``, as ``policy(obs_tensor)`` returns them."""

Heads = Callable[[th.Tensor], tuple[th.Tensor, th.Tensor]]
"""``obs_tensor -> (action parameters, values)``: the networks, no sampling."""

# SB3's forward and the distribution head it calls; a subclass that overrides either keeps its own.
_STANDARD_FORWARD = {
    ActorCriticPolicy: (ActorCriticPolicy.forward, ActorCriticPolicy._get_action_dist_from_latent),
    MaskableActorCriticPolicy: (
        MaskableActorCriticPolicy.forward,
        MaskableActorCriticPolicy._get_action_dist_from_latent,
    ),
}
_LOG_SQRT_2PI = math.log(math.sqrt(2 * math.pi))  # torch's Normal.log_prob spells it this way


def policy_heads(policy: ActorCriticPolicy) -> Heads:
    """The networks of ``policy.forward``: features, latents, the action head and the value head.

    For SB3's own networks (``FlattenExtractor``, ``MlpExtractor``, linear heads, no hooks) the
    layers are called as the functions their ``forward`` calls (``F.linear``, ``torch.tanh``,
    ``torch.relu``) without going through ``nn.Module.__call__`` a dozen times a step: the same
    kernels on the same tensors. Other networks are called as modules."""
    layers = _plain_layers(policy)
    if layers is not None:
        actor, critic = layers
        space, normalize_images = policy.observation_space, policy.normalize_images

        def plain_heads(obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
            features = preprocess_obs(obs, space, normalize_images=normalize_images).flatten(1)  # FlattenExtractor
            return _run(actor, features), _run(critic, features)

        return plain_heads

    def heads(obs: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        features = policy.extract_features(obs)
        if policy.share_features_extractor:
            latent_pi, latent_vf = policy.mlp_extractor(features)
        else:
            pi_features, vf_features = features
            latent_pi = policy.mlp_extractor.forward_actor(pi_features)
            latent_vf = policy.mlp_extractor.forward_critic(vf_features)
        return policy.action_net(latent_pi), policy.value_net(latent_vf)

    return heads


Layer = tuple[Callable[..., th.Tensor], tuple[th.Tensor, ...]]


def _plain_layers(policy: ActorCriticPolicy) -> tuple[list[Layer], list[Layer]] | None:
    """The actor's and the critic's layers as ``(function, parameters)``, or ``None`` where the
    networks are not SB3's plain ones or a hook would run in ``nn.Module.__call__``."""
    extractors = (
        [policy.features_extractor]
        if policy.share_features_extractor
        else [policy.pi_features_extractor, policy.vf_features_extractor]
    )
    mlp = policy.mlp_extractor
    if (
        any(type(extractor) is not FlattenExtractor for extractor in extractors)
        or type(mlp) is not MlpExtractor
        or type(mlp.policy_net) is not nn.Sequential
        or type(mlp.value_net) is not nn.Sequential
        or type(policy.action_net) is not nn.Linear
        or type(policy.value_net) is not nn.Linear
        or any(_has_hooks(module) for module in policy.modules())
        or _global_hooks()
    ):
        return None
    actor = [_layer(module) for module in [*mlp.policy_net, policy.action_net]]
    critic = [_layer(module) for module in [*mlp.value_net, policy.value_net]]
    return actor, critic


def _layer(module: nn.Module) -> Layer:
    if type(module) is nn.Linear:  # a parametrized Linear is a subclass, called as a module
        return F.linear, (module.weight, module.bias)
    if type(module) is nn.Tanh:
        return th.tanh, ()
    if type(module) is nn.ReLU and not module.inplace:
        return th.relu, ()
    return module, ()


def _run(layers: list[Layer], x: th.Tensor) -> th.Tensor:
    for function, parameters in layers:
        x = function(x, *parameters)
    return x


def _has_hooks(module: nn.Module) -> bool:
    return bool(
        module._forward_hooks or module._forward_pre_hooks or module._backward_hooks or module._backward_pre_hooks
    )


def _global_hooks() -> bool:
    """Whether hooks registered for every module (``nn.modules.module.register_module_forward_hook``) exist."""
    registry = nn.modules.module
    kinds = ("forward", "forward_pre", "backward", "backward_pre")
    return any(getattr(registry, f"_global_{kind}_hooks", None) for kind in kinds)


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

    ``heads``: the networks to run (default :func:`policy_heads`; ``benchmarks/rollout_profile.py``
    passes them compiled).
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
