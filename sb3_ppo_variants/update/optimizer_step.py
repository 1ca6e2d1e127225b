"""One optimizer update as SB3's PPO makes it: clear the gradients, clip their norm, step.

SB3 calls ``zero_grad()``, ``clip_grad_norm_`` and ``optimizer.step()``. With its default
optimizer on the CPU, torch's Adam runs each of its seven operations once per parameter tensor,
so a policy of two 64x64 networks spends most of an update dispatching small kernels.
:class:`FlatAdam` keeps each parameter group's parameters and Adam moments as views of one
contiguous buffer and runs the same seven operations once per group. Adam is elementwise and
the gradient norm is still reduced tensor by tensor, so the result is that of torch's Adam and
``clip_grad_norm_`` bit for bit (``tests/update/test_optimizer_step.py``); everything else
(another optimizer, AMSGrad, a GPU, a parameter without a gradient) takes torch's own path.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch as th

# The Adam settings whose arithmetic FlatAdam reproduces; anything else goes to torch.
_FLAT_ADAM_FLAGS = ("amsgrad", "maximize", "capturable", "differentiable", "fused", "decoupled_weight_decay")

# Each optimizer's flat buffers by parameter group, kept between train() calls.
_FLAT_BUFFERS: weakref.WeakKeyDictionary[th.optim.Optimizer, dict[int, _FlatGroup]] = weakref.WeakKeyDictionary()


class OptimizerStep:
    """``zero_grad``, ``clip_grad_norm_`` and ``step`` of ``optimizer``, as torch does them."""

    def __init__(self, optimizer: th.optim.Optimizer, parameters: list[th.nn.Parameter]) -> None:
        self.optimizer = optimizer
        self.parameters = parameters
        """The policy's parameters in module order: the order SB3 reduces the gradient norm in."""

    @classmethod
    def for_optimizer(
        cls, optimizer: th.optim.Optimizer, parameters: list[th.nn.Parameter], fused: bool = False
    ) -> OptimizerStep:
        """:class:`FlatAdam` where it reproduces ``optimizer``, this class otherwise.

        ``fused``: trade the last bits for speed (see :class:`FlatAdam`).
        """
        if FlatAdam.supports(optimizer, parameters):
            return FlatAdam(optimizer, parameters, fused=fused)
        return cls(optimizer, parameters)

    def __enter__(self) -> OptimizerStep:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.finish()

    def finish(self) -> None:
        """Leave the optimizer's state and the gradients as torch's own steps would have."""

    def zero_grad(self) -> None:
        self.optimizer.zero_grad()

    def backward(self, loss: th.Tensor) -> None:
        """The gradient of ``loss`` by autograd."""
        loss.backward()

    def set_flat_gradients(self, flat_grads: tuple[th.Tensor, ...], stepped_norm: th.Tensor | None = None) -> None:
        """Take a gradient already computed with the loss: one flat tensor per parameter group,
        laid out as :attr:`FlatAdam.layout` (from ``torch.func`` under ``compile=True``).

        ``stepped_norm``: the graph that computed the gradient also clipped it and stepped with
        :func:`clip_and_step` (this is its norm before clipping); ``clip_grad_norm`` then returns
        it and ``step`` only counts the step.
        """
        raise TypeError(f"{type(self).__name__} takes no flat gradients: only FlatAdam does")

    def clip_grad_norm(self, max_norm: float) -> th.Tensor:
        return th.nn.utils.clip_grad_norm_(self.parameters, max_norm)

    def step(self) -> None:
        self.optimizer.step()


class FlatAdam(OptimizerStep):
    """torch's Adam and gradient clipping over one contiguous buffer per parameter group.

    Binding makes every parameter, ``exp_avg`` and ``exp_avg_sq`` of a group a view of a flat
    tensor (their values are kept; the optimizer's ``state`` and ``state_dict()`` look as torch
    left them), so a step is a handful of operations on whole buffers. A binding survives
    between ``train()`` calls and is redone when the optimizer or its state is replaced (``load``,
    ``set_parameters``, moving the policy).

    ``fused=True`` takes the gradient norm over the flat gradient in one reduction and steps with
    torch's fused Adam kernel: the same update up to float rounding, in fewer operations.
    """

    @staticmethod
    def supports(optimizer: th.optim.Optimizer, parameters: list[th.nn.Parameter]) -> bool:
        if type(optimizer) is not th.optim.Adam:
            return False
        optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
        if optimized != {id(p) for p in parameters}:  # the norm would cover other tensors
            return False
        for group in optimizer.param_groups:
            if any(group.get(flag) for flag in _FLAT_ADAM_FLAGS):
                return False
            numbers = [group["lr"], group["eps"], group["weight_decay"], *group["betas"]]
            if any(isinstance(number, th.Tensor) for number in numbers):  # tensor hyperparameters
                return False
            for p in group["params"]:
                # On a GPU torch's default is its multi-tensor kernels, whose rounding may differ.
                if p.device.type != "cpu" or not p.is_contiguous() or p.dtype != th.float32:
                    return False
        return True

    def __init__(self, optimizer: th.optim.Optimizer, parameters: list[th.nn.Parameter], fused: bool = False) -> None:
        super().__init__(optimizer, parameters)
        self.fused = fused
        buffers = _FLAT_BUFFERS.setdefault(optimizer, {})
        self.groups = []
        for group in optimizer.param_groups:
            flat = buffers.get(id(group))
            if flat is None or not flat.is_bound(optimizer):
                flat = buffers[id(group)] = _FlatGroup(optimizer, group)
            self.groups.append(flat)
        self.group_parameters = [p for group in optimizer.param_groups for p in group["params"]]
        self.steps = [optimizer.state[p]["step"] for p in self.group_parameters]
        counts = {float(step) for step in self.steps}
        # Regular: every parameter has taken the same number of steps, so one bias correction
        # serves them all. A parameter that torch's path skipped (no gradient) ends that.
        self.regular = len(counts) == 1
        self.step_count = counts.pop()  # written to the state tensors by finish()
        self.flat_grads: list[th.Tensor] | None = None
        self.stepped_norm: th.Tensor | None = None  # the last update was clipped and stepped by a graph
        self.max_norm = 0.0  # the last clip_grad_norm's max_norm

    @property
    def flat_parameters(self) -> tuple[th.Tensor, ...]:
        """Each parameter group's flat parameter buffer; every parameter is a view of one."""
        return tuple(flat.param for flat in self.groups)

    @property
    def layout(self) -> tuple[tuple[tuple[th.nn.Parameter, int], ...], ...]:
        """Per group, each parameter and its offset in the group's flat buffer."""
        return tuple(tuple(zip(flat.params, flat.offsets, strict=True)) for flat in self.groups)

    def graph_adam(self, max_grad_norm: float) -> GraphAdam | None:
        """What a compiled graph needs to clip and step this optimizer itself with
        :func:`clip_and_step`; ``None`` where it cannot (not ``fused``, or an irregular state)."""
        if not (self.fused and self.regular):
            return None
        groups, step = self.optimizer.param_groups, self.step_count + 1
        return GraphAdam(
            exp_avgs=tuple(flat.exp_avg for flat in self.groups),
            exp_avg_sqs=tuple(flat.exp_avg_sq for flat in self.groups),
            step_sizes=tuple(th.tensor(group["lr"] / (1 - group["betas"][0] ** step)) for group in groups),
            bias_corrections2_sqrt=tuple(th.tensor((1 - group["betas"][1] ** step) ** 0.5) for group in groups),
            settings=tuple((*group["betas"], group["eps"], group["weight_decay"]) for group in groups),
            max_grad_norm=float(max_grad_norm),
        )

    def zero_grad(self) -> None:
        for p in self.group_parameters:
            p.grad = None
        self.flat_grads = None
        self.stepped_norm = None

    def set_flat_gradients(self, flat_grads: tuple[th.Tensor, ...], stepped_norm: th.Tensor | None = None) -> None:
        self.flat_grads = list(flat_grads)
        self.stepped_norm = stepped_norm

    def finish(self) -> None:
        if self.regular:
            for step in self.steps:
                step.fill_(self.step_count)
        if self.flat_grads is not None:  # p.grad holds the clipped gradient after a torch step
            if self.stepped_norm is not None:  # the graph clipped a copy
                coefficient = clip_coefficient(self.stepped_norm, self.max_norm)
                self.flat_grads = [grad * coefficient for grad in self.flat_grads]
                self.stepped_norm = None
            for flat, grad in zip(self.groups, self.flat_grads, strict=True):
                for p, view in zip(flat.params, flat.views(grad), strict=True):
                    if p.grad is None:  # the gradient came flat, from torch.func
                        p.grad = th.empty_like(p)
                    p.grad.copy_(view)

    def clip_grad_norm(self, max_norm: float) -> th.Tensor:
        self.max_norm = max_norm
        if self.stepped_norm is not None:
            return self.stepped_norm
        if self.flat_grads is None:
            if not self.regular or any(p.grad is None for p in self.group_parameters):
                self.finish()  # torch's step reads the step counts
                self.regular = False
                return super().clip_grad_norm(max_norm)
            self.flat_grads = [flat.gather_grads() for flat in self.groups]
        elif not self.fused:
            raise ValueError("flat gradients need FlatAdam(fused=True): the exact norm is taken tensor by tensor")
        if self.fused:
            total_norm = flat_norm(self.flat_grads)
        else:
            # clip_grad_norm_'s arithmetic: tensor norms in module order, their norm, one scale.
            norms = th._foreach_norm([p.grad for p in self.parameters], 2.0)  # type: ignore[misc]
            total_norm = th.linalg.vector_norm(th.stack(norms), 2.0)
        clip_coef_clamped = clip_coefficient(total_norm, max_norm)
        for flat_grad in self.flat_grads:
            flat_grad.mul_(clip_coef_clamped)
        return total_norm

    def step(self) -> None:
        if self.flat_grads is None:  # torch clipped: an irregular state or a missing gradient
            self.optimizer.step()
            return
        self.step_count += 1
        if self.stepped_norm is not None:  # the graph stepped
            return
        for group, flat, grad in zip(self.optimizer.param_groups, self.groups, self.flat_grads, strict=True):
            if self.fused:
                _fused_adam(flat.param, grad, flat.exp_avg, flat.exp_avg_sq, self.step_count, group)
            else:
                _adam(flat.param, grad, flat.exp_avg, flat.exp_avg_sq, self.step_count, group)


def flat_norm(flat_grads: Sequence[th.Tensor]) -> th.Tensor:
    """The norm of a gradient held in flat buffers, one reduction per buffer (``fused=True``)."""
    norms = [grad.norm() for grad in flat_grads]
    return norms[0] if len(norms) == 1 else th.linalg.vector_norm(th.stack(norms))


def clip_coefficient(total_norm: th.Tensor, max_norm: float) -> th.Tensor:
    """``clip_grad_norm_``'s scale for a gradient of norm ``total_norm``."""
    return th.clamp(max_norm / (total_norm + 1e-6), max=1.0)


class GraphAdam(NamedTuple):
    """:class:`FlatAdam`'s state and settings for one update inside a compiled graph: tensors,
    and floats that the graph may take as constants (a changed one means a new graph)."""

    exp_avgs: tuple[th.Tensor, ...]
    """Each parameter group's flat first moment (updated in place)."""
    exp_avg_sqs: tuple[th.Tensor, ...]
    """Each parameter group's flat second moment (updated in place)."""
    step_sizes: tuple[th.Tensor, ...]
    """Each group's ``lr / (1 - beta1^step)`` for the step this update makes, a 0-d tensor: an
    input, computed once rather than for every element, and changing without a new graph."""
    bias_corrections2_sqrt: tuple[th.Tensor, ...]
    """Each group's ``sqrt(1 - beta2^step)``, a 0-d tensor."""
    settings: tuple[tuple[float, float, float, float], ...]
    """Each group's ``(beta1, beta2, eps, weight_decay)``."""
    max_grad_norm: float


def clip_and_step(
    params: tuple[th.Tensor, ...], grads: tuple[th.Tensor, ...], loss: th.Tensor, adam: GraphAdam
) -> th.Tensor:
    """:class:`FlatAdam` ``(fused=True)``'s ``clip_grad_norm`` and ``step`` as arithmetic a
    compiler fuses into one pass over the buffers, in place; returns the gradient's norm.

    Nothing is written unless the loss and the norm are finite: the divergence guard, which
    reads them next, then stops the call with the weights as they were.
    """
    total_norm = flat_norm(grads)
    coefficient = clip_coefficient(total_norm, adam.max_grad_norm)
    finite = th.isfinite(loss.detach() + total_norm)
    for param, grad, exp_avg, exp_avg_sq, step_size, correction2, (beta1, beta2, eps, weight_decay) in zip(
        params,
        grads,
        adam.exp_avgs,
        adam.exp_avg_sqs,
        adam.step_sizes,
        adam.bias_corrections2_sqrt,
        adam.settings,
        strict=True,
    ):
        grad = grad * coefficient
        if weight_decay != 0:
            grad = grad + weight_decay * param
        new_exp_avg = exp_avg.lerp(grad, 1 - beta1)
        new_exp_avg_sq = exp_avg_sq * beta2 + (1 - beta2) * grad * grad
        new_param = param - step_size * new_exp_avg / (new_exp_avg_sq.sqrt() / correction2 + eps)
        for tensor, new in ((param, new_param), (exp_avg, new_exp_avg), (exp_avg_sq, new_exp_avg_sq)):
            tensor.copy_(th.where(finite, new, tensor))
    return total_norm


def _adam(
    param: th.Tensor, grad: th.Tensor, exp_avg: th.Tensor, exp_avg_sq: th.Tensor, step: float, group: dict[str, Any]
) -> None:
    """torch's single-tensor Adam (``torch/optim/adam.py``), on one flat tensor."""
    lr, (beta1, beta2), eps, weight_decay = group["lr"], group["betas"], group["eps"], group["weight_decay"]
    if weight_decay != 0:
        grad = grad.add(param, alpha=weight_decay)
    exp_avg.lerp_(grad, 1 - beta1)
    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
    bias_correction1 = 1 - beta1**step
    bias_correction2 = 1 - beta2**step
    step_size = lr / bias_correction1
    bias_correction2_sqrt = bias_correction2**0.5
    denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
    param.addcdiv_(exp_avg, denom, value=-step_size)


def _fused_adam(
    param: th.Tensor, grad: th.Tensor, exp_avg: th.Tensor, exp_avg_sq: th.Tensor, step: float, group: dict[str, Any]
) -> None:
    """Adam by torch's fused kernel (``Adam(fused=True)``), on one flat tensor."""
    beta1, beta2 = group["betas"]
    th._fused_adam_(  # type: ignore[attr-defined]
        [param],
        [grad],
        [exp_avg],
        [exp_avg_sq],
        [],  # AMSGrad's maxima
        [th.tensor(step)],
        amsgrad=False,
        lr=group["lr"],
        beta1=beta1,
        beta2=beta2,
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=False,
    )


# Each tensor starts on a 64-byte boundary in its flat buffer, as a tensor of its own would:
# matrix products read unaligned memory by another code path, with other rounding.
_ALIGNMENT = 16


class _FlatGroup:
    """A parameter group's parameters and Adam moments as views of three flat tensors.

    Binding keeps their values and the optimizer's ``state`` keys, so ``state_dict()`` looks as
    torch left it; the zero padding between tensors stays zero under Adam.
    """

    def __init__(self, optimizer: th.optim.Optimizer, group: dict[str, Any]) -> None:
        self.params: list[th.nn.Parameter] = list(group["params"])
        self.offsets: list[int] = []
        size = 0
        for p in self.params:
            self.offsets.append(size)
            size += -(-p.numel() // _ALIGNMENT) * _ALIGNMENT
        self.size = size
        for p in self.params:
            state = optimizer.state[p]
            if not state:  # torch's lazy initialisation, done now so the moments can be flat
                state["step"] = th.tensor(0.0, dtype=th.float32)
                state["exp_avg"] = th.zeros_like(p, memory_format=th.preserve_format)
                state["exp_avg_sq"] = th.zeros_like(p, memory_format=th.preserve_format)
        self.param = self._bind([p.data for p in self.params], lambda p, view: setattr(p, "data", view))
        self.exp_avg, self.exp_avg_sq = (self._bind_state(optimizer, key) for key in ("exp_avg", "exp_avg_sq"))
        self.grad = th.zeros(size)
        self.grad_views = self.views(self.grad)

    def _bind_state(self, optimizer: th.optim.Optimizer, key: str) -> th.Tensor:
        def rebind(p: th.nn.Parameter, view: th.Tensor) -> None:
            optimizer.state[p][key] = view

        return self._bind([optimizer.state[p][key] for p in self.params], rebind)

    def _bind(self, tensors: list[th.Tensor], rebind: Callable[[th.nn.Parameter, th.Tensor], None]) -> th.Tensor:
        flat = th.zeros(self.size)
        views = self.views(flat)
        th._foreach_copy_(views, [tensor.detach() for tensor in tensors])
        for p, view in zip(self.params, views, strict=True):
            rebind(p, view)
        return flat

    def views(self, flat: th.Tensor) -> list[th.Tensor]:
        """Each parameter's place in a flat tensor laid out like this group."""
        return [flat[o : o + p.numel()].view_as(p) for p, o in zip(self.params, self.offsets, strict=True)]

    def gather_grads(self) -> th.Tensor:
        """The gradients, copied into one flat tensor."""
        th._foreach_copy_(self.grad_views, [p.grad for p in self.params])
        return self.grad

    def is_bound(self, optimizer: th.optim.Optimizer) -> bool:
        """Whether every parameter and moment still lives in its place in the flat tensors."""
        for flat, tensors in (
            (self.param, [p.data for p in self.params]),
            (self.exp_avg, [optimizer.state[p].get("exp_avg") for p in self.params]),
            (self.exp_avg_sq, [optimizer.state[p].get("exp_avg_sq") for p in self.params]),
        ):
            base = flat.data_ptr()
            for tensor, offset in zip(tensors, self.offsets, strict=True):
                if tensor is None or tensor.data_ptr() != base + offset * flat.element_size():
                    return False
        return True
