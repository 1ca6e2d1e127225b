"""MaskablePPOVariant: sb3-contrib's MaskablePPO (invalid-action masking) with pluggable loss components."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import torch as th
from sb3_contrib import MaskablePPO
from sb3_contrib.common.maskable.policies import (
    MaskableActorCriticCnnPolicy,
    MaskableActorCriticPolicy,
    MaskableMultiInputActorCriticPolicy,
)
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule

from sb3_ppo_variants.algorithms.arguments import check_ppo_arguments
from sb3_ppo_variants.algorithms.base import LossComponentsMixin
from sb3_ppo_variants.common.distributions import current_distribution, torch_distribution
from sb3_ppo_variants.components.protocol import LossSpec
from sb3_ppo_variants.update.scoring import PolicyEvaluation
from sb3_ppo_variants.variants import accepts_variant

SelfMaskablePPOVariant = TypeVar("SelfMaskablePPOVariant", bound="MaskablePPOVariant")


class MaskablePPOVariant(LossComponentsMixin, MaskablePPO):
    """sb3-contrib's ``MaskablePPO`` with the loss given as a list of components.

    Takes every argument of ``MaskablePPO`` with the same default and meaning, plus ``loss``,
    ``normalize_advantage="batch"``, ``recompute_advantages``, ``vf_learning_rate`` and ``compile``
    (see :class:`~sb3_ppo_variants.PPOVariant`). Rollouts, ``predict(action_masks=...)`` and
    ``learn(use_masking=...)`` are MaskablePPO's; the loss sees the masked distributions, so the
    exact KL ignores invalid actions. Without ``loss`` it is bit-identical to ``MaskablePPO``.
    """

    @accepts_variant
    def __init__(
        self,
        policy: str | type[MaskableActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int | None = 64,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool | str = True,
        ent_coef: float | Schedule = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        rollout_buffer_class: type[RolloutBuffer] | None = None,
        rollout_buffer_kwargs: dict[str, Any] | None = None,
        target_kl: float | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        loss: Iterable[LossSpec] | None = None,
        variant: str | None = None,
        recompute_advantages: bool = False,
        vf_learning_rate: float | Schedule | None = None,
        compile: bool | dict[str, Any] = False,
        _init_setup_model: bool = True,
    ):
        linked = dict(clip_range=clip_range, clip_range_vf=clip_range_vf, ent_coef=ent_coef, vf_coef=vf_coef)
        check_ppo_arguments(
            **linked,
            target_kl=target_kl,
            learning_rate=learning_rate,
            n_steps=n_steps,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            max_grad_norm=max_grad_norm,
            stats_window_size=stats_window_size,
            **({} if batch_size is None else {"batch_size": batch_size}),  # None: the whole buffer
            normalize_advantage=normalize_advantage,
            recompute_advantages=recompute_advantages,
            vf_learning_rate=vf_learning_rate,
            compile=compile,
        )
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage,
            ent_coef=ent_coef,  # type: ignore[arg-type]
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            target_kl=target_kl,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        self.recompute_advantages = recompute_advantages
        self.vf_learning_rate = vf_learning_rate
        self.compile = compile
        self._configure_loss(loss, **linked, target_kl=target_kl)
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        self._setup_loss()

    @staticmethod
    def _evaluate(policy: BasePolicy, rollout_data: Any, actions: th.Tensor) -> PolicyEvaluation:
        values, log_prob, entropy = policy.evaluate_actions(  # type: ignore[operator]
            rollout_data.observations, actions, action_masks=rollout_data.action_masks
        )
        return PolicyEvaluation(values.flatten(), log_prob, entropy, current_distribution(policy))

    @staticmethod
    def _distribution(policy: BasePolicy, rollout_data: Any, actions: th.Tensor) -> Any:
        distribution = policy.get_distribution(rollout_data.observations, action_masks=rollout_data.action_masks)  # type: ignore[operator]
        return torch_distribution(distribution)

    def learn(  # type: ignore[override]
        self: SelfMaskablePPOVariant,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "MaskablePPOVariant",
        reset_num_timesteps: bool = True,
        use_masking: bool = True,
        progress_bar: bool = False,
    ) -> SelfMaskablePPOVariant:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            use_masking=use_masking,
            progress_bar=progress_bar,
        )


# The policies MaskablePPOVariant accepts by name: sb3-contrib's maskable policies, unchanged.
MlpPolicy = MaskableActorCriticPolicy
CnnPolicy = MaskableActorCriticCnnPolicy
MultiInputPolicy = MaskableMultiInputActorCriticPolicy
