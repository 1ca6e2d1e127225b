"""RecurrentPPOVariant: sb3-contrib's RecurrentPPO (LSTM policies) with pluggable loss components."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import torch as th
from sb3_contrib import RecurrentPPO
from sb3_contrib.common.recurrent.policies import (
    RecurrentActorCriticCnnPolicy,
    RecurrentActorCriticPolicy,
    RecurrentMultiInputActorCriticPolicy,
)
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule

from sb3_ppo_variants.algorithms.arguments import check_ppo_arguments
from sb3_ppo_variants.algorithms.base import LossComponentsMixin
from sb3_ppo_variants.common.distributions import current_distribution
from sb3_ppo_variants.common.errors import HyperparameterError
from sb3_ppo_variants.components.protocol import LossSpec
from sb3_ppo_variants.update.scoring import PolicyEvaluation
from sb3_ppo_variants.variants import accepts_variant

SelfRecurrentPPOVariant = TypeVar("SelfRecurrentPPOVariant", bound="RecurrentPPOVariant")


class RecurrentPPOVariant(LossComponentsMixin, RecurrentPPO):
    """sb3-contrib's ``RecurrentPPO`` with the loss given as a list of components.

    Takes every argument of ``RecurrentPPO`` with the same default and meaning, plus ``loss``,
    ``normalize_advantage="batch"`` and ``vf_learning_rate``
    (see :class:`~sb3_ppo_variants.PPOVariant`; ``compile`` accepts only ``False``).
    Minibatches are padded sequences: the padding
    mask reaches every reduction (advantage normalisation, each component's ``batch.mean``,
    the statistics), so a component written once is right here too. Without ``loss`` it is
    bit-identical to ``RecurrentPPO``.
    """

    @accepts_variant
    def __init__(
        self,
        policy: str | type[RecurrentActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 128,
        batch_size: int | None = 128,
        n_epochs: int = 10,
        gamma: float = 0.99,
        gae_lambda: float = 0.95,
        clip_range: float | Schedule = 0.2,
        clip_range_vf: float | Schedule | None = None,
        normalize_advantage: bool | str = True,
        ent_coef: float | Schedule = 0.0,
        vf_coef: float = 0.5,
        max_grad_norm: float = 0.5,
        use_sde: bool = False,
        sde_sample_freq: int = -1,
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
        if compile is not False:
            raise HyperparameterError(
                f"compile={compile!r} is invalid for RecurrentPPOVariant: accepted values are False (the LSTM runs "
                "a data-dependent loop over each padded sequence, which torch.compile cannot capture as one graph)."
            )
        if recompute_advantages:
            raise HyperparameterError(
                "recompute_advantages=True is invalid for RecurrentPPOVariant: accepted values are False "
                "(recomputing values would need to replay the LSTM over every sequence of the rollout)."
            )
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
            sde_sample_freq=sde_sample_freq,
            **({} if batch_size is None else {"batch_size": batch_size}),  # None: the whole buffer
            normalize_advantage=normalize_advantage,
            recompute_advantages=recompute_advantages,
            vf_learning_rate=vf_learning_rate,
        )
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,  # type: ignore[arg-type]
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            normalize_advantage=normalize_advantage,
            ent_coef=ent_coef,  # type: ignore[arg-type]
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
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
        self._configure_loss(loss, **linked, target_kl=target_kl)
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        self._setup_loss()

    @staticmethod
    def _evaluate(policy: BasePolicy, rollout_data: Any, actions: th.Tensor) -> PolicyEvaluation:
        values, log_prob, entropy = policy.evaluate_actions(  # type: ignore[operator]
            rollout_data.observations, actions, rollout_data.lstm_states, rollout_data.episode_starts
        )
        return PolicyEvaluation(values.flatten(), log_prob, entropy, current_distribution(policy))

    @staticmethod
    def _distribution(policy: BasePolicy, rollout_data: Any, actions: th.Tensor) -> Any:
        # The actor's LSTM replays each padded sequence; evaluate_actions does exactly that.
        return RecurrentPPOVariant._evaluate(policy, rollout_data, actions).distribution

    @staticmethod
    def _sample_mask(rollout_data: Any) -> th.Tensor:
        return rollout_data.mask > 1e-8  # padding of the sequences is stored as mask 0

    def learn(
        self: SelfRecurrentPPOVariant,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "RecurrentPPOVariant",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfRecurrentPPOVariant:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )


# The policies RecurrentPPOVariant accepts by name: sb3-contrib's LSTM policies, unchanged.
MlpLstmPolicy = RecurrentActorCriticPolicy
CnnLstmPolicy = RecurrentActorCriticCnnPolicy
MultiInputLstmPolicy = RecurrentMultiInputActorCriticPolicy
