"""PPOVariant: SB3's PPO, with the loss given as a list of components."""

from __future__ import annotations

import warnings
from collections.abc import Iterable
from typing import Any, ClassVar, TypeVar

import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.on_policy_algorithm import OnPolicyAlgorithm
from stable_baselines3.common.policies import (
    ActorCriticCnnPolicy,
    ActorCriticPolicy,
    BasePolicy,
    MultiInputActorCriticPolicy,
)
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule

from sb3_ppo_variants.algorithms.arguments import check_ppo_arguments, sb3_schedule
from sb3_ppo_variants.algorithms.base import LossComponentsMixin
from sb3_ppo_variants.algorithms.policies import (
    PhasicActorCriticCnnPolicy,
    PhasicActorCriticPolicy,
    PhasicMultiInputActorCriticPolicy,
)
from sb3_ppo_variants.common.errors import HyperparameterError
from sb3_ppo_variants.components.protocol import LossSpec
from sb3_ppo_variants.variants import accepts_variant

SelfPPOVariant = TypeVar("SelfPPOVariant", bound="PPOVariant")


class PPOVariant(LossComponentsMixin, OnPolicyAlgorithm):
    """Proximal Policy Optimization (Schulman et al. 2017, arXiv:1707.06347) with a pluggable loss.

    Takes every argument of SB3's ``PPO`` with the same default and meaning; see SB3's
    documentation of ``PPO`` for them. Without ``loss``, it *is* SB3's PPO: the same arguments
    and seed give bit-identical parameters.

    :param loss: The loss as a list of components: :class:`~sb3_ppo_variants.components.LossComponent`
        instances, component names, or plain data (``{"name": "kl_penalty", "target": 0.01}``).
        ``None`` builds SB3's loss from ``clip_range``, ``ent_coef``, ``vf_coef``,
        ``clip_range_vf`` and ``target_kl``. With a list, those arguments are taken from the
        components; giving one that contradicts a component is an error.
    :param variant: A named variant (:data:`~sb3_ppo_variants.variants.VARIANTS`, e.g. ``"spo"`` or
        ``"ppg@recommended"``): the other arguments are read as SB3 ``PPO`` arguments and turned into
        the variant's (``variant_arguments``), and PPG gets its phasic policy from ``"MlpPolicy"``.
        Not with ``loss``.
    :param normalize_advantage: ``True`` or ``"minibatch"`` (SB3): normalise the advantages of
        each minibatch; ``"batch"``: once over the whole rollout (RLlib, Spinning Up), and again
        after each recomputation; ``False``: not at all.
    :param recompute_advantages: Recompute GAE with the current value function before each
        epoch after the first (Andrychowicz et al. 2021, arXiv:2006.05990; SB3 issue #445).
        Costs one value forward pass over the rollout per epoch.
    :param vf_learning_rate: A learning rate (float or schedule) for the parameters only the
        value function uses, in a second optimizer group; shared parameters keep
        ``learning_rate``. ``None``: one learning rate (SB3). SB3 issue #338.
    :param compile: The fast path. ``True`` compiles each minibatch's update with
        ``torch.compile``: the policy's forward pass, every component, their sum, and the gradient,
        which ``torch.func`` takes in the same graph and hands flat to Adam (torch's fused kernel
        over one flat buffer). Where that one graph is not possible (a component that stops early,
        a schedule a component reads, a policy SB3 evaluates with numpy values), the score is
        compiled and autograd's ``backward()`` follows, as a warning says when compiling failed.
        The result equals the default path up to float rounding rather than bit for bit.
        Compiling costs seconds in the first ``train()`` call (on a 2-core CPU: about 9 s the
        first time, about 3 s once torch's on-disk cache in ``TMPDIR`` holds the graph), so it
        pays off over longer runs. A dict is passed to ``torch.compile`` as keyword arguments
        (``{"backend": "aot_eager"}``, ``{"dynamic": True}``); with the default inductor backend,
        ``options`` gets ``"cpp.vec_isa_ok": True`` (trust the CPU flags for the vector
        instruction set), ``"cpp_wrapper": True`` (one C++ library per graph) and
        ``"cpp_cache_precompile_headers": False`` unless the dict sets them. The default backend
        needs a C++ compiler.

    The other parameters are SB3's: ``learning_rate`` (float or schedule), ``n_steps``,
    ``batch_size``, ``n_epochs``, ``gamma``, ``gae_lambda``, ``clip_range`` (float or schedule),
    ``clip_range_vf`` (``None``, float or schedule; depends on the reward scale),
    ``ent_coef`` (float, or here also a schedule), ``vf_coef``,
    ``max_grad_norm``, ``use_sde``, ``sde_sample_freq``, ``rollout_buffer_class``,
    ``rollout_buffer_kwargs``, ``target_kl`` (stop an update's epochs when the KL exceeds
    1.5 x target; SB3 issue #417), ``stats_window_size``, ``tensorboard_log``,
    ``policy_kwargs``, ``verbose``, ``seed``, ``device``.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": ActorCriticPolicy,
        "CnnPolicy": ActorCriticCnnPolicy,
        "MultiInputPolicy": MultiInputActorCriticPolicy,
        "PhasicMlpPolicy": PhasicActorCriticPolicy,
        "PhasicCnnPolicy": PhasicActorCriticCnnPolicy,
        "PhasicMultiInputPolicy": PhasicMultiInputActorCriticPolicy,
    }

    @accepts_variant
    def __init__(
        self,
        policy: str | type[ActorCriticPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        n_steps: int = 2048,
        batch_size: int = 64,
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
        check_ppo_arguments(
            learning_rate=learning_rate,
            n_steps=n_steps,
            batch_size=batch_size,
            n_epochs=n_epochs,
            gamma=gamma,
            gae_lambda=gae_lambda,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            target_kl=target_kl,
            stats_window_size=stats_window_size,
            sde_sample_freq=sde_sample_freq,
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
            gamma=gamma,
            gae_lambda=gae_lambda,
            ent_coef=ent_coef,  # type: ignore[arg-type]
            vf_coef=vf_coef,
            max_grad_norm=max_grad_norm,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            rollout_buffer_class=rollout_buffer_class,
            rollout_buffer_kwargs=rollout_buffer_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            device=device,
            seed=seed,
            _init_setup_model=False,
            supported_action_spaces=(spaces.Box, spaces.Discrete, spaces.MultiDiscrete, spaces.MultiBinary),
        )
        self._check_batch_layout(batch_size, normalize_advantage)
        self.batch_size = batch_size
        self.n_epochs = n_epochs
        self.clip_range = clip_range
        self.clip_range_vf = clip_range_vf
        self.normalize_advantage = normalize_advantage
        self.target_kl = target_kl
        self.recompute_advantages = recompute_advantages
        self.vf_learning_rate = vf_learning_rate
        self.compile = compile
        self._configure_loss(
            loss,
            clip_range=clip_range,
            clip_range_vf=clip_range_vf,
            ent_coef=ent_coef,
            vf_coef=vf_coef,
            target_kl=target_kl,
        )
        if _init_setup_model:
            self._setup_model()

    def _check_batch_layout(self, batch_size: int, normalize_advantage: bool | str) -> None:
        """SB3's checks of the minibatch against the buffer, as errors and the same warning."""
        if normalize_advantage in (True, "minibatch") and batch_size < 2:
            # Normalising one sample divides by a zero spread (SB3 issue #440).
            raise HyperparameterError(
                f"batch_size={batch_size} is invalid with normalize_advantage=True: accepted values are integers > 1."
            )
        if self.env is None:
            return
        buffer_size = self.env.num_envs * self.n_steps
        if buffer_size < 2 and normalize_advantage:
            raise HyperparameterError(
                f"n_steps={self.n_steps} with n_envs={self.env.num_envs} gives a rollout buffer of {buffer_size} "
                "sample: accepted values make n_steps * n_envs > 1 (advantage normalisation needs two samples)."
            )
        if buffer_size % batch_size > 0:
            warnings.warn(
                f"You have specified a mini-batch size of {batch_size},"
                f" but because the `RolloutBuffer` is of size `n_steps * n_envs = {buffer_size}`,"
                f" after every {buffer_size // batch_size} untruncated mini-batches,"
                f" there will be a truncated mini-batch of size {buffer_size % batch_size}\n"
                f"We recommend using a `batch_size` that is a factor of `n_steps * n_envs`.\n"
                f"Info: (n_steps={self.n_steps} and n_envs={self.env.num_envs})",
                stacklevel=3,
            )

    def _setup_model(self) -> None:
        super()._setup_model()
        self.clip_range = sb3_schedule("clip_range", self.clip_range)
        self.clip_range_vf = sb3_schedule("clip_range_vf", self.clip_range_vf)
        self._setup_loss()

    def learn(
        self: SelfPPOVariant,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 1,
        tb_log_name: str = "PPOVariant",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPPOVariant:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )


# The policies PPOVariant accepts by name, importable as SB3's ``stable_baselines3.ppo.MlpPolicy`` is.
MlpPolicy = ActorCriticPolicy
CnnPolicy = ActorCriticCnnPolicy
MultiInputPolicy = MultiInputActorCriticPolicy
