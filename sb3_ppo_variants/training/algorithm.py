"""What every algorithm of this package adds to its SB3 base class: the loss and its lifecycle.

An algorithm mixes in :class:`LossComponentsMixin` ahead of its SB3 base class and says only
how a minibatch is evaluated (:meth:`~LossComponentsMixin._evaluate`) and which of its samples
are real (:meth:`~LossComponentsMixin._sample_mask`). This file configures the loss, binds the
SB3 attributes it mirrors, saves and loads it; :mod:`~sb3_ppo_variants.training.loop` trains.
"""

from __future__ import annotations

import functools
import io
import pathlib
from collections.abc import Iterable
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.save_util import load_from_zip_file
from stable_baselines3.common.type_aliases import Schedule
from stable_baselines3.common.utils import FloatSchedule

from sb3_ppo_variants.common.config import config_env, load_config, load_task
from sb3_ppo_variants.common.errors import HyperparameterError, ModelFileError
from sb3_ppo_variants.common.hooks import TrainingHook
from sb3_ppo_variants.common.validation import value_at
from sb3_ppo_variants.losses.base import (
    LossComponent,
    LossSpec,
    Minibatch,
    build_loss,
    linked_values,
    registered_components,
)
from sb3_ppo_variants.losses.vtrace import VTraceAdvantages
from sb3_ppo_variants.training.advantages import PrepareAdvantages
from sb3_ppo_variants.training.arguments import LINKED_DEFAULTS, default_loss
from sb3_ppo_variants.training.collect import collect_rollouts
from sb3_ppo_variants.training.compiled import CompiledScorer, check_compile_toolchain, compile_options
from sb3_ppo_variants.training.distributions import constant_action_dims, current_distribution, torch_distribution
from sb3_ppo_variants.training.inference import rollout_forward, supports_rollout_forward
from sb3_ppo_variants.training.loop import TrainingLoop
from sb3_ppo_variants.training.optimizer_step import OptimizerStep
from sb3_ppo_variants.training.rollout import values_in_return_units
from sb3_ppo_variants.training.safe_loading import plain_attributes, read_model_file, safe_custom_objects
from sb3_ppo_variants.training.scoring import MinibatchScorer, PolicyEvaluation

# Parameters that only the value function uses (SB3's and sb3-contrib's actor-critic policies).
_VALUE_PARAMETER_PREFIXES = (
    "value_net.",
    "mlp_extractor.value_net.",
    "vf_features_extractor.",
    "lstm_critic.",
    "critic.",
)
# SB3's algorithms keep these as schedules once the model is set up.
_SCHEDULED_ATTRIBUTES = ("clip_range", "clip_range_vf")


class LossComponentsMixin(TrainingLoop):
    """A list of loss components for an SB3 on-policy algorithm.

    The algorithm's SB3 attributes (``clip_range``, ``clip_range_vf``, ``ent_coef``,
    ``vf_coef``, ``target_kl``) stay ordinary attributes, saved and loaded as SB3 does; the
    component fields they mirror (``LossComponent.linked``) are bound to them at the start of
    each ``train()`` call, so there is one source of truth and callbacks work as with SB3.
    """

    # This package's options beyond SB3's PPO; class defaults let models saved without them load.
    recompute_advantages: bool = False
    vf_learning_rate: float | Schedule | None = None
    compile: bool | dict[str, Any] = False
    variant: str | None = None
    """The named variant the model was built as (``variant="spo"``), ``None`` if none."""
    _compiled: CompiledScorer | None = None

    # --- the loss -----------------------------------------------------------------------

    @property
    def loss(self) -> list[LossComponent]:
        """The loss components. Assigning a list (instances, names or plain data) validates it as
        the constructor does; the SB3 attributes it mirrors follow the new components."""
        return self._loss

    @loss.setter
    def loss(self, specs: Iterable[LossSpec]) -> None:
        components = build_loss(specs)
        self._check_loss(components)
        linked = linked_values(components)
        set_up = getattr(self, "policy", None) is not None
        for attr, default in LINKED_DEFAULTS.items():
            value = linked.get(attr, default)
            if set_up and attr in _SCHEDULED_ATTRIBUTES and value is not None:
                value = FloatSchedule(value)
            setattr(self, attr, value)
        self._loss = components
        self._compiled = None  # the compiled graph reads the components it was built with
        if set_up:
            self._bind_linked_hyperparameters()

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
        See :mod:`sb3_ppo_variants.common.config` for the format.
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
            self._loss = build_loss(_migrated(config, version))
        self._check_loss(self._loss)
        self._old_policy: BasePolicy | None = None
        self._compiled = None
        self._bind_linked_hyperparameters()
        if self.vf_learning_rate is not None:
            self._split_value_parameters()
        if self.compile:
            check_compile_toolchain(self.compile, self.device)
        for group in self.policy.optimizer.param_groups:
            # For the steps torch's own optimizer takes (other optimizers, FlatAdam's fallbacks):
            # multi-tensor kernels, one call per operation for all parameters.
            if group.get("foreach", False) is None:
                group["foreach"] = True

    def _bind_linked_hyperparameters(self) -> None:
        for component in self.loss:
            for field, attr in component.linked.items():
                setattr(component, field, getattr(self, attr))

    def loss_config(self) -> list[dict[str, Any]]:
        """The loss as plain data; linked fields are left out (they live on the algorithm)."""
        return [
            {key: value for key, value in component.config().items() if key not in component.linked}
            for component in self.loss
        ]

    @property
    def value_transform(self) -> TrainingHook | None:
        """The component that normalises value predictions, if any (see ``TrainingHook``)."""
        return next((component for component in self.loss if component.transforms_values), None)

    # --- learning rates -------------------------------------------------------------------

    def _split_value_parameters(self) -> None:
        """Rebuild the optimizer with the value function's own parameters in a second group.

        Parameters the actor shares (a shared features extractor, a shared LSTM) stay with the
        policy's learning rate. SB3 issue #338.
        """
        policy = self.policy
        value = [p for name, p in policy.named_parameters() if name.startswith(_VALUE_PARAMETER_PREFIXES)]
        if not value:
            raise HyperparameterError(
                f"vf_learning_rate={self.vf_learning_rate!r} is invalid for {type(policy).__name__}, which has no "
                "parameters of its own for the value function: accepted values are None."
            )
        value_ids = {id(p) for p in value}
        shared = [p for p in policy.parameters() if id(p) not in value_ids]
        policy.optimizer = policy.optimizer_class(  # type: ignore[call-arg]
            [{"params": shared}, {"params": value, "lr": value_at(self.vf_learning_rate, 1.0)}],
            lr=self.lr_schedule(1),  # type: ignore[attr-defined]
            **policy.optimizer_kwargs,
        )

    def _update_learning_rate(self, optimizers: Any) -> None:
        """SB3's schedule, the value function's own schedule, then each hook's ``learning_rate``."""
        super()._update_learning_rate(optimizers)  # type: ignore[misc]
        groups = self.policy.optimizer.param_groups
        if self.vf_learning_rate is not None:
            groups[1]["lr"] = value_at(self.vf_learning_rate, self._current_progress_remaining)  # type: ignore[attr-defined]
            self.logger.record("train/vf_learning_rate", groups[1]["lr"])
        scheduled = groups[0]["lr"]
        for group in groups:
            for component in self.loss:
                group["lr"] = component.learning_rate(group["lr"])
        if groups[0]["lr"] != scheduled:
            self.logger.record("train/learning_rate", groups[0]["lr"])

    # --- saving and loading ---------------------------------------------------------------

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_loss", "_old_policy", "_compiled"]  # type: ignore[misc]

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """Save as SB3 does; the loss goes in as plain data, its tensor state with the parameters,
        and what SB3 pickles is also described as plain data, for ``load(path, safe=True)``."""
        self.__dict__["loss_config"] = self.loss_config()
        self.__dict__["loss_format_version"] = LOSS_FORMAT_VERSION
        self.__dict__["plain_attributes"] = plain_attributes(self, exclude)
        try:
            super().save(path, exclude=exclude, include=include)  # type: ignore[misc]
        finally:
            for key in ("loss_config", "loss_format_version", "plain_attributes"):
                del self.__dict__[key]

    def get_parameters(self) -> dict[str, dict]:
        """SB3's parameters, and ``"loss_state"``: the components' tensor state, if any."""
        parameters = super().get_parameters()  # type: ignore[misc]
        state = {
            f"{index}.{key}": tensor
            for index, component in enumerate(self.loss)
            for key, tensor in component.state_dict().items()
        }
        if state:
            parameters["loss_state"] = state
        return parameters

    def set_parameters(
        self, load_path_or_dict: str | pathlib.Path | dict[str, Any], exact_match: bool = True, device: Any = "auto"
    ) -> None:
        """SB3's ``set_parameters``; ``"loss_state"`` goes back into the components."""
        if isinstance(load_path_or_dict, dict):
            parameters = dict(load_path_or_dict)
        else:
            _, parameters, _ = load_from_zip_file(load_path_or_dict, device=device, load_data=False)
        state = parameters.pop("loss_state", None)
        super().set_parameters(parameters, exact_match=exact_match, device=device)  # type: ignore[misc]
        for index, component in enumerate(self.loss):
            prefix = f"{index}."
            own = {key[len(prefix) :]: t for key, t in (state or {}).items() if key.startswith(prefix)}
            if own:
                component.load_state_dict(own)

    @classmethod
    def load(  # type: ignore[override]
        cls,
        path: str | pathlib.Path | io.BufferedIOBase,
        env: Any = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        loss: Iterable[LossSpec] | None = None,
        safe: bool = True,
        allow: Iterable[str] = (),
        **kwargs: Any,
    ) -> Any:
        """SB3's ``load``; with ``loss``, the model goes on with that loss instead of the saved one.

        This also loads SB3's own ``PPO`` (``MaskablePPO``, ``RecurrentPPO``) zips. The new loss is
        validated as the constructor validates it (before anything is loaded), and the SB3
        attributes it mirrors follow it. ``custom_objects={"loss": ...}`` means the same.

        :param safe: Run no code the file carries (the default): this package's files load from
            their plain-data descriptions, SB3's own pickles through an allow-list unpickler (spaces,
            schedules, policy classes; see :mod:`sb3_ppo_variants.training.safe_loading`), and
            nothing outside the trusted packages and ``allow`` is imported. A file that needs code
            to load is refused with a ``ModelFileError`` naming it and the ways forward. ``False``
            loads as SB3 does, unpickling everything: only for files you trust.
        :param allow: With ``safe=True``, modules (or packages) whose classes and components the
            file may import: a custom policy's module, a custom component's.
        """
        allow = tuple(allow)
        if allow and not safe:
            raise HyperparameterError(f"allow={list(allow)!r} needs safe=True: accepted values are allow=() otherwise.")
        custom_objects = dict(custom_objects or {})
        if "loss" in custom_objects:
            if loss is not None:
                raise HyperparameterError(
                    "loss= and custom_objects={'loss': ...} are both given: accepted values are one of them."
                )
            loss = custom_objects.pop("loss")
        components = None if loss is None else build_loss(loss)
        if safe:
            content, shown = read_model_file(path)
            custom_objects = safe_custom_objects(content, shown, allow, custom_objects, registered_components())
            path = io.BytesIO(content)  # what was checked is what loads
        model = super().load(  # type: ignore[misc]
            path,
            env=env,
            device=device,
            custom_objects=custom_objects,
            print_system_info=print_system_info,
            force_reset=force_reset,
            **kwargs,
        )
        if components is not None:
            model.loss = components
        return model

    # --- what the loop asks for -----------------------------------------------------------

    def collect_rollouts(
        self, env: Any, callback: Any, rollout_buffer: Any, n_rollout_steps: int, *arguments: Any
    ) -> bool:
        """SB3's rollout, with value predictions in return units (see ``TrainingHook``), and the
        policy's forward in fewer operations where :mod:`~sb3_ppo_variants.training.inference`
        reproduces it. It stays eager under ``compile=True``: compiled, the networks of a rollout
        step took as long as eager ones (``benchmarks/rollout_profile.py``)."""
        with values_in_return_units(self.policy, self.value_transform):
            if not supports_rollout_forward(self.policy):
                return super().collect_rollouts(env, callback, rollout_buffer, n_rollout_steps, *arguments)  # type: ignore[misc]
            forward = rollout_forward(self.policy)  # type: ignore[arg-type]
            return collect_rollouts(self, env, callback, rollout_buffer, n_rollout_steps, forward, *arguments)

    def _training_hooks(self) -> list[TrainingHook]:
        """The loop's own hooks, then the components (each is a hook too)."""
        advantages = PrepareAdvantages(
            recompute=self.recompute_advantages,
            normalize_batch=self.normalize_advantage == "batch",
            last_obs=self._last_obs,
            last_episode_starts=self._last_episode_starts,
            chunk_size=self.batch_size,
            device=self.device,
            values_in_return_units=functools.partial(values_in_return_units, self.policy, self.value_transform),
            vtrace=next((c for c in self.loss if isinstance(c, VTraceAdvantages)), None),
            score=self._values_and_log_ratio,
        )
        return [advantages, *self.loss]

    def _values_and_log_ratio(self, rollout_data: Any) -> tuple[th.Tensor, th.Tensor]:
        batch = self._minibatch_scorer().minibatch(rollout_data, None, 1.0)
        return batch.values, batch.log_ratio

    def _scorer(
        self,
        optimizer: OptimizerStep,
        old_policy: BasePolicy | None,
        progress_remaining: float,
        schedules: list[dict[str, Any]],
        keep_batch: bool,
    ) -> Any:
        """This call's ``score(rollout_data) -> ScoredMinibatch``: eager, or compiled with ``compile``.

        ``schedules``: each component's schedule fields, which hold their values this call.
        """
        scorer = self._minibatch_scorer()
        if not self.compile:
            return functools.partial(
                scorer.score,
                old_policy=old_policy,
                progress_remaining=progress_remaining,
                components=self.loss,
                keep_batch=keep_batch,
            )
        if self._compiled is None:
            self._compiled = CompiledScorer(scorer, compile_options(self.compile))
        graph_components = self._compiled.graph_components(self.loss, schedules, self.device)
        return self._compiled.for_call(optimizer, old_policy, progress_remaining, graph_components, keep_batch)

    def _minibatch_scorer(self) -> MinibatchScorer:
        return MinibatchScorer(
            policy=self.policy,
            evaluate=self._evaluate,
            distribution=self._distribution,
            sample_mask=self._sample_mask,
            discrete_actions=isinstance(self.action_space, spaces.Discrete),
            normalize_minibatch_advantages=self.normalize_advantage in (True, "minibatch"),
            value_transform=self.value_transform,
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


LOSS_FORMAT_VERSION = 1
"""The version of what this package adds to a saved model: ``loss_config`` (the components as
plain data) and ``loss_state`` (their tensors, with the parameters). Files from before versions
were written carry none and are version 1's format. A change of either layout raises it, and
:func:`_migrated` learns to read the older one."""


def _migrated(config: Any, version: Any) -> Any:
    """A saved ``loss_config`` in this version's format, or a clear error for a newer file."""
    version = 1 if version is None else version
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(
            f"the saved model's loss_format_version={version!r} is invalid: accepted values are integers from 1 "
            f"to {LOSS_FORMAT_VERSION}."
        )
    if version > LOSS_FORMAT_VERSION:
        raise ModelFileError(
            f"the saved model was written with loss format version {version}, newer than this version of "
            f"sb3_ppo_variants reads (up to {LOSS_FORMAT_VERSION}): upgrade sb3_ppo_variants to load it."
        )
    return config  # version 1 is the only format so far
