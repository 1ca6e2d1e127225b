"""SB3's actor-critic policies with PPG's auxiliary value head on the policy network."""

from __future__ import annotations

import functools
from typing import Any

import torch as th
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.torch_layers import CombinedExtractor, NatureCNN


class PhasicActorCriticPolicy(ActorCriticPolicy):
    """``ActorCriticPolicy`` plus an auxiliary value head ``aux_value_net`` on the actor's latent
    (Cobbe et al., ICML 2021, Phasic Policy Gradient, arXiv:2009.04416; CleanRL's ``aux_critic``).

    The head is trained only in PPG's auxiliary phase
    (:class:`~sb3_ppo_variants.components.phasic.PhasicAuxiliaryPhase`), where predicting values through the
    policy network distils what the critic knows into the policy's features. Everything else is
    SB3's policy: the same arguments, the same actor and critic, the same rollouts. Aliases:
    ``"PhasicMlpPolicy"``, ``"PhasicCnnPolicy"`` and ``"PhasicMultiInputPolicy"``.
    """

    def _build(self, lr_schedule: Any) -> None:
        super()._build(lr_schedule)
        self.aux_value_net = th.nn.Linear(self.mlp_extractor.latent_dim_pi, 1)
        if self.ortho_init:  # as SB3 initialises value_net
            self.aux_value_net.apply(functools.partial(self.init_weights, gain=1))
        # SB3 made the optimizer before the head existed; make it again over every parameter.
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)  # type: ignore[call-arg]

    def auxiliary_values(self, obs: th.Tensor | dict[str, th.Tensor]) -> th.Tensor:
        """The auxiliary head's value predictions, through the actor's features and latent."""
        features = ActorCriticPolicy.extract_features(self, obs, self.pi_features_extractor)
        return self.aux_value_net(self.mlp_extractor.forward_actor(features))


class PhasicActorCriticCnnPolicy(PhasicActorCriticPolicy):
    """:class:`PhasicActorCriticPolicy` with SB3's ``NatureCNN`` features (``CnnPolicy``'s)."""

    def __init__(self, *arguments: Any, features_extractor_class: type = NatureCNN, **keywords: Any) -> None:
        super().__init__(*arguments, features_extractor_class=features_extractor_class, **keywords)


class PhasicMultiInputActorCriticPolicy(PhasicActorCriticPolicy):
    """:class:`PhasicActorCriticPolicy` for dict observations (``MultiInputPolicy``'s features)."""

    def __init__(self, *arguments: Any, features_extractor_class: type = CombinedExtractor, **keywords: Any) -> None:
        super().__init__(*arguments, features_extractor_class=features_extractor_class, **keywords)
