"""The ``train()`` loop and loss configuration shared by every algorithm of this package.

An algorithm mixes in :class:`LossComponentsMixin` ahead of its SB3 base class and says only
how a minibatch is evaluated (:meth:`~LossComponentsMixin._evaluate`) and which of its samples
are real (:meth:`~LossComponentsMixin._sample_mask`); the loop, the statistics, the
divergence guard and saving the loss are the same for all of them.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import os
import pathlib
import shutil
import types
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import DictRolloutBuffer, RolloutBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import DictRolloutBufferSamples, RolloutBufferSamples, Schedule
from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule, explained_variance, obs_as_tensor

from sb3_ppo_variants.common.config import load_config
from sb3_ppo_variants.common.errors import HyperparameterError, TrainingDivergedError
from sb3_ppo_variants.common.optimizer_step import FlatAdam, OptimizerStep
from sb3_ppo_variants.common.validation import check_choice, check_int, check_number, value_at
from sb3_ppo_variants.losses.base import (
    LOG_RATIO_LIMIT,
    LossComponent,
    LossSpec,
    LossTerm,
    Minibatch,
    Stat,
    build_loss,
    field_values,
)
from sb3_ppo_variants.losses.entropy import EntropyBonus
from sb3_ppo_variants.losses.kl import KLEarlyStop, kl_per_sample
from sb3_ppo_variants.losses.surrogate import ClippedSurrogate
from sb3_ppo_variants.losses.value import ValueLoss

# What scoring a minibatch returns: (batch, terms, loss, approx_kl, flat gradients or None).
Scored = tuple[Minibatch | None, list[LossTerm], th.Tensor, th.Tensor, tuple[th.Tensor, ...] | None]


def default_loss() -> list[LossComponent]:
    """SB3's PPO loss. The order is SB3's sum order, which keeps the result bit-identical."""
    return [ClippedSurrogate(), EntropyBonus(), ValueLoss(), KLEarlyStop()]


# How each PPO argument is checked: keyword arguments of check_number, or ("int", low).
_PPO_ARGUMENT_RULES: dict[str, Any] = {
    "learning_rate": {"schedule": True},
    "clip_range": {"low_inclusive": False, "schedule": True},
    "clip_range_vf": {"low_inclusive": False, "schedule": True, "optional": True},
    "ent_coef": {"schedule": True},
    "vf_coef": {},
    "max_grad_norm": {"low_inclusive": False},
    "target_kl": {"low_inclusive": False, "optional": True},
    "gamma": {"high": 1.0},
    "gae_lambda": {"high": 1.0},
    "n_steps": ("int", 1),
    "batch_size": ("int", 1),
    "n_epochs": ("int", 1),
    "stats_window_size": ("int", 1),
    "sde_sample_freq": ("int", -1),
    "normalize_advantage": ("choice", (True, False, "minibatch", "batch")),
    "recompute_advantages": ("choice", (True, False)),
    "vf_learning_rate": {"schedule": True, "optional": True},
    "compile": ("compile",),
}

# Parameters that only the value function uses (SB3's and sb3-contrib's actor-critic policies).
_VALUE_PARAMETER_PREFIXES = (
    "value_net.",
    "mlp_extractor.value_net.",
    "vf_features_extractor.",
    "lstm_critic.",
    "critic.",
)


def check_ppo_arguments(**arguments: Any) -> None:
    """Validate the PPO arguments this package shares with SB3, naming the bad one."""
    for name, value in arguments.items():
        rule = _PPO_ARGUMENT_RULES[name]
        if rule == ("compile",):
            if not (isinstance(value, bool) or (isinstance(value, dict) and all(isinstance(k, str) for k in value))):
                raise HyperparameterError(
                    f"compile={value!r} is invalid: accepted values are True, False, or a dict of "
                    "torch.compile keyword arguments (for example {'backend': 'aot_eager'})."
                )
        elif isinstance(rule, tuple) and rule[0] == "choice":
            check_choice(name, value, rule[1])
        elif isinstance(rule, tuple):
            check_int(name, value, low=rule[1])
        else:
            check_number(name, value, **rule)


def _mean(values: list[Stat]) -> Stat:
    if all(isinstance(v, float | int) for v in values):
        # A setting logged per minibatch (a clip range) is reported as itself, not re-averaged.
        return values[0] if min(values) == max(values) else float(np.mean(values))
    return th.stack(values).to(th.float64).mean()  # type: ignore[arg-type]


class LossComponentsMixin:
    """``train()`` over a list of loss components, for SB3 on-policy algorithms.

    The algorithm's SB3 attributes (``clip_range``, ``clip_range_vf``, ``ent_coef``,
    ``vf_coef``, ``target_kl``) stay ordinary attributes, saved and loaded as SB3 does; the
    component fields they mirror (``LossComponent.linked``) are bound to them at the start of
    each ``train()`` call, so there is one source of truth and callbacks work as with SB3.
    """

    # What the SB3 PPO arguments that configure the loss default to.
    LINKED_DEFAULTS: ClassVar[dict[str, Any]] = {
        "clip_range": 0.2,
        "clip_range_vf": None,
        "ent_coef": 0.0,
        "vf_coef": 0.5,
        "target_kl": None,
    }

    loss: list[LossComponent]
    # This package's options beyond SB3's PPO; class defaults let models saved without them load.
    recompute_advantages: bool = False
    vf_learning_rate: float | Schedule | None = None
    compile: bool | dict[str, Any] = False
    _compiled_score: _CompiledScore | None = None

    # --- configuration ------------------------------------------------------------------

    @classmethod
    def from_config(cls, path: str | pathlib.Path, env: Any, **overrides: Any) -> Any:
        """A new model from a configuration file (``python -m tuning report`` writes one).

        ``overrides`` replace the file's keyword arguments (``seed``, ``device``, ``verbose``).
        See :mod:`sb3_ppo_variants.common.config` for the format.
        """
        policy, arguments = load_config(path)
        return cls(policy, env, **{**arguments, **overrides})

    def _configure_loss(self, loss: Iterable[LossSpec] | None, **ppo_arguments: Any) -> None:
        """Build ``self.loss``; with an explicit ``loss``, reject PPO arguments it contradicts."""
        if loss is None:
            self.loss = default_loss()
            return
        components = build_loss(loss)
        linked = {attr: (c, field) for c in components for field, attr in c.linked.items()}
        for attr, value in ppo_arguments.items():
            default = self.LINKED_DEFAULTS[attr]
            given = value != default
            if attr in linked:
                component, field = linked[attr]
                if given and value != getattr(component, field):
                    raise HyperparameterError(
                        f"{attr}={value!r} contradicts loss component {component.name!r} "
                        f"({field}={getattr(component, field)!r}): accepted values are {attr}={default!r} "
                        f"(the component decides) or the component's own value."
                    )
                setattr(self, attr, getattr(component, field))
            elif given:
                raise HyperparameterError(
                    f"{attr}={value!r} has no effect because no component in loss= uses it: accepted values "
                    f"are {attr}={default!r}, or add the component that takes it to loss=."
                )
        self.loss = components

    def _setup_loss(self) -> None:
        """Finish the loss in ``_setup_model``: rebuild it from a loaded model's saved config."""
        config = self.__dict__.pop("loss_config", None)
        if config is not None:
            self.loss = build_loss(config)
        self._old_policy: BasePolicy | None = None
        self._bind_linked_hyperparameters()
        if self.vf_learning_rate is not None:
            self._split_value_parameters()
        if self.compile:
            _check_compile_toolchain(self.compile, self.device)
        for group in self.policy.optimizer.param_groups:
            # For the steps torch's own optimizer takes (other optimizers, FlatAdam's fallbacks):
            # multi-tensor kernels, one call per operation for all parameters.
            if group.get("foreach", False) is None:
                group["foreach"] = True

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
        super()._update_learning_rate(optimizers)  # type: ignore[misc]
        if self.vf_learning_rate is not None:
            vf_learning_rate = value_at(self.vf_learning_rate, self._current_progress_remaining)  # type: ignore[attr-defined]
            self.policy.optimizer.param_groups[1]["lr"] = vf_learning_rate
            self.logger.record("train/vf_learning_rate", vf_learning_rate)

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

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "loss", "_old_policy", "_compiled_score"]  # type: ignore[misc]

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """Save as SB3 does; the loss goes in as plain data (component state included)."""
        self.__dict__["loss_config"] = self.loss_config()
        try:
            super().save(path, exclude=exclude, include=include)  # type: ignore[misc]
        finally:
            del self.__dict__["loss_config"]

    # --- what each algorithm provides -----------------------------------------------------

    def _evaluate(self, policy: BasePolicy, rollout_data: Any, actions: th.Tensor) -> tuple[Any, ...]:
        """``(values, log_prob, entropy, distribution)`` of ``policy`` on a minibatch."""
        values, log_prob, entropy = policy.evaluate_actions(rollout_data.observations, actions)  # type: ignore[operator]
        return values.flatten(), log_prob, entropy, current_distribution(policy)

    def _distribution(self, policy: BasePolicy, rollout_data: Any, actions: th.Tensor) -> Any:
        """The torch distribution of ``policy`` on a minibatch: the actor's forward pass only."""
        return torch_distribution(policy.get_distribution(rollout_data.observations))  # type: ignore[attr-defined]

    def _sample_mask(self, rollout_data: Any) -> th.Tensor | None:
        """Which samples are real (``None``: all of them)."""
        return None

    # --- the loop -----------------------------------------------------------------------

    def train(self) -> None:
        """Update the policy on the rollout buffer: ``n_epochs`` passes of minibatch steps."""
        # Distribution argument checks cost a few ops and a host read per minibatch; the
        # rollout already checked these parameters and _check_finite guards every update.
        validate = th.distributions.Distribution._validate_args
        th.distributions.Distribution.set_default_validate_args(False)
        try:
            self._train()
        finally:
            th.distributions.Distribution.set_default_validate_args(validate)

    def _train(self) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate(self.policy.optimizer)
        self._bind_linked_hyperparameters()
        old_policy = self._pre_update_policy()
        stats: dict[str, list[Stat]] = defaultdict(list)
        loss: th.Tensor | None = None
        stop_reason: str | None = None
        stoppers = [component for component in self.loss if component.stops_early]
        keep_batch, progress_remaining = bool(stoppers), self._current_progress_remaining  # type: ignore[attr-defined]
        parameters = list(self.policy.parameters())
        with OptimizerStep.for_optimizer(self.policy.optimizer, parameters, fused=bool(self.compile)) as optimizer:
            score = self._scorer(optimizer, keep_batch)
            for epoch in range(self.n_epochs):
                self._prepare_advantages(epoch)
                approx_kl: list[Stat] = []  # SB3 reports the KL of the last epoch only
                for index, rollout_data in enumerate(self._minibatches()):
                    batch, terms, loss, kl, grads = score(rollout_data, old_policy, keep_batch, progress_remaining)
                    for term in terms:
                        for key, value in term.stats.items():
                            stats[key].append(value.detach() if isinstance(value, th.Tensor) else value)
                    approx_kl.append(kl)
                    stop_reason = next((r for c in stoppers if (r := c.stop_early(batch)) is not None), None)
                    if stop_reason is not None:
                        if self.verbose >= 1:
                            print(f"Early stopping at step {epoch} due to {stop_reason}")
                        break
                    optimizer.zero_grad()
                    optimizer.backward(loss, grads)
                    grad_norm = optimizer.clip_grad_norm(self.max_grad_norm)
                    self._check_finite(loss, grad_norm, terms, epoch, index)
                    optimizer.step()
                self._n_updates += 1
                if stop_reason is not None:
                    break
        stats["approx_kl"] = [_mean(approx_kl)]
        self._record_train_stats(stats, loss)

    def _score_minibatch(
        self,
        rollout_data: Any,
        old_policy: BasePolicy | None,
        keep_batch: bool,
        progress_remaining: float,
        components: Sequence[LossComponent] | None = None,
    ) -> tuple[Minibatch | None, list[LossTerm], th.Tensor, th.Tensor]:
        """Evaluate a minibatch once, let each component (``self.loss`` unless given) add its term, and sum them.

        Returns the minibatch (``None`` unless ``keep_batch``: returning it costs a compiled
        function several outputs), the terms, the loss and SB3's ``approx_kl`` estimate. All the
        arithmetic of an update before ``backward()`` is here, so ``compile=True`` compiles this.
        ``progress_remaining`` is an argument rather than read from ``self``: torch.compile makes
        it an input of the graph (after at most one recompilation), so schedules of it do not
        recompile every ``train()`` call.
        """
        batch = self._evaluate_minibatch(rollout_data, old_policy, progress_remaining)
        terms = [component(batch) for component in (self.loss if components is None else components)]
        with th.no_grad():
            approx_kl = batch.mean(kl_per_sample(batch, "k3"))
        return (batch if keep_batch else None), terms, _total(terms), approx_kl

    def _scorer(self, optimizer: OptimizerStep, keep_batch: bool) -> Callable[..., Scored]:
        """How this call scores a minibatch: ``_score_minibatch``, compiled with ``compile``.

        Returns ``(batch, terms, loss, approx_kl, flat_grads)``; ``flat_grads`` is ``None`` where
        autograd's ``backward()`` follows (see :class:`_CompiledScore` for when).
        """
        if not self.compile:
            return self._score_for_backward
        if self._compiled_score is None:
            self._compiled_score = _CompiledScore(self)
        return self._compiled_score.scorer(optimizer, keep_batch)

    def _score_for_backward(self, *arguments: Any) -> Scored:
        return (*self._score_minibatch(*arguments), None)

    def _parameter_layout(self, optimizer: FlatAdam) -> tuple[tuple[tuple[str, int, th.Size], ...], ...]:
        """Per flat buffer, each policy parameter's name, offset and shape (plain data for the graph)."""
        names = {id(p): name for name, p in self.policy.named_parameters()}
        return tuple(tuple((names[id(p)], offset, p.shape) for p, offset in group) for group in optimizer.layout)

    def _score_and_differentiate(
        self,
        holder: _PolicyHolder,
        flats: tuple[th.Tensor, ...],
        layout: tuple[tuple[tuple[str, int, th.Size], ...], ...],
        rollout_data: Any,
        old_policy: BasePolicy | None,
        progress_remaining: float,
        components: Sequence[LossComponent],
    ) -> Scored:
        """``_score_minibatch`` and the gradient of its loss with respect to the flat parameters.

        ``torch.func`` differentiates the score with the policy's parameters as views of the
        optimizer's flat buffers, so under ``torch.compile`` the forward pass, the loss and the
        backward pass are one graph, and the gradient comes out flat: no autograd engine and no
        per-parameter gradients to gather. Statistics that are not tensors (clip ranges) cannot
        leave ``torch.func``; they leave through ``settings``.
        """
        settings: list[tuple[list[str], dict[str, Stat]]] = []  # each term's statistic names, and its non-tensors

        def loss_of(flats: tuple[th.Tensor, ...]) -> tuple[th.Tensor, Any]:
            parameters = {
                f"policy.{name}": flat[offset : offset + shape.numel()].view(shape)
                for flat, group in zip(flats, layout, strict=True)
                for name, offset, shape in group
            }
            policies = [self.policy] if old_policy is None else [self.policy, old_policy]
            kept = _distribution_state(policies)
            arguments = (rollout_data, old_policy, False, progress_remaining, components)
            _, terms, loss, approx_kl = th.func.functional_call(holder, parameters, (self._score_minibatch, *arguments))
            # SB3's distributions keep the last one they made; one made of torch.func's tensors
            # must not outlive the call.
            _restore_distribution_state(kept)
            tensors = []
            for term in terms:
                tensors.append({key: value for key, value in term.stats.items() if isinstance(value, th.Tensor)})
                floats = {key: value for key, value in term.stats.items() if not isinstance(value, th.Tensor)}
                settings.append((list(term.stats), floats))
            term_losses = {index: term.loss for index, term in enumerate(terms) if term.loss is not None}
            return loss, (term_losses, tensors, approx_kl)

        grads, (loss, (term_losses, tensors, approx_kl)) = th.func.grad_and_value(loss_of, has_aux=True)(flats)
        terms = []
        for index, (stats, (names, floats)) in enumerate(zip(tensors, settings, strict=True)):
            merged = {**floats, **stats}
            terms.append(LossTerm(term_losses.get(index), {name: merged[name] for name in names}))
        return None, terms, loss, approx_kl, grads

    def _minibatches(self) -> Iterator[Any]:
        """``rollout_buffer.get(batch_size)``, bit for bit, with less work per minibatch.

        SB3 copies six numpy slices into new tensors for every minibatch; for SB3's own
        ``RolloutBuffer`` and ``DictRolloutBuffer`` this views the flattened arrays as tensors
        once per epoch and gathers each minibatch with one index tensor. The permutation is
        drawn exactly as ``get()`` draws it. Other buffers (masks, sequences) use their ``get()``.
        """
        buffer = self.rollout_buffer
        if type(buffer) not in (RolloutBuffer, DictRolloutBuffer):
            yield from buffer.get(self.batch_size)
            return
        size = buffer.buffer_size * buffer.n_envs
        indices = th.from_numpy(np.random.permutation(size))
        if not buffer.generator_ready:  # what get() does on its first call after a rollout
            if isinstance(buffer, DictRolloutBuffer):
                for key, observation in buffer.observations.items():
                    buffer.observations[key] = buffer.swap_and_flatten(observation)
            else:
                buffer.observations = buffer.swap_and_flatten(buffer.observations)
            for name in ("actions", "values", "log_probs", "advantages", "returns"):
                buffer.__dict__[name] = buffer.swap_and_flatten(buffer.__dict__[name])
            buffer.generator_ready = True
        observations = buffer.observations
        if isinstance(observations, dict):
            observations = {key: th.as_tensor(value, device=self.device) for key, value in observations.items()}
        else:
            observations = th.as_tensor(observations, device=self.device)
        actions = th.as_tensor(buffer.actions.astype(np.float32, copy=False), device=self.device)
        flat = [th.as_tensor(a, device=self.device).flatten() for a in (buffer.values, buffer.log_probs)]
        flat += [th.as_tensor(a, device=self.device).flatten() for a in (buffer.advantages, buffer.returns)]
        samples = DictRolloutBufferSamples if isinstance(buffer, DictRolloutBuffer) else RolloutBufferSamples
        batch_size = self.batch_size or size
        for start in range(0, size, batch_size):
            index = indices[start : start + batch_size].to(self.device)
            if isinstance(observations, dict):
                batch_observations: Any = {key: value[index] for key, value in observations.items()}
            else:
                batch_observations = observations[index]
            yield samples(batch_observations, actions[index], *(tensor[index] for tensor in flat))  # type: ignore[arg-type]

    def _prepare_advantages(self, epoch: int) -> None:
        """Before an epoch: recompute the advantages and normalise them over the batch, if asked."""
        recompute = self.recompute_advantages and epoch > 0  # epoch 0 has the rollout's own
        if recompute:
            self._recompute_advantages()
        if self.normalize_advantage == "batch" and (epoch == 0 or recompute):
            # Over the whole rollout, once (RLlib, Spinning Up), rather than per minibatch (SB3).
            advantages = self.rollout_buffer.advantages
            advantages -= advantages.mean()
            advantages /= advantages.std(ddof=1) + 1e-8

    def _recompute_advantages(self) -> None:
        """GAE(lambda) again with the current value function, before each epoch after the first.

        Andrychowicz et al. 2021 (arXiv:2006.05990) recommend it; SB3 issue #445.
        The targets move with the value function; ``old_values`` (for value clipping) and the
        rewards, already bootstrapped at time limits, stay those of the rollout.
        """
        buffer = self.rollout_buffer
        n_steps, n_envs = buffer.buffer_size, buffer.n_envs
        chunk_size = self.batch_size or n_steps * n_envs  # MaskablePPO's batch_size=None: the whole buffer
        with th.no_grad():
            chunks = []
            for start in range(0, n_steps * n_envs, chunk_size):
                stop = start + chunk_size
                observations = buffer.observations
                if isinstance(observations, dict):
                    chunk = {key: value[start:stop] for key, value in observations.items()}
                else:
                    chunk = observations[start:stop]
                chunks.append(self.policy.predict_values(obs_as_tensor(chunk, self.device)).flatten())
            last_values = self.policy.predict_values(obs_as_tensor(self._last_obs, self.device))
        # get() stored the arrays env-major and flat; GAE runs on (n_steps, n_envs) arrays.
        rollout_values = buffer.values
        buffer.values = th.cat(chunks).cpu().numpy().reshape(n_envs, n_steps).T
        buffer.advantages = np.zeros((n_steps, n_envs), dtype=np.float32)
        buffer.compute_returns_and_advantage(last_values=last_values, dones=self._last_episode_starts)
        buffer.advantages = buffer.swap_and_flatten(buffer.advantages)
        buffer.returns = buffer.swap_and_flatten(buffer.returns)
        buffer.values = rollout_values

    def _evaluate_minibatch(
        self, rollout_data: Any, old_policy: BasePolicy | None, progress_remaining: float
    ) -> Minibatch:
        actions = rollout_data.actions
        if isinstance(self.action_space, spaces.Discrete):
            actions = actions.long().flatten()
        old_distribution = None
        if old_policy is not None:
            with th.no_grad():
                old_distribution = self._distribution(old_policy, rollout_data, actions)
        values, log_prob, entropy, distribution = self._evaluate(self.policy, rollout_data, actions)
        mask = self._sample_mask(rollout_data)
        advantages = rollout_data.advantages
        # A single sample has no spread to normalise by (SB3 issue #325).
        if self.normalize_advantage in (True, "minibatch") and len(advantages) > 1:
            real = advantages if mask is None else advantages[mask]
            advantages = (advantages - real.mean()) / (real.std() + 1e-8)
        log_ratio = th.clamp(log_prob - rollout_data.old_log_prob, -LOG_RATIO_LIMIT, LOG_RATIO_LIMIT)
        return Minibatch(
            observations=rollout_data.observations,
            actions=actions,
            old_values=rollout_data.old_values,
            old_log_prob=rollout_data.old_log_prob,
            advantages=advantages,
            returns=rollout_data.returns,
            values=values,
            log_prob=log_prob,
            entropy=entropy,
            log_ratio=log_ratio,
            ratio=th.exp(log_ratio),
            distribution=distribution,
            old_distribution=old_distribution,
            mask=mask,
            progress_remaining=progress_remaining,
            policy=self.policy,
        )

    def _pre_update_policy(self) -> BasePolicy | None:
        """A frozen copy of the policy as it is now, if a component needs the exact KL."""
        if not any(component.needs_old_distribution for component in self.loss):
            return None
        if self._old_policy is None:
            # Built like the policy itself (a deepcopy fails on gSDE's non-leaf noise tensors);
            # forking the RNG keeps its weight initialisation from shifting the training stream.
            with th.random.fork_rng(devices=[]):
                sde = {"use_sde": True} if self.use_sde else {}  # masked policies take no use_sde
                self._old_policy = self.policy_class(  # type: ignore[assignment]
                    self.observation_space, self.action_space, self.lr_schedule, **sde, **self.policy_kwargs
                ).to(self.device)
            self._old_policy.requires_grad_(False)
            _constant_action_dims(self._old_policy)
        self._old_policy.load_state_dict(self.policy.state_dict())
        # The rollout's log-probabilities were computed in evaluation mode; match them.
        self._old_policy.set_training_mode(False)
        return self._old_policy

    def _check_finite(
        self, loss: th.Tensor, grad_norm: th.Tensor, terms: Sequence[LossTerm], epoch: int, index: int
    ) -> None:
        # One host read per minibatch: the guard that keeps NaN out of the weights.
        if th.isfinite(loss.detach() + grad_norm):
            return
        values = {c.name: t.loss.item() for c, t in zip(self.loss, terms, strict=True) if t.loss is not None}
        bad = [name for name, value in values.items() if not np.isfinite(value)]
        culprit = f"loss component(s) {', '.join(bad)}" if bad else "the gradient (every loss term was finite)"
        raise TrainingDivergedError(
            f"Non-finite value from {culprit} in train() at update {self._n_updates} "
            f"(epoch {epoch}, minibatch {index}); terms: {values}, gradient norm: {grad_norm.item()}. "
            "The optimizer step was skipped: the policy keeps its last finite weights."
        )

    def _record_train_stats(self, stats: dict[str, list[Stat]], loss: th.Tensor | None) -> None:
        keys = list(stats)
        reduced = [_mean(stats[key]) for key in keys]
        tensors = [i for i, value in enumerate(reduced) if isinstance(value, th.Tensor)]
        if tensors:  # one host transfer for every statistic of the call
            for i, value in zip(tensors, th.stack([reduced[i] for i in tensors]).tolist(), strict=True):
                reduced[i] = value
        means = dict(zip(keys, reduced, strict=True))
        for component in self.loss:
            means.update(component.after_train(means))
        for key, value in means.items():
            self.logger.record(f"train/{key}", value)
        if loss is not None:
            self.logger.record("train/loss", loss.item())
        self.logger.record(
            "train/explained_variance",
            explained_variance(self.rollout_buffer.values.flatten(), self.rollout_buffer.returns.flatten()),
        )
        if hasattr(self.policy, "log_std"):
            self.logger.record("train/std", th.exp(self.policy.log_std).mean().item())
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")


def compile_options(compile: bool | dict[str, Any]) -> dict[str, Any]:
    """``torch.compile`` keyword arguments for the ``compile`` argument (the user's win)."""
    options = {} if compile is True else dict(compile)  # type: ignore[arg-type]
    if options.get("backend", "inductor") == "inductor" and "mode" not in options:  # mode excludes options
        options["options"] = {
            # Trust the CPU's flags for the vector instruction set: by default inductor builds and
            # loads a test library per instruction set in every new process (about 1 s here).
            "cpp.vec_isa_ok": True,
            # One C++ library per graph, wrapper included: the kernels are called from C++ rather
            # than Python (about 10% less time per update here), and a graph is one compiler
            # run rather than one per kernel.
            "cpp_wrapper": True,
            # Parsing torch's headers in that one run costs less than building the precompiled
            # header (about 4 s, once per machine) and then reading it.
            "cpp_cache_precompile_headers": False,
            **options.get("options", {}),
        }
    return options


def _check_compile_toolchain(compile: bool | dict[str, Any], device: th.device) -> None:
    """torch.compile's default backend builds C++ kernels on the CPU: refuse early without a compiler."""
    if compile_options(compile).get("backend", "inductor") != "inductor" or device.type != "cpu":
        return
    if not any(shutil.which(name) for name in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++")):
        raise HyperparameterError(
            f"compile={compile!r} needs a C++ compiler (g++ or clang++) for torch.compile's inductor backend "
            "on the CPU, and none is on PATH: accepted values are compile=False, or install one "
            "(Debian: apt-get install g++)."
        )


class _CompiledScore:
    """A model's compiled scoring functions, built on its first ``train()`` call (not saved).

    ``functional`` (:meth:`LossComponentsMixin._score_and_differentiate`) is the fast one: the
    gradient comes from ``torch.func`` in the same graph. It needs Adam on flat buffers
    (:class:`FlatAdam`), a policy that compiles as one graph (SB3 reads some numpy values as
    tensors: the image check, the sizes of a Discrete or MultiDiscrete observation) and
    no schedule a component reads; it cannot hand the minibatch back to a component that stops
    early. ``backward`` compiles the score alone and leaves the gradient to autograd. Both read
    the components through :meth:`components`. If the functional graph ever fails to compile
    (dynamo's recompile limit, when something dynamo bakes in changes every call), scoring moves
    to ``backward`` for good, with a warning; dynamo fails while tracing, before anything runs,
    so nothing is lost.
    """

    def __init__(self, algorithm: LossComponentsMixin) -> None:
        options = compile_options(algorithm.compile)
        self.algorithm = algorithm
        self.backward = _compile_for_this_model(algorithm._score_for_backward, options)
        # One graph or none: a graph break inside torch.func would run part of it eagerly.
        self.functional = _compile_for_this_model(algorithm._score_and_differentiate, {**options, "fullgraph": True})
        self.traces_as_one_graph: bool | None = None  # known after the first call
        self.holder = _PolicyHolder(algorithm.policy)  # type: ignore[attr-defined]
        _constant_action_dims(algorithm.policy)  # type: ignore[attr-defined]
        self._last_fields: list[dict[str, float]] | None = None  # each component's float fields, last call
        self._varying: set[tuple[int, str]] = set()  # (component index, field name): a graph input

    def components(self) -> list[LossComponent]:
        """The loss components as the graph reads them.

        Dynamo bakes a component's float fields into the graph as constants, so a field that
        changes between calls (an adaptive KL coefficient, set by ``after_train``) would mean a
        new graph every call, until dynamo's recompile limit. Such a field is a 0-d tensor in a
        copy of the component, an input of the graph: from the first call if the component names
        it in :attr:`LossComponent.varying_fields`, otherwise from its first change on.
        """
        loss = list(self.algorithm.loss)
        fields = [{k: v for k, v in _field_values(c).items() if isinstance(v, float)} for c in loss]
        last, self._last_fields = self._last_fields or fields, fields
        for index, component in enumerate(self.algorithm.loss):
            for name, value in fields[index].items():
                if name in component.varying_fields or last[index].get(name, value) != value:
                    self._varying.add((index, name))
            inputs = {name: value for name, value in fields[index].items() if (index, name) in self._varying}
            if inputs:
                loss[index] = copy.copy(component)
                for name, value in inputs.items():  # float32: the rounding a Python float gets
                    tensor = th.tensor(value, dtype=th.get_default_dtype(), device=self.algorithm.device)
                    object.__setattr__(loss[index], name, tensor)  # frozen dataclasses too
        return loss

    def scorer(self, optimizer: OptimizerStep, keep_batch: bool) -> Callable[..., Scored]:
        # Under torch.func, dynamo specialises on progress_remaining: a new value would mean a
        # new graph every train() call. Where no component can read it, one value serves.
        components = self.components()
        fast = isinstance(optimizer, FlatAdam) and optimizer.fused and not keep_batch
        if not fast or self.traces_as_one_graph is False or _reads_progress(self.algorithm.loss):
            return lambda *arguments: self.backward(*arguments, components)
        flats, layout = optimizer.flat_parameters, self.algorithm._parameter_layout(optimizer)

        def score(rollout_data: Any, old_policy: Any, keep_batch: bool, progress_remaining: float) -> Scored:
            if self.traces_as_one_graph is not False:
                progress = 1.0  # read by no component (see above)
                try:  # tracing comes before running and changes nothing, so falling back loses nothing
                    scored = self.functional(self.holder, flats, layout, rollout_data, old_policy, progress, components)
                    self.traces_as_one_graph = True
                    return scored
                except (th._dynamo.exc.TorchDynamoException, th._dynamo.exc.FailOnRecompileLimitHit) as error:
                    self.traces_as_one_graph = False
                    cause = getattr(error, "inner_exception", None) or error  # a backend's own error
                    reason = type(cause).__name__ + "".join(f": {line}" for line in str(cause).strip().splitlines()[:1])
                    warnings.warn(
                        f"compile: the policy's update does not compile as one graph ({reason}), so from now on "
                        "its gradient comes from autograd's backward(), at more time per update.",
                        stacklevel=2,
                    )
            return self.backward(rollout_data, old_policy, keep_batch, progress_remaining, components)

        return score


def _reads_progress(components: Sequence[LossComponent]) -> bool:
    """Whether a component may read ``Minibatch.progress_remaining``.

    One that says so (:attr:`LossComponent.reads_progress`), or one with a schedule in a field;
    SB3 wraps constants as ``FloatSchedule(ConstantSchedule)``, which ignores it.
    """
    for component in components:
        if component.reads_progress:
            return True
        for value in _field_values(component).values():
            constant = isinstance(value, FloatSchedule) and isinstance(value.value_schedule, ConstantSchedule)
            if callable(value) and not constant:
                return True
    return False


def _constant_action_dims(policy: BasePolicy) -> None:
    """Python ints for a MultiDiscrete distribution's sizes.

    SB3 and sb3-contrib keep them as numpy integers (``list(action_space.nvec)``), which dynamo
    traces as tensors, so splitting the logits by them cannot be one graph. The sizes are the same.
    """
    distribution = getattr(policy, "action_dist", None)
    sizes = getattr(distribution, "action_dims", None)
    if isinstance(sizes, list | tuple | np.ndarray):  # MultiBinary's is one int already
        distribution.action_dims = [int(size) for size in sizes]  # type: ignore[union-attr]


def _field_values(component: LossComponent) -> dict[str, Any]:
    """A component's fields and their values: its dataclass fields (``vars`` misses slotted
    ones), or its attributes if it is not a dataclass."""
    return field_values(component) if dataclasses.is_dataclass(component) else dict(getattr(component, "__dict__", {}))


def _compile_for_this_model(method: Any, options: dict[str, Any]) -> Callable[..., Any]:
    """``torch.compile`` of a bound method, through a copy of its code object.

    Dynamo keeps compiled graphs per code object and stops compiling one after
    ``recompile_limit`` (8) variants; each model guards on its own ``self``, so without a copy
    the ninth model in a process (a tuning study's ninth trial) would find the limit reached.
    """
    function = method.__func__
    code = function.__code__.replace()  # an equal, distinct code object
    copy = types.FunctionType(
        code, function.__globals__, function.__name__, function.__defaults__, closure=function.__closure__
    )
    return th.compile(types.MethodType(copy, method.__self__), **options)


class _PolicyHolder(th.nn.Module):
    """Holds the policy as ``policy``, so ``torch.func.functional_call`` can swap its parameters
    around a call of any function."""

    def __init__(self, policy: BasePolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, function: Callable[..., Any], *arguments: Any) -> Any:
        return function(*arguments)


# What SB3's and sb3-contrib's distribution objects keep of the last distribution they made.
_DISTRIBUTION_STATE = ("distribution", "distributions", "_latent_sde")
_ABSENT = object()


def _distribution_state(policies: Sequence[BasePolicy]) -> list[tuple[Any, str, Any]]:
    # A policy that has not been evaluated yet (the exact KL's fresh pre-update copy) has none.
    return [
        (policy.action_dist, name, getattr(policy.action_dist, name, _ABSENT))  # type: ignore[attr-defined]
        for policy in policies
        for name in _DISTRIBUTION_STATE
    ]


def _restore_distribution_state(kept: list[tuple[Any, str, Any]]) -> None:
    for owner, name, value in kept:
        if value is not _ABSENT:
            setattr(owner, name, value)
        elif hasattr(owner, name):
            delattr(owner, name)


def current_distribution(policy: BasePolicy) -> Any:
    """The torch distribution of the policy's last evaluation (it stays in ``policy.action_dist``)."""
    return torch_distribution(policy.action_dist)  # type: ignore[union-attr]


def torch_distribution(distribution: Any) -> Any:
    """The torch distribution inside an SB3 (or sb3-contrib) distribution.

    Masked multi-dimensional distributions keep a list in ``distributions``; the others keep one
    torch distribution (a list for SB3's ``MultiDiscrete``) in ``distribution``.
    """
    return distribution.distributions if hasattr(distribution, "distributions") else distribution.distribution


def _total(terms: Sequence[LossTerm]) -> th.Tensor:
    """Sum the weighted terms left to right, in the components' order."""
    losses = [term.loss for term in terms if term.loss is not None]
    if not losses:
        raise HyperparameterError("loss has no component that adds a loss term: accepted values include at least one.")
    total = losses[0]
    for term in losses[1:]:
        total = total + term
    return total
