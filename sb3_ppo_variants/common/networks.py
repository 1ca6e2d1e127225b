"""SB3's actor-critic networks called as the functions their modules call.

For SB3's own networks (``FlattenExtractor``, ``MlpExtractor``, linear heads, no hooks),
:func:`policy_heads` calls ``F.linear``, ``torch.tanh`` and ``torch.relu`` on the layers'
parameters instead of going through ``nn.Module.__call__`` a dozen times: the same kernels on the
same tensors, so the same values and, with autograd on, the same gradients. The rollout
(:mod:`~sb3_ppo_variants.rollout.inference`) and ``train()``'s evaluation
(:mod:`~sb3_ppo_variants.update.evaluation`) run the networks through it.
"""

from __future__ import annotations

from collections.abc import Callable

import torch as th
import torch.nn.functional as F
from sb3_contrib.common.maskable.policies import MaskableActorCriticPolicy
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.preprocessing import preprocess_obs
from stable_baselines3.common.torch_layers import FlattenExtractor, MlpExtractor
from torch import nn

Heads = Callable[[th.Tensor], tuple[th.Tensor, th.Tensor]]
"""``obs_tensor -> (action parameters, values)``: the networks, no sampling."""

_STANDARD_EXTRACT_FEATURES = (ActorCriticPolicy.extract_features, MaskableActorCriticPolicy.extract_features)


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
        type(policy).extract_features not in _STANDARD_EXTRACT_FEATURES
        or any(type(extractor) is not FlattenExtractor for extractor in extractors)
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
