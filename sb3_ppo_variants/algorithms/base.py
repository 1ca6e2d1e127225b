"""What every algorithm of this package adds to its SB3 base class: the loss and its lifecycle.

An algorithm mixes in :class:`LossComponentsMixin` ahead of its SB3 base class and says only
how a minibatch is evaluated (:meth:`~LossComponentsMixin._evaluate`) and which of its samples
are real (:meth:`~LossComponentsMixin._sample_mask`). This file configures the loss, binds the
SB3 attributes it mirrors, saves and loads it; :mod:`~sb3_ppo_variants.update.trainer` trains.
"""

from __future__ import annotations

import functools
import math
import pathlib
from collections.abc import Iterable
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.utils import explained_variance

from sb3_ppo_variants.algorithms.arguments import sb3_schedule
from sb3_ppo_variants.algorithms.learning_rates import call_learning_rates, split_value_parameters
from sb3_ppo_variants.common.distributions import constant_action_dims, current_distribution, torch_distribution
from sb3_ppo_variants.common.errors import HyperparameterError
from sb3_ppo_variants.components.hooks import TrainingContext, TrainingHook, value_transform_of
from sb3_ppo_variants.components.protocol import (
    LossComponent,
    LossSpec,
    Minibatch,
    build_loss,
    linked_values,
)
from sb3_ppo_variants.persistence.config import config_env, load_config, load_task
from sb3_ppo_variants.persistence.model_files import LossFilesMixin, migrated_loss_config
from sb3_ppo_variants.rollout.collect import collect_rollouts
from sb3_ppo_variants.rollout.inference import rollout_forward, supports_rollout_forward
from sb3_ppo_variants.rollout.value_units import values_in_return_units
from sb3_ppo_variants.rollout.vec_envs import VecEnvRoute, vec_env_route
from sb3_ppo_variants.update.advantages import NormalizeBatchAdvantages, RecomputeAdvantages, evaluate_rollout
from sb3_ppo_variants.update.compiled import CompiledScorer, check_compile_toolchain, compile_options
from sb3_ppo_variants.update.evaluation import direct_evaluation
from sb3_ppo_variants.update.hyperparameters import BoundLoss, bind_loss
from sb3_ppo_variants.update.optimizer_step import OptimizerStep
from sb3_ppo_variants.update.scoring import MinibatchScorer, PolicyEvaluation
from sb3_ppo_variants.update.trainer import (
    CallResult,
    DivergenceGuard,
    Trainer,
    distribution_checks_off,
    reduce_to_floats,
)
from sb3_ppo_variants.variants import LINKED_DEFAULTS, default_loss


class LossComponentsMixin(LossFilesMixin):
    """A list of loss components for an SB3 on-policy algorithm.

    The algorithm's SB3 attributes (``clip_range``, ``clip_range_vf``, ``ent_coef``,
    ``vf_coef``, ``target_kl``) stay ordinary attributes, saved and loaded as SB3 does, and are
    the one owner of the component fields they mirror (``LossComponent.linked``): each
    ``train()`` call reads them (see :mod:`~sb3_ppo_variants.update.hyperparameters`), so
    callbacks that set them work as with SB3.
    """

    # This package's options beyond SB3's PPO; class defaults let models saved without them load.
    recompute_advantages: bool = False
    vf_learning_rate: float | Schedule | None = None
    compile: bool | dict[str, Any] = False
    variant: str | None = None
    """The named variant the model was built as (``variant="spo"``), ``None`` if none."""
    _compiled: CompiledScorer | None = None
    _loss: list[LossComponent]

    # --- the loss -----------------------------------------------------------------------

    @property
    def loss(self) -> list[LossComponent]:
        """The loss components. Assigning a list (instances, names or plain data) validates it as
        the constructor does; the SB3 attributes it mirrors follow the new components.

        A linked field reads as the algorithm's attribute it mirrors, the one owner of its value
        (``model.loss[0].clip_range`` is ``model.clip_range``, which a callback may set)."""
        for component in self._loss:
            for field, attr in component.linked.items():
                if hasattr(self, attr):
                    object.__setattr__(component, field, getattr(self, attr))  # frozen dataclasses too
        return self._loss

    @loss.setter
    def loss(self, specs: Iterable[LossSpec]) -> None:
        components = build_loss(specs)
        self._check_loss(components)
        linked = linked_values(components)
        set_up = getattr(self, "policy", None) is not None
        for attr, default in LINKED_DEFAULTS.items():
            value = linked.get(attr, default)
            setattr(self, attr, sb3_schedule(attr, value) if set_up else value)
        self._loss = components
        self._compiled = None  # the compiled graph reads the components it was built with

    def _check_loss(self, components: list[LossComponent]) -> None:
        """Refuse components this algorithm or its action space cannot serve (a clear error at
        construction, or when the loss is replaced)."""
        if getattr(self, "policy", None) is not None:
            for component in components:
                component.check_model(self)

    @classmethod
    def from_config(cls, path: str | pathlib.Path, env: Any = None, allow: Iterable[str] = (), **overrides: Any) -> Any:
        """A new model from a configuration file (``python -m tuning report`` writes one), on the
        environment it was tuned on.

        ``env``: ``None`` builds the file's environment as its ``task`` says (``n_envs`` copies, in
        ``VecNormalize`` if it was normalised); an environment id builds that one the same way; an
        environment object must have the file's number of environments and normalisation, or it is
        refused with the difference. A file without ``task`` takes ``env`` as it is.
        ``overrides`` replace the file's keyword arguments (``seed``, ``device``, ``verbose``).
        A file is code's input, not code: it may name classes of the trusted packages (torch,
        gymnasium, SB3, sb3-contrib, this package) only, and modules in ``allow`` (a custom
        activation, a custom component's module, the task's ``gym_packages``); any other is refused.
        See :mod:`sb3_ppo_variants.persistence.config` for the format.
        """
        policy, arguments = load_config(path, allow)
        arguments = {**arguments, **overrides}
        gamma = arguments.get("gamma", 0.99)
        env = config_env(load_task(path), env, seed=arguments.get("seed"), gamma=gamma, allow=allow)
        return cls(policy, env, **arguments)

    def _configure_loss(self, loss: Iterable[LossSpec] | None, **ppo_arguments: Any) -> None:
        """Build the loss at construction; with an explicit ``loss``, reject PPO arguments it contradicts."""
        if loss is None:
            self._loss = default_loss()
            return
        components = build_loss(loss)
        linked = {attr: (c, field) for c in components for field, attr in c.linked.items()}
        for attr, value in ppo_arguments.items():
            default = LINKED_DEFAULTS[attr]
            given = value != default
            if attr in linked:
                component, field = linked[attr]
                if given and value != getattr(component, field):
                    raise HyperparameterError(
                        f"{attr}={value!r} contradicts loss component {component.name!r} "
                        f"({field}={getattr(component, field)!r}): accepted values are {attr}={default!r} "
                        f"(the component decides) or the component's own value."
                    )
            elif given:
                raise HyperparameterError(
                    f"{attr}={value!r} has no effect because no component in loss= uses it: accepted values "
                    f"are {attr}={default!r}, or add the component that takes it to loss=."
                )
        self.loss = components

    def _setup_loss(self) -> None:
        """Finish the loss in ``_setup_model``: rebuild it from a loaded model's saved config."""
        config = self.__dict__.pop("loss_config", None)
        version = self.__dict__.pop("loss_format_version", None)
        self.__dict__.pop("plain_attributes", None)  # read by a safe load, before this
        if config is not None:
            self._loss = build_loss(migrated_loss_config(config, version))
        self._check_loss(self._loss)
        self._old_policy: BasePolicy | None = None
        self._compiled = None
        if self.vf_learning_rate is not None:
            self._split_value_parameters()
        if self.compile:
            check_compile_toolchain(self.compile, self.device)
        for group in self.policy.optimizer.param_groups:
            # For the steps torch's own optimizer takes (other optimizers, FlatAdam's fallbacks):
            # multi-tensor kernels, one call per operation for all parameters.
            if group.get("foreach", False) is None:
                group["foreach"] = True

    @property
    def value_transform(self) -> TrainingHook | None:
        """The component that normalises value predictions, if any (see ``TrainingHook``)."""
        return value_transform_of(self.loss)

    # --- learning rates (see learning_rates.py) ------------------------------------------

    def _split_value_parameters(self) -> None:
        split_value_parameters(self.policy, self.vf_learning_rate, self.lr_schedule(1))  # type: ignore[attr-defined]

    def _update_learning_rate(self, optimizers: Any) -> None:
        """SB3's schedule, the value function's own schedule, then each hook's ``learning_rate``."""
        super()._update_learning_rate(optimizers)  # type: ignore[misc]
        groups = self.policy.optimizer.param_groups
        progress = self._current_progress_remaining  # type: ignore[attr-defined]
        for key, value in call_learning_rates(groups, self.vf_learning_rate, progress, self.loss).items():
            self.logger.record(f"train/{key}", value)

    # --- what the loop asks for -----------------------------------------------------------

    def collect_rollouts(
        self, env: Any, callback: Any, rollout_buffer: Any, n_rollout_steps: int, *arguments: Any
    ) -> bool:
        """SB3's rollout, with value predictions in return units (see ``TrainingHook``), the
        policy's forward in fewer operations where :mod:`~sb3_ppo_variants.rollout.inference`
        reproduces it, and the VecEnv stepped by :mod:`~sb3_ppo_variants.rollout.vec_envs`' exact
        route where it has one (:attr:`rollout_env_route`). It stays eager under ``compile=True``:
        compiled, the networks of a rollout step took longer than eager ones
        (``benchmarks/rollout_profile.py``)."""
        route = self.rollout_env_route
        if not route.fast and self.verbose >= 1 and route.stack != self.__dict__.get("_announced_env_stack"):
            self._announced_env_stack = route.stack
            print(
                f"rollout: {route.stack} is stepped through its own step() "
                "(the fast route covers DummyVecEnv, alone or under VecNormalize, with one observation array)"
            )
        with values_in_return_units(self.policy, self.value_transform):
            if not supports_rollout_forward(self.policy):
                return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps, *arguments)  # type: ignore[misc]
            forward = rollout_forward(self.policy)  # type: ignore[arg-type]
            return collect_rollouts(
                self, env, callback, rollout_buffer, n_rollout_steps, forward, *arguments, env_step=route.step
            )

    @property
    def rollout_env_route(self) -> VecEnvRoute:
        """How a rollout steps ``self.env``: :mod:`~sb3_ppo_variants.rollout.vec_envs`' exact fast
        route through ``DummyVecEnv`` and ``VecNormalize``, or the VecEnv's own ``step``."""
        route = vec_env_route(self.env)  # type: ignore[attr-defined]
        if route.fast and not supports_rollout_forward(self.policy):  # SB3's own loop steps the env itself
            return VecEnvRoute(self.env.step, False, route.stack)  # type: ignore[attr-defined]
        return route

    def train(self) -> None:
        """Update the policy on the rollout buffer: ``n_epochs`` passes of minibatch steps
        (:class:`~sb3_ppo_variants.update.trainer.Trainer`), on the loss bound for this call."""
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        progress = self._current_progress_remaining
        loss = bind_loss(self.loss, {attr: getattr(self, attr) for attr in LINKED_DEFAULTS}, progress)
        old_policy = self._pre_update_policy()
        guard = DivergenceGuard(loss.components, self.max_grad_norm, self._n_updates)
        parameters = list(self.policy.parameters())
        optimizer_step = OptimizerStep.for_optimizer(self.policy.optimizer, parameters, fused=bool(self.compile))
        try:
            with distribution_checks_off(), optimizer_step as optimizer:
                stoppers = [component for component in loss.components if component.stops_early]
                trainer = Trainer(
                    rollout_buffer=self.rollout_buffer,
                    n_epochs=self.n_epochs,
                    batch_size=self.batch_size,
                    device=self.device,
                    make_score=functools.partial(
                        self._scorer, optimizer, old_policy, progress, loss, keep_batch=bool(stoppers)
                    ),
                    optimizer=optimizer,
                    guard=guard,
                    hooks=self._training_hooks(loss.components),
                    stoppers=stoppers,
                    verbose=self.verbose,
                )
                result = trainer.run(self._training_context(progress, loss.components, guard))
            means = reduce_to_floats(result.stats)
            for component in loss.components:
                means.update(component.after_train(means))
        finally:
            loss.commit()
            self._n_updates = guard.n_updates
        self._record_train_stats(means, result)

    def _record_train_stats(self, means: dict[str, float], result: CallResult) -> None:
        for key, value in {**means, **result.phase_stats}.items():
            self.logger.record(f"train/{key}", value)
        if result.loss is not None:
            self.logger.record("train/loss", result.loss.item())
        self.logger.record(
            "train/explained_variance",
            explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten()),
        )
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    def _training_context(
        self, progress_remaining: float, components: list[LossComponent], guard: DivergenceGuard
    ) -> TrainingContext:
        rollout_size = self.rollout_buffer.buffer_size * self.rollout_buffer.n_envs
        minibatch_size = self.batch_size or rollout_size  # MaskablePPO's None: the whole rollout
        transform = value_transform_of(components)
        return TrainingContext(
            policy=self.policy,
            optimizer=self.policy.optimizer,
            rollout_buffer=self.rollout_buffer,
            progress_remaining=progress_remaining,
            step=functools.partial(guard.gradient_step, self.policy, self.policy.optimizer),
            policy_copy=self.policy_copy,
            value_transform=transform,
            updates_per_epoch=math.ceil(rollout_size / minibatch_size),
            n_epochs=self.n_epochs,
            minibatch_size=minibatch_size,
            evaluate_rollout=functools.partial(
                evaluate_rollout,
                self.rollout_buffer,
                minibatch_size,
                self._values_and_log_ratio,
                self.policy,
                self._last_obs,
                self._last_episode_starts,
                functools.partial(values_in_return_units, self.policy, transform),
            ),
        )

    def _training_hooks(self, components: list[LossComponent]) -> list[TrainingHook]:
        """The algorithm's advantage recomputation, the components (each is a hook too), then the
        batch normalisation of advantages, which follows whatever recomputed them."""
        recomputed_by_component = any(component.recomputes_advantages for component in components)
        return [
            RecomputeAdvantages(self.recompute_advantages and not recomputed_by_component),
            *components,
            NormalizeBatchAdvantages(
                self.normalize_advantage == "batch", every_epoch=self.recompute_advantages or recomputed_by_component
            ),
        ]

    def _values_and_log_ratio(self, rollout_data: Any) -> tuple[th.Tensor, th.Tensor]:
        batch = self._minibatch_scorer().minibatch(rollout_data, None, 1.0)
        return batch.values, batch.log_ratio

    def _scorer(
        self,
        optimizer: OptimizerStep,
        old_policy: BasePolicy | None,
        progress_remaining: float,
        loss: BoundLoss,
        keep_batch: bool,
    ) -> Any:
        """This call's ``score(rollout_data) -> ScoredMinibatch``: eager, or compiled with ``compile``."""
        scorer = self._minibatch_scorer(value_transform_of(loss.components))
        if not self.compile:
            return functools.partial(
                scorer.score,
                old_policy=old_policy,
                progress_remaining=progress_remaining,
                components=loss.components,
                keep_batch=keep_batch,
            )
        if self._compiled is None:
            self._compiled = CompiledScorer(scorer, compile_options(self.compile))
        graph_components = self._compiled.graph_components(loss.components, loss.schedules, self.device)
        return self._compiled.for_call(
            optimizer, old_policy, progress_remaining, graph_components, keep_batch, self.max_grad_norm
        )

    def _minibatch_scorer(self, value_transform: TrainingHook | None = None) -> MinibatchScorer:
        return MinibatchScorer(
            policy=self.policy,
            # The eager path evaluates SB3's own policies directly; the compiled one traces _evaluate.
            evaluate=self._evaluate
            if self.compile or type(self)._evaluate is not LossComponentsMixin._evaluate
            else direct_evaluation(self.policy, self._evaluate),
            distribution=self._distribution,
            sample_mask=self._sample_mask,
            discrete_actions=isinstance(self.action_space, spaces.Discrete),
            normalize_minibatch_advantages=self.normalize_advantage in (True, "minibatch"),
            value_transform=value_transform or self.value_transform,
        )

    def evaluate_minibatch(self, rollout_data: Any, progress_remaining: float = 1.0) -> Minibatch:
        """A minibatch of ``rollout_buffer.get()`` as ``train()`` hands it to the components, with the
        policy as it is now (and its pre-update copy, if a component needs one): for looking at what a
        component computes on a real rollout."""
        return self._minibatch_scorer().minibatch(rollout_data, self._pre_update_policy(), progress_remaining)

    @property
    def compiled_path(self) -> str | None:
        """Under ``compile=True``, how the last update was scored: ``"one graph"`` (the gradient
        came from the compiled graph) or ``"backward"`` (autograd's); ``None`` before the first."""
        return None if self._compiled is None else self._compiled.path

    def policy_copy(self) -> BasePolicy:
        """A frozen policy built like this one, with its weights now: for components that keep
        another policy (the pre-update policy, an average of the weights)."""
        # Built like the policy itself (a deepcopy fails on gSDE's non-leaf noise tensors);
        # forking the RNG keeps its weight initialisation from shifting the training stream.
        with th.random.fork_rng(devices=[]):
            sde = {"use_sde": True} if self.use_sde else {}  # masked policies take no use_sde
            copy = self.policy_class(  # type: ignore[operator]
                self.observation_space, self.action_space, self.lr_schedule, **sde, **self.policy_kwargs
            ).to(self.device)
        copy.requires_grad_(False)
        copy.set_training_mode(False)  # as the rollout's log-probabilities were computed
        constant_action_dims(copy)
        copy.load_state_dict(self.policy.state_dict())
        return copy

    def _pre_update_policy(self) -> BasePolicy | None:
        """A frozen copy of the policy as it is now, if a component needs the exact KL."""
        if not any(component.needs_old_distribution for component in self.loss):
            return None
        if self._old_policy is None:
            self._old_policy = self.policy_copy()
        self._old_policy.load_state_dict(self.policy.state_dict())
        return self._old_policy

    # --- what each algorithm provides -----------------------------------------------------

    @staticmethod
    def _evaluate(policy: BasePolicy, rollout_data: Any, actions: th.Tensor) -> PolicyEvaluation:
        """The policy on a minibatch: values, log-probabilities, entropy, distribution."""
        values, log_prob, entropy = policy.evaluate_actions(rollout_data.observations, actions)  # type: ignore[operator]
        return PolicyEvaluation(values.flatten(), log_prob, entropy, current_distribution(policy))

    @staticmethod
    def _distribution(policy: BasePolicy, rollout_data: Any, actions: th.Tensor) -> Any:
        """The torch distribution of ``policy`` on a minibatch: the actor's forward pass only."""
        return torch_distribution(policy.get_distribution(rollout_data.observations))  # type: ignore[attr-defined]

    @staticmethod
    def _sample_mask(rollout_data: Any) -> th.Tensor | None:
        """Which samples are real (``None``: all of them)."""
        return None
