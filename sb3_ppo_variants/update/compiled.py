"""The fast path, ``compile=True``: each minibatch's whole update as one compiled graph.

:class:`CompiledScorer` compiles :meth:`MinibatchScorer.score
<sb3_ppo_variants.update.scoring.MinibatchScorer.score>` two ways:

- **one graph**: ``torch.func`` differentiates the score with the policy's parameters as views
  of :class:`~sb3_ppo_variants.update.optimizer_step.FlatAdam`'s flat buffers, so the forward
  pass, every component, their sum, the backward pass, the gradient's clipping and Adam's step
  (:func:`~sb3_ppo_variants.update.optimizer_step.clip_and_step`) are one graph. It needs
  FlatAdam, a policy that compiles as one graph (SB3 reads some numpy values as tensors: the
  image check, the sizes of a Discrete or MultiDiscrete observation) and no component that
  stops early (the minibatch would have to leave the graph before the step);
- **backward**: the score alone, and autograd's ``backward()`` follows.

If the one graph ever fails to compile (dynamo's recompile limit, when something dynamo bakes in
changes every call), scoring moves to ``backward`` for good, with a warning; dynamo fails while
tracing, before anything runs, so nothing is lost.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import os
import shutil
import types
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch as th
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule

from sb3_ppo_variants.common.distributions import (
    constant_action_dims,
    distribution_state,
    restore_distribution_state,
)
from sb3_ppo_variants.common.errors import HyperparameterError
from sb3_ppo_variants.components.hooks import TrainingHook
from sb3_ppo_variants.components.protocol import LossComponent, LossTerm, Stat, field_values
from sb3_ppo_variants.update.optimizer_step import FlatAdam, GraphAdam, OptimizerStep, clip_and_step
from sb3_ppo_variants.update.scoring import MinibatchScorer, ScoredMinibatch

ONE_GRAPH, BACKWARD = "one graph", "backward"
"""The values of :attr:`CompiledScorer.path`."""
_no_change = contextlib.nullcontext()

Layout = tuple[tuple[tuple[str, int, th.Size], ...], ...]


def compile_options(compile: bool | dict[str, Any]) -> dict[str, Any]:
    """``torch.compile`` keyword arguments for the ``compile`` argument (the user's win)."""
    options = {} if compile is True else dict(compile)  # type: ignore[arg-type]
    if options.get("backend", "inductor") == "inductor" and "mode" not in options:  # mode excludes options
        options["options"] = {
            # Trust the CPU's flags for the vector instruction set: by default inductor builds and
            # loads a test library per instruction set in every new process.
            "cpp.vec_isa_ok": True,
            # One C++ library per graph, wrapper included: the kernels are called from C++ rather
            # than Python, and a graph is one compiler run rather than one per kernel.
            "cpp_wrapper": True,
            # Parsing torch's headers in that one run costs less than building the precompiled
            # header (once per machine) and then reading it (benchmarks/speed.py).
            "cpp_cache_precompile_headers": False,
            **options.get("options", {}),
        }
    return options


def check_compile_toolchain(compile: bool | dict[str, Any], device: th.device) -> None:
    """torch.compile's default backend builds C++ kernels on the CPU: refuse early without a compiler."""
    if compile_options(compile).get("backend", "inductor") != "inductor" or device.type != "cpu":
        return
    if not any(shutil.which(name) for name in (os.environ.get("CXX", "g++"), "g++", "c++", "clang++")):
        raise HyperparameterError(
            f"compile={compile!r} needs a C++ compiler (g++ or clang++) for torch.compile's inductor backend "
            "on the CPU, and none is on PATH: accepted values are compile=False, or install one "
            "(Debian: apt-get install g++)."
        )


class CompiledScorer:
    """A model's compiled scoring functions, built on its first ``train()`` call (not saved)."""

    def __init__(self, scorer: MinibatchScorer, options: dict[str, Any]) -> None:
        self.scorer = scorer
        self.backward_score = _compile_fresh(scorer.score, options)
        # One graph or none: a graph break inside torch.func would run part of it eagerly.
        self.one_graph_score = _compile_fresh(score_and_differentiate, {**options, "fullgraph": True})
        self.holder = _PolicyHolder(scorer.policy)
        constant_action_dims(scorer.policy)
        self.path: str | None = None
        """:data:`ONE_GRAPH` or :data:`BACKWARD`: how the last update was scored (``None``: none yet)."""
        self.one_graph_failed = False
        self._last_fields: list[dict[str, float]] | None = None  # each component's float fields, last call
        self._varying: set[tuple[int, str]] = set()  # (component index, field name): a graph input

    def graph_components(
        self, components: Sequence[LossComponent], schedules: Sequence[dict[str, Any]], device: th.device
    ) -> list[LossComponent]:
        """The loss components as the graph reads them this call (``schedules``: each one's
        schedule fields, which hold their values this call).

        Dynamo bakes a component's float fields into the graph as constants, so a field that
        changes between calls would mean a new graph every call, until dynamo's recompile
        limit. Such a field is a 0-d tensor in a copy of the component, an input of the graph:
        from the first call for a schedule that varies, for a linked field (the algorithm's
        attribute, which a callback may set) and for every float field of a component whose
        ``after_train`` may change it (:attr:`LossComponent.adapts`), and from its first change for
        any other. A component's :attr:`~LossComponent.host_fields` stay constants.
        """
        fields = [{k: v for k, v in field_values(c).items() if isinstance(v, float)} for c in components]
        last, self._last_fields = self._last_fields or fields, fields
        graph = list(components)
        for index, component in enumerate(components):
            for name, value in fields[index].items():
                if name in component.host_fields:
                    continue
                linked = name in component.linked
                varies = component.adapts or linked or _varies(schedules[index].get(name))
                if varies or last[index].get(name, value) != value:
                    self._varying.add((index, name))
            inputs = {name: value for name, value in fields[index].items() if (index, name) in self._varying}
            if inputs:
                graph[index] = copy.copy(component)
                for name, value in inputs.items():  # float32: the rounding a Python float gets
                    tensor = th.tensor(value, dtype=th.get_default_dtype(), device=device)
                    object.__setattr__(graph[index], name, tensor)  # frozen dataclasses too
        return graph

    def for_call(
        self,
        optimizer: OptimizerStep,
        old_policy: BasePolicy | None,
        progress_remaining: float,
        components: list[LossComponent],
        keep_batch: bool,
        max_grad_norm: float,
    ) -> Callable[[Any], ScoredMinibatch]:
        """This call's ``score(rollout_data)``: on one graph where possible (see the module docstring)."""
        # A tensor, so progress is an input of the graph rather than a constant in it.
        device = optimizer.parameters[0].device
        progress = th.tensor(progress_remaining, dtype=th.get_default_dtype(), device=device)
        backward = functools.partial(
            self.backward_score,
            old_policy=old_policy,
            progress_remaining=progress,
            components=components,
            keep_batch=keep_batch,
        )
        if keep_batch or self.one_graph_failed or not (isinstance(optimizer, FlatAdam) and optimizer.fused):
            self.path = BACKWARD
            return backward
        flats, layout = optimizer.flat_parameters, parameter_layout(self.scorer.policy, optimizer)
        # Within a call, every minibatch of the first one's size meets the graph the first one's
        # guards chose: the same objects, shapes and constants, unless a component's after_step
        # changes what the graph reads. So only the first pays the guards' evaluation.
        steady = all(type(component).after_step is TrainingHook.after_step for component in components)
        guarded_size: int | None = None  # the size whose guards passed, once (never, unless steady)

        def score(rollout_data: Any) -> ScoredMinibatch:
            nonlocal guarded_size
            if not self.one_graph_failed:
                size = rollout_data.actions.shape[0]
                skip_guards = size == guarded_size
                adam = optimizer.graph_adam(max_grad_norm)
                try:  # tracing comes before running and changes nothing, so falling back loses nothing
                    with th.compiler.set_stance(skip_guard_eval_unsafe=True) if skip_guards else _no_change:
                        scored = self.one_graph_score(
                            self.scorer,
                            self.holder,
                            flats,
                            layout,
                            rollout_data,
                            old_policy,
                            progress,
                            components,
                            adam,
                        )
                    if steady and guarded_size is None:
                        guarded_size = size
                    self.path = ONE_GRAPH
                    return scored
                except (th._dynamo.exc.TorchDynamoException, th._dynamo.exc.FailOnRecompileLimitHit) as error:
                    self._fall_back(error)
            return backward(rollout_data)

        return score

    def _fall_back(self, error: Exception) -> None:
        self.one_graph_failed, self.path = True, BACKWARD
        cause = getattr(error, "inner_exception", None) or error  # a backend's own error
        reason = type(cause).__name__ + "".join(f": {line}" for line in str(cause).strip().splitlines()[:1])
        warnings.warn(
            f"compile: the policy's update does not compile as one graph ({reason}), so from now on "
            "its gradient comes from autograd's backward(), at more time per update.",
            stacklevel=3,
        )


def score_and_differentiate(
    scorer: MinibatchScorer,
    holder: _PolicyHolder,
    flats: tuple[th.Tensor, ...],
    layout: Layout,
    rollout_data: Any,
    old_policy: BasePolicy | None,
    progress_remaining: th.Tensor,
    components: Sequence[LossComponent],
    adam: GraphAdam | None = None,
) -> ScoredMinibatch:
    """``scorer.score`` and the gradient of its loss with respect to the flat parameters; with
    ``adam``, the clipped gradient's step too.

    Statistics that are not tensors (clip ranges given as constants) cannot leave ``torch.func``;
    they leave through ``settings``.
    """
    settings: list[tuple[list[str], dict[str, Stat]]] = []  # each term's statistic names, and its non-tensors

    def loss_of(pieces: tuple[tuple[th.Tensor, ...], ...]) -> tuple[th.Tensor, Any]:
        parameters = {
            f"policy.{name}": piece
            for group, group_pieces in zip(layout, pieces, strict=True)
            for (name, _, _), piece in zip(group, group_pieces, strict=True)
        }
        kept = distribution_state([scorer.policy] if old_policy is None else [scorer.policy, old_policy])
        arguments = (rollout_data, old_policy, progress_remaining, components)
        scored = th.func.functional_call(holder, parameters, (scorer.score, *arguments))
        # SB3's distributions keep the last one they made; one made of torch.func's tensors
        # must not outlive the call.
        restore_distribution_state(kept)
        tensors = []
        for term in scored.terms:
            tensors.append({key: value for key, value in term.stats.items() if isinstance(value, th.Tensor)})
            floats = {key: value for key, value in term.stats.items() if not isinstance(value, th.Tensor)}
            settings.append((list(term.stats), floats))
        term_losses = {index: term.loss for index, term in enumerate(scored.terms) if term.loss is not None}
        return scored.loss, (term_losses, tensors, scored.approx_kl)

    pieces = tuple(
        tuple(flat[offset : offset + shape.numel()].view(shape) for _, offset, shape in group)
        for flat, group in zip(flats, layout, strict=True)
    )
    piece_grads, (loss, (term_losses, tensors, approx_kl)) = th.func.grad_and_value(loss_of, has_aux=True)(pieces)
    # Each flat gradient is concatenated from its parameters' gradients. Differentiated with
    # respect to the flat buffer itself, it would be a sum of one zero-padded slice per parameter,
    # which inductor evaluates for every element of every pass over the buffer.
    grads = tuple(
        _concatenated(group_grads, group, flat.numel())
        for group_grads, group, flat in zip(piece_grads, layout, flats, strict=True)
    )
    terms = []
    for index, (stats, (names, floats)) in enumerate(zip(tensors, settings, strict=True)):
        merged = {**floats, **stats}
        terms.append(LossTerm(term_losses.get(index), {name: merged[name] for name in names}))
    stepped_norm = None if adam is None else clip_and_step(flats, grads, loss, adam)
    return ScoredMinibatch(None, terms, loss, approx_kl, grads, stepped_norm)


def _concatenated(grads: tuple[th.Tensor, ...], group: tuple[tuple[str, int, th.Size], ...], size: int) -> th.Tensor:
    """Parameter gradients laid out as their flat buffer: in order, with zeros where it pads."""
    parts, end = [], 0
    for grad, (_, offset, shape) in zip(grads, group, strict=True):
        if offset > end:
            parts.append(grad.new_zeros(offset - end))
        parts.append(grad.reshape(-1))
        end = offset + shape.numel()
    if size > end:
        parts.append(grads[0].new_zeros(size - end))
    return th.cat(parts)


def parameter_layout(policy: BasePolicy, optimizer: FlatAdam) -> Layout:
    """Per flat buffer, each policy parameter's name, offset and shape (plain data for the graph)."""
    names = {id(p): name for name, p in policy.named_parameters()}
    return tuple(tuple((names[id(p)], offset, p.shape) for p, offset in group) for group in optimizer.layout)


def _varies(value: Any) -> bool:
    """Whether a field's declared value is a schedule whose value changes over training."""
    constant = isinstance(value, FloatSchedule) and isinstance(value.value_schedule, ConstantSchedule)
    return callable(value) and not constant and not isinstance(value, ConstantSchedule)


def _compile_fresh(function: Callable[..., Any], options: dict[str, Any]) -> Callable[..., Any]:
    """``torch.compile`` of a function or bound method, through a copy of its code object.

    Dynamo keeps compiled graphs per code object and stops compiling one after
    ``recompile_limit`` (8) variants; each model guards on its own scorer, so without a copy
    the ninth model in a process (a tuning study's ninth trial) would find the limit reached.
    """
    bound = getattr(function, "__self__", None)
    plain = getattr(function, "__func__", function)
    copied = types.FunctionType(
        plain.__code__.replace(), plain.__globals__, plain.__name__, plain.__defaults__, closure=plain.__closure__
    )
    copied.__kwdefaults__ = plain.__kwdefaults__
    return th.compile(copied if bound is None else types.MethodType(copied, bound), **options)


class _PolicyHolder(th.nn.Module):
    """Holds the policy as ``policy``, so ``torch.func.functional_call`` can swap its parameters
    around a call of any function."""

    def __init__(self, policy: BasePolicy) -> None:
        super().__init__()
        self.policy = policy

    def forward(self, function: Callable[..., Any], *arguments: Any) -> Any:
        return function(*arguments)
