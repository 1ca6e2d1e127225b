"""FlatAdam updates exactly as torch's Adam after clip_grad_norm_ does, and leaves the same state."""

import copy

import pytest
import torch as th

from sb3_ppo_variants.update.optimizer_step import FlatAdam, OptimizerStep, clip_and_step


def _network() -> th.nn.Module:
    th.manual_seed(0)
    # Sizes that are not multiples of the alignment (the 3-unit head, its 1-element bias).
    return th.nn.Sequential(th.nn.Linear(5, 64), th.nn.Tanh(), th.nn.Linear(64, 64), th.nn.Tanh(), th.nn.Linear(64, 3))


def _update(step: OptimizerStep, network: th.nn.Module, inputs: th.Tensor, targets: th.Tensor) -> th.Tensor:
    step.zero_grad()
    ((network(inputs) - targets) ** 2).mean().backward()
    norm = step.clip_grad_norm(0.5)
    step.step()
    return norm


def _train(network, optimizer, flat: bool, n_calls: int = 3, n_steps: int = 7):
    """``n_calls`` train() calls of ``n_steps`` updates; the norms of every update."""
    parameters = list(network.parameters())
    norms = []
    generator = th.Generator().manual_seed(1)
    for _ in range(n_calls):
        with (FlatAdam if flat else OptimizerStep)(optimizer, parameters) as step:
            for _ in range(n_steps):
                inputs, targets = th.randn(32, 5, generator=generator), th.randn(32, 3, generator=generator)
                norms.append(_update(step, network, inputs, targets))
    return norms


def _same_state(a: th.optim.Optimizer, b: th.optim.Optimizer) -> bool:
    state_a, state_b = a.state_dict()["state"], b.state_dict()["state"]
    return state_a.keys() == state_b.keys() and all(
        th.equal(state_a[k][key], state_b[k][key]) for k in state_a for key in state_a[k]
    )


def _tensors_equal(a, b) -> bool:
    return all(th.equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize(
    "settings",
    [{"lr": 3e-4, "eps": 1e-5}, {"lr": 1e-2, "betas": (0.8, 0.99), "weight_decay": 0.01}],
    ids=["sb3-default", "betas-and-weight-decay"],
)
def test_flat_adam_is_bit_identical_to_torch_adam_and_clip_grad_norm(settings):
    reference, flat = _network(), _network()
    reference_optimizer = th.optim.Adam(reference.parameters(), **settings)
    flat_optimizer = th.optim.Adam(flat.parameters(), **settings)
    assert FlatAdam.supports(flat_optimizer, list(flat.parameters()))

    norms = _train(flat, flat_optimizer, flat=True)

    assert _tensors_equal(norms, _train(reference, reference_optimizer, flat=False))
    assert _tensors_equal(flat.parameters(), reference.parameters())
    assert _tensors_equal([p.grad for p in flat.parameters()], [p.grad for p in reference.parameters()])
    assert _same_state(flat_optimizer, reference_optimizer)  # step counts and moments, as torch keeps them


def test_two_parameter_groups_with_their_own_learning_rates():
    def build():
        network = _network()
        head = list(network[4].parameters())
        body = [p for p in network.parameters() if all(p is not h for h in head)]
        return network, th.optim.Adam([{"params": body}, {"params": head, "lr": 1e-2}], lr=1e-3)

    (reference, reference_optimizer), (flat, flat_optimizer) = build(), build()
    _train(flat, flat_optimizer, flat=True)
    _train(reference, reference_optimizer, flat=False)
    assert _tensors_equal(flat.parameters(), reference.parameters())


def test_a_replaced_optimizer_state_is_bound_again():
    """``load`` replaces the state tensors; the next call flattens the loaded values."""
    reference, flat = _network(), _network()
    reference_optimizer, flat_optimizer = th.optim.Adam(reference.parameters()), th.optim.Adam(flat.parameters())
    _train(flat, flat_optimizer, flat=True, n_calls=1)
    _train(reference, reference_optimizer, flat=False, n_calls=1)

    flat_optimizer.load_state_dict(copy.deepcopy(flat_optimizer.state_dict()))
    flat.load_state_dict(copy.deepcopy(flat.state_dict()))
    _train(flat, flat_optimizer, flat=True, n_calls=2)
    _train(reference, reference_optimizer, flat=False, n_calls=2)
    assert _tensors_equal(flat.parameters(), reference.parameters())
    assert _same_state(flat_optimizer, reference_optimizer)


def test_a_parameter_without_gradient_falls_back_to_torch_for_the_rest_of_the_call():
    """Adam skips a parameter without gradient; the flat step cannot, so torch takes over."""

    def run(flat: bool):
        network = _network()
        optimizer = th.optim.Adam(network.parameters())
        parameters = list(network.parameters())
        generator = th.Generator().manual_seed(1)
        with (FlatAdam if flat else OptimizerStep)(optimizer, parameters) as step:
            for i in range(4):
                step.zero_grad()
                inputs = th.randn(8, 5, generator=generator)
                features = network[:4](inputs)
                # The head is unused on the third update: its parameters get no gradient.
                output = features.sum() if i == 2 else network[4](features).sum()
                output.backward()
                step.clip_grad_norm(0.5)
                step.step()
        return network, optimizer

    (flat, flat_optimizer), (reference, reference_optimizer) = run(True), run(False)
    assert _tensors_equal(flat.parameters(), reference.parameters())
    assert _same_state(flat_optimizer, reference_optimizer)
    assert {float(s["step"]) for s in flat_optimizer.state_dict()["state"].values()} == {3.0, 4.0}


@pytest.mark.parametrize(
    "optimizer",
    [
        lambda params: th.optim.RMSprop(params),
        lambda params: th.optim.AdamW(params),
        lambda params: th.optim.Adam(params, amsgrad=True),
        lambda params: th.optim.Adam(params, lr=th.tensor(1e-3)),
    ],
    ids=["rmsprop", "adamw", "amsgrad", "tensor-lr"],
)
def test_other_optimizers_take_torchs_own_step(optimizer):
    network = _network()
    parameters = list(network.parameters())
    step = OptimizerStep.for_optimizer(optimizer(parameters), parameters)
    assert type(step) is OptimizerStep


def test_fused_flat_adam_matches_torchs_fused_adam_up_to_rounding():
    """compile=True's optimizer: one norm over the flat gradient and torch's fused Adam kernel."""
    reference, flat = _network(), _network()
    reference_optimizer = th.optim.Adam(reference.parameters(), lr=1e-3, eps=1e-5, fused=True)
    flat_optimizer = th.optim.Adam(flat.parameters(), lr=1e-3, eps=1e-5)
    reference_step = OptimizerStep(reference_optimizer, list(reference.parameters()))
    generator = th.Generator().manual_seed(1)
    for _ in range(3):
        with OptimizerStep.for_optimizer(flat_optimizer, list(flat.parameters()), fused=True) as step:
            assert isinstance(step, FlatAdam) and step.fused
            for _ in range(7):
                inputs, targets = th.randn(32, 5, generator=generator), th.randn(32, 3, generator=generator)
                norm = _update(step, flat, inputs, targets)
                assert norm.item() == pytest.approx(
                    _update(reference_step, reference, inputs, targets).item(), rel=1e-5
                )
    for p, q in zip(flat.parameters(), reference.parameters(), strict=True):
        assert th.allclose(p, q, rtol=1e-5, atol=1e-6)
    assert {float(s["step"]) for s in flat_optimizer.state_dict()["state"].values()} == {21.0}


def _graph_update(step: FlatAdam, network: th.nn.Module, inputs: th.Tensor, targets: th.Tensor) -> th.Tensor:
    """An update as compile=True's one graph makes it: a flat gradient, then clip_and_step in place."""
    step.zero_grad()
    loss = ((network(inputs) - targets) ** 2).mean()
    gradients = th.autograd.grad(loss, [p for group in step.layout for p, _ in group])
    grads, given = [], iter(gradients)
    for flat, group in zip(step.flat_parameters, step.layout, strict=True):
        grad = th.zeros_like(flat)
        for p, offset in group:
            grad[offset : offset + p.numel()] = next(given).flatten()
        grads.append(grad)
    norm = clip_and_step(step.flat_parameters, tuple(grads), loss, step.graph_adam(0.5))
    step.set_flat_gradients(tuple(grads), norm)
    assert step.clip_grad_norm(0.5) is norm
    step.step()
    return norm


def test_the_graphs_own_clip_and_step_updates_as_fused_flat_adam():
    reference, stepped = _network(), _network()
    settings = {"lr": 1e-3, "eps": 1e-5, "weight_decay": 0.01}
    reference_optimizer = th.optim.Adam(reference.parameters(), **settings)
    stepped_optimizer = th.optim.Adam(stepped.parameters(), **settings)
    generator = th.Generator().manual_seed(1)
    for _ in range(3):
        with (
            FlatAdam(reference_optimizer, list(reference.parameters()), fused=True) as reference_step,
            FlatAdam(stepped_optimizer, list(stepped.parameters()), fused=True) as step,
        ):
            for _ in range(7):
                inputs, targets = th.randn(32, 5, generator=generator), th.randn(32, 3, generator=generator)
                norm = _graph_update(step, stepped, inputs, targets)
                assert norm.item() == pytest.approx(
                    _update(reference_step, reference, inputs, targets).item(), rel=1e-5
                )
    for p, q in zip(stepped.parameters(), reference.parameters(), strict=True):
        assert th.allclose(p, q, rtol=1e-5, atol=1e-6)
        assert th.allclose(p.grad, q.grad, rtol=1e-5, atol=1e-7)  # the last clipped gradient, as torch leaves it
    assert {float(s["step"]) for s in stepped_optimizer.state_dict()["state"].values()} == {21.0}


def test_the_graphs_own_step_writes_nothing_when_the_loss_is_not_finite():
    network = _network()
    optimizer = th.optim.Adam(network.parameters(), lr=1e-3)
    inputs, targets = th.randn(32, 5), th.randn(32, 3)
    with FlatAdam(optimizer, list(network.parameters()), fused=True) as step:
        _graph_update(step, network, inputs, targets)
        before = copy.deepcopy(optimizer.state_dict()["state"]), [p.detach().clone() for p in network.parameters()]
        targets[0, 0] = float("nan")
        assert not th.isfinite(_graph_update(step, network, inputs, targets))
        for p, kept in zip(network.parameters(), before[1], strict=True):
            assert th.equal(p, kept)
        for index, state in optimizer.state_dict()["state"].items():
            assert th.equal(state["exp_avg"], before[0][index]["exp_avg"])
            assert th.equal(state["exp_avg_sq"], before[0][index]["exp_avg_sq"])
