"""compile=True, the fast path: the same update as the default path up to float rounding."""

from dataclasses import dataclass
from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from sb3_contrib.common.envs import InvalidActionEnvDiscrete
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from sb3_ppo_variants import MaskablePPOVariant, PPOVariant, RecurrentPPOVariant
from sb3_ppo_variants.common.errors import HyperparameterError, TrainingDivergedError
from sb3_ppo_variants.common.validation import Scaled
from sb3_ppo_variants.components import (
    CISPOSurrogate,
    ClippedSurrogate,
    EntropyBonus,
    EWMAProximalSurrogate,
    KLAdaptiveLearningRate,
    KLPenalty,
    LogProbClippedSurrogate,
    MirrorDescentPenalty,
    OuterUpdate,
    SoftClipSurrogate,
    TrustRegionGuidedSurrogate,
    ValueLoss,
    ValueNormalization,
    VTraceAdvantages,
)
from sb3_ppo_variants.components.protocol import LossComponent, LossTerm
from sb3_ppo_variants.update.compiled import BACKWARD, ONE_GRAPH, compile_options
from tests.conftest import ACTION_SPACES, DictEnv, ImageEnv, SpaceEnv

# Tracing is what differs between policy types; "aot_eager" traces as the default backend does
# without building C++ kernels, which keeps these tests quick. One case builds them for real.
TRACE_ONLY = {"backend": "aot_eager"}
KL_AND_EARLY_STOP = [
    ClippedSurrogate(),
    ValueLoss(),
    EntropyBonus(coef=0.01),
    KLPenalty(),
    {"name": "kl_early_stop", "target": 0.05, "estimator": "exact"},
]


class MaskedCartPole(gym.Wrapper):
    """CartPole with Box observations and the second action masked every third step."""

    def __init__(self):
        super().__init__(gym.make("CartPole-v1"))
        self.steps = 0

    def step(self, action):
        self.steps += 1
        return self.env.step(action)

    def action_masks(self):
        return np.array([True, self.steps % 3 != 0])


def _space_env(space: str):
    def make():
        SpaceEnv.observation_space.seed(0)  # a class attribute: seeded here so both runs see one rollout
        return make_vec_env(lambda: SpaceEnv(ACTION_SPACES[space]), n_envs=2, seed=0)

    return make


CASES = {
    "discrete-inductor": (PPOVariant, "MlpPolicy", lambda: make_vec_env("CartPole-v1", n_envs=2, seed=0), True, {}),
    "box-gsde": (
        PPOVariant,
        "MlpPolicy",
        lambda: make_vec_env("Pendulum-v1", n_envs=2, seed=0),
        TRACE_ONLY,
        {"use_sde": True},
    ),
    "multidiscrete": (PPOVariant, "MlpPolicy", _space_env("MultiDiscrete"), TRACE_ONLY, {}),
    "multibinary": (PPOVariant, "MlpPolicy", _space_env("MultiBinary"), TRACE_ONLY, {}),
    "dict-observations": (
        PPOVariant,
        "MultiInputPolicy",
        lambda: make_vec_env(DictEnv, n_envs=2, seed=0),
        TRACE_ONLY,
        {},
    ),
    "cnn": (PPOVariant, "CnnPolicy", lambda: make_vec_env(ImageEnv, n_envs=2, seed=0), TRACE_ONLY, {}),
    "exact-kl-and-early-stop": (
        PPOVariant,
        "MlpPolicy",
        lambda: make_vec_env("CartPole-v1", n_envs=2, seed=0),
        TRACE_ONLY,
        {"loss": KL_AND_EARLY_STOP},
    ),
    "exact-kl-penalty": (
        PPOVariant,
        "MlpPolicy",
        lambda: make_vec_env("CartPole-v1", n_envs=2, seed=0),
        TRACE_ONLY,
        {"loss": [ClippedSurrogate(), ValueLoss(), KLPenalty()]},
    ),
    "soft-clip-and-adaptive-learning-rate": (
        PPOVariant,
        "MlpPolicy",
        lambda: make_vec_env("Pendulum-v1", n_envs=2, seed=0),
        TRACE_ONLY,
        {"loss": [SoftClipSurrogate(temperature_negative=1.05), ValueLoss(), KLAdaptiveLearningRate()]},
    ),
    "cispo-and-value-normalization": (
        PPOVariant,
        "MlpPolicy",
        lambda: make_vec_env("CartPole-v1", n_envs=2, seed=0),
        TRACE_ONLY,
        {"loss": [CISPOSurrogate(), ValueLoss(clip_range=0.2, error="l1"), ValueNormalization()]},
    ),
    "copg-mdpo-and-vtrace": (
        PPOVariant,
        "MlpPolicy",
        lambda: make_vec_env("Pendulum-v1", n_envs=2, seed=0),
        TRACE_ONLY,
        {
            "loss": [
                LogProbClippedSurrogate(),
                ValueLoss(),
                MirrorDescentPenalty(),
                VTraceAdvantages(),
            ]
        },
    ),
    "ewma-proximal-policy-and-outer-update": (
        PPOVariant,
        "MlpPolicy",
        lambda: make_vec_env("Pendulum-v1", n_envs=2, seed=0),
        TRACE_ONLY,
        {"loss": [EWMAProximalSurrogate(), ValueLoss(), OuterUpdate(outer_learning_rate=1.5)]},
    ),
    "trust-region-guided": (
        PPOVariant,
        "MlpPolicy",
        lambda: make_vec_env("CartPole-v1", n_envs=2, seed=0),
        TRACE_ONLY,
        {"loss": [TrustRegionGuidedSurrogate(), ValueLoss()]},
    ),
    "two-learning-rates": (
        PPOVariant,
        "MlpPolicy",
        lambda: make_vec_env("CartPole-v1", n_envs=2, seed=0),
        TRACE_ONLY,
        {"vf_learning_rate": 1e-3},
    ),
    "masked-box-observations": (
        MaskablePPOVariant,
        "MlpPolicy",
        lambda: make_vec_env(MaskedCartPole, n_envs=2, seed=0),
        TRACE_ONLY,
        {},
    ),
    "masked-discrete-observations": (
        MaskablePPOVariant,
        "MlpPolicy",
        lambda: make_vec_env(lambda: InvalidActionEnvDiscrete(dim=10, n_invalid_actions=3), n_envs=2, seed=0),
        TRACE_ONLY,
        {},
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_compiled_update_equals_the_default_update_up_to_rounding(case):
    """The same rollout, one minibatch, one update: parameters and statistics agree."""
    cls, policy, make_env, compile, kwargs = CASES[case]

    def one_update(compile):
        model = cls(policy, make_env(), n_steps=64, batch_size=128, n_epochs=1, seed=0, compile=compile, **kwargs)
        return model.learn(128)

    # Early stopping needs the minibatch, so the one graph is never tried; SB3 reads numpy values
    # as tensors in two others (the image check, a Discrete observation's n), and torch.func
    # cannot run a second policy (PPO-EWMA's average) inside the graph: those fall back.
    falls_back = case in ("cnn", "masked-discrete-observations", "ewma-proximal-policy-and-outer-update")
    path = BACKWARD if falls_back or case == "exact-kl-and-early-stop" else ONE_GRAPH
    default = one_update(False)
    if falls_back:
        with pytest.warns(UserWarning, match="does not compile as one graph"):
            compiled = one_update(compile)
    else:
        compiled = one_update(compile)
    before = dict(cls(policy, make_env(), n_steps=64, seed=0, **kwargs).policy.named_parameters())
    for name, parameter in compiled.policy.named_parameters():
        reference = dict(default.policy.named_parameters())[name]
        assert th.allclose(parameter, reference, rtol=1e-5, atol=1e-7), name
        assert not th.equal(parameter, before[name]) or th.equal(reference, before[name])  # it did update
    keys = ("train/loss", "train/policy_gradient_loss", "train/value_loss", "train/approx_kl", "train/clip_range")
    for key in (key for key in keys if key in default.logger.name_to_value or key != "train/clip_range"):
        assert compiled.logger.name_to_value[key] == pytest.approx(
            default.logger.name_to_value[key], rel=1e-4, abs=1e-6
        )
    assert compiled.compiled_path == path  # one graph: the gradient came from torch.func
    for parameter in compiled.policy.parameters():  # p.grad is left as torch leaves it
        assert parameter.grad is not None and parameter.grad.shape == parameter.shape


@pytest.mark.filterwarnings("ignore:You have specified a mini-batch size")
def test_compiled_training_runs_many_updates_and_uneven_minibatches():
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = PPOVariant("MlpPolicy", env, n_steps=48, batch_size=40, seed=0, compile=TRACE_ONLY)  # 40 + 40 + 16
    model.learn(96 * 3)
    assert model._n_updates == 3 * 10
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


def test_more_compiled_models_in_one_process_than_dynamos_recompile_limit():
    """A tuning study makes many models in one process; each one's update compiles as one graph."""
    for seed in range(th._dynamo.config.recompile_limit + 2):
        model = PPOVariant("MlpPolicy", "CartPole-v1", n_steps=32, n_epochs=1, seed=seed, compile=TRACE_ONLY)
        model.learn(32)
        assert model.compiled_path == ONE_GRAPH


def test_a_schedule_is_an_input_of_the_one_graph():
    """Schedules are resolved before the components run, and their values enter the graph as
    tensors, so a linear clip range (the Zoo's lin_0.2) compiles once for every call."""
    graphs = []
    # Adam's eps at 1e-3: with SB3's 1e-5, a bias whose gradient is ~1e-6 moves by lr * m / (sqrt(v) + eps),
    # which turns rounding differences in m into steps of 1e-5 (seen on one machine); the larger eps keeps
    # the comparison at rounding level (1.5e-8 there) without changing what the graph computes.
    schedule = {"clip_range": lambda progress: 0.2 * progress, "policy_kwargs": {"optimizer_kwargs": {"eps": 1e-3}}}
    compiled = _train_three_calls(None, _counting_backend(graphs), **schedule)
    default = _train_three_calls(None, False, **schedule)
    assert len(graphs) == 1 and compiled.compiled_path == ONE_GRAPH
    clip_range = compiled.logger.name_to_value["train/clip_range"]
    assert clip_range == pytest.approx(0.2 * compiled._current_progress_remaining)
    for parameter, reference in zip(compiled.policy.parameters(), default.policy.parameters(), strict=True):
        assert th.allclose(parameter, reference, rtol=1e-5, atol=1e-7)


@dataclass
class ProgressWeighted(LossComponent):
    """A value term weighted by progress_remaining, read straight from the minibatch."""

    name: ClassVar[str] = "progress_weighted"

    def __call__(self, batch):
        return LossTerm(batch.progress_remaining * batch.mean((batch.returns - batch.values) ** 2))


def test_a_component_that_reads_progress_remaining_takes_the_one_graph():
    graphs = []
    loss = [ClippedSurrogate(), ProgressWeighted()]
    compiled, default = _train_three_calls(loss, _counting_backend(graphs)), _train_three_calls(loss, False)
    assert len(graphs) == 1 and compiled.compiled_path == ONE_GRAPH
    for parameter, reference in zip(compiled.policy.parameters(), default.policy.parameters(), strict=True):
        assert th.allclose(parameter, reference, rtol=1e-5, atol=1e-7)


def _train_three_calls(loss, compile, callback=None, **kwargs):
    env = make_vec_env("CartPole-v1", n_envs=1, seed=0)
    model = PPOVariant(
        "MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0, loss=loss, compile=compile, **kwargs
    )
    return model.learn(32 * 3, callback=callback)


def _counting_backend(graphs):
    def backend(graph_module, example_inputs):
        graphs.append(graph_module)
        return graph_module.forward

    return {"backend": backend}


def test_an_adaptive_kl_coefficient_is_an_input_of_the_one_graph_from_the_first_call():
    """The coefficient changes every train() call; baked in as a constant it would mean a new
    graph every call. KLPenalty adapts it in after_train, so it is a graph input from the start."""
    loss = [ClippedSurrogate(), ValueLoss(), {"name": "kl_penalty", "target": 1e-6}]  # exact KL: the old policy
    # Dynamo guards on torch's KL registry cache, empty until a process's first kl_divergence:
    # filled here, as an earlier test would, so the count does not depend on the tests selected.
    uniform = th.distributions.Categorical(logits=th.zeros(1, 2))
    th.distributions.kl_divergence(uniform, uniform)
    graphs = []
    compiled, default = _train_three_calls(loss, _counting_backend(graphs)), _train_three_calls(loss, False)
    assert len(graphs) == 1 and compiled.compiled_path == ONE_GRAPH
    assert compiled.loss[2].coef == default.loss[2].coef == pytest.approx(0.2 / 2**3)  # a plain float, halved
    for parameter, reference in zip(compiled.policy.parameters(), default.policy.parameters(), strict=True):
        assert th.allclose(parameter, reference, rtol=1e-5, atol=1e-7)


@dataclass
class Shrinking(LossComponent):
    """A value-loss term whose float weight after_train halves, with nothing declared."""

    weight: float = 1.0
    name: ClassVar[str] = "shrinking"

    def __call__(self, batch):
        return LossTerm(self.weight * batch.mean((batch.returns - batch.values) ** 2))

    def after_train(self, stats):
        self.weight /= 2
        return {}


@dataclass(slots=True)
class SlottedShrinking(Shrinking):
    """The same, its fields in slots (where ``vars()`` does not see them)."""

    name: ClassVar[str] = "slotted_shrinking"


@pytest.mark.parametrize("component", [Shrinking, SlottedShrinking])
def test_a_float_field_that_after_train_changes_is_a_graph_input_from_the_first_call(component):
    graphs = []
    compiled = _train_three_calls([ClippedSurrogate(), component()], _counting_backend(graphs))
    default = _train_three_calls([ClippedSurrogate(), component()], False)
    assert len(graphs) == 1 and compiled.compiled_path == ONE_GRAPH
    assert compiled.loss[1].weight == 1.0 / 2**3
    for parameter, reference in zip(compiled.policy.parameters(), default.policy.parameters(), strict=True):
        assert th.allclose(parameter, reference, rtol=1e-5, atol=1e-7)


@pytest.mark.filterwarnings("ignore:You have specified a mini-batch size")
def test_uneven_minibatches_over_several_epochs_and_calls_update_as_the_default_path():
    """Only the first minibatch of a call pays the guards' evaluation; one of another size (the
    rollout's last) pays them too, so it meets the graph of its own shape."""
    optimizer = {"policy_kwargs": {"optimizer_kwargs": {"eps": 1e-3}}}  # see test_a_schedule_is_an_input...

    def train(compile):
        env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
        model = PPOVariant(
            "MlpPolicy", env, n_steps=24, batch_size=20, n_epochs=2, seed=0, compile=compile, **optimizer
        )
        return model.learn(48 * 3)  # minibatches of 20, 20 and 8 rows

    compiled, default = train(TRACE_ONLY), train(False)
    assert compiled.compiled_path == ONE_GRAPH
    for parameter, reference in zip(compiled.policy.parameters(), default.policy.parameters(), strict=True):
        assert th.allclose(parameter, reference, rtol=1e-5, atol=1e-7)


@dataclass
class HalvedEveryStep(LossComponent):
    """A value-loss term whose weight after_step halves: what the graph reads changes mid-call."""

    weight: float = 1.0
    name: ClassVar[str] = "halved_every_step"

    def __call__(self, batch):
        return LossTerm(self.weight * batch.mean((batch.returns - batch.values) ** 2))

    def after_step(self, context):
        self.weight /= 2


def test_a_field_that_after_step_changes_mid_call_reaches_the_graph():
    def train(compile):
        env = make_vec_env("CartPole-v1", n_envs=1, seed=0)
        loss = [ClippedSurrogate(), HalvedEveryStep()]
        model = PPOVariant("MlpPolicy", env, n_steps=32, batch_size=8, n_epochs=1, seed=0, loss=loss, compile=compile)
        return model.learn(32)

    compiled, default = train(TRACE_ONLY), train(False)
    assert compiled.loss[1].weight == default.loss[1].weight == 1.0 / 2**4
    for parameter, reference in zip(compiled.policy.parameters(), default.policy.parameters(), strict=True):
        assert th.allclose(parameter, reference, rtol=1e-5, atol=1e-7)


class RaiseEntropy(BaseCallback):
    """Sets model.ent_coef after each rollout, as SB3 users schedule it by hand."""

    def _on_step(self):
        return True

    def _on_rollout_end(self):
        self.model.ent_coef = 0.01 * self.model.num_timesteps / 32


def test_a_linked_attribute_a_callback_changes_is_a_graph_input_from_the_first_call():
    loss = [ClippedSurrogate(), ValueLoss(), EntropyBonus()]
    graphs = []
    compiled = _train_three_calls(loss, _counting_backend(graphs), callback=RaiseEntropy())
    default = _train_three_calls(loss, False, callback=RaiseEntropy())
    assert len(graphs) == 1 and compiled.compiled_path == ONE_GRAPH  # the new ent_coef compiles nothing
    assert compiled.loss[2].coef == default.loss[2].coef == pytest.approx(0.03)
    for parameter, reference in zip(compiled.policy.parameters(), default.policy.parameters(), strict=True):
        assert th.allclose(parameter, reference, rtol=1e-5, atol=1e-7)


@dataclass
class CallCounter(LossComponent):
    """A term that reads a float inside a tuple that after_train changes: only plain float fields
    become graph inputs, so this is a new constant for dynamo every call."""

    calls: tuple[float, ...] = (0.0,)
    name: ClassVar[str] = "call_counter"

    def __call__(self, batch):
        return LossTerm(batch.mean(batch.values) * 0.0 * self.calls[0])

    def after_train(self, stats):
        self.calls = (self.calls[0] + 1.0,)
        return {}


def test_a_field_that_changes_every_call_ends_on_autograd_with_a_warning_and_keeps_training():
    """Past dynamo's recompile limit the one-graph path cannot compile, and scoring moves to backward()."""
    env = make_vec_env("CartPole-v1", n_envs=1, seed=0)
    loss = [ClippedSurrogate(), ValueLoss(), CallCounter()]
    model = PPOVariant("MlpPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0, loss=loss, compile=TRACE_ONLY)
    with pytest.warns(UserWarning, match="does not compile as one graph"):
        model.learn(16 * (th._dynamo.config.recompile_limit + 3))
    assert model.compiled_path == BACKWARD
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


def test_compiled_model_saves_loads_and_compiles_again(tmp_path):
    model = PPOVariant("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, n_epochs=2, seed=0, compile=TRACE_ONLY)
    model.learn(64).save(tmp_path / "model.zip")
    loaded = PPOVariant.load(tmp_path / "model.zip", env=make_vec_env("CartPole-v1", n_envs=1, seed=1))
    assert loaded.compile == TRACE_ONLY and loaded.compiled_path is None
    loaded.learn(64)
    assert loaded.compiled_path == ONE_GRAPH and np.isfinite(loaded.logger.name_to_value["train/loss"])


@dataclass
class NaNTerm(LossComponent):
    """A term that is NaN."""

    name: ClassVar[str] = "nan_term"

    def __call__(self, batch):
        return LossTerm(batch.mean(batch.values) * th.nan)


def test_a_diverging_compiled_run_stops_with_the_weights_it_had():
    model = PPOVariant("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, seed=0, compile=TRACE_ONLY)
    model.loss = [*model.loss, NaNTerm()]
    before = {k: v.clone() for k, v in model.policy.state_dict().items()}
    with pytest.raises(TrainingDivergedError, match="nan_term"):
        model.learn(64)
    assert all(th.equal(before[k], v) for k, v in model.policy.state_dict().items())


@pytest.mark.parametrize("value", ["yes", 1, {1: "inductor"}])
def test_an_invalid_compile_value_is_refused(value):
    with pytest.raises(HyperparameterError, match=r"compile=.* is invalid: accepted values are True, False"):
        PPOVariant("MlpPolicy", "CartPole-v1", compile=value)


def test_recurrent_policies_refuse_compile_and_say_why():
    with pytest.raises(HyperparameterError, match=r"invalid for RecurrentPPOVariant: accepted values are False"):
        RecurrentPPOVariant("MlpLstmPolicy", "CartPole-v1", compile=True)


def test_compile_without_a_cpp_compiler_is_refused_at_construction(monkeypatch):
    monkeypatch.setattr("shutil.which", lambda name: None)
    with pytest.raises(HyperparameterError, match=r"needs a C\+\+ compiler .* accepted values are compile=False"):
        PPOVariant("MlpPolicy", "CartPole-v1", compile=True)
    PPOVariant("MlpPolicy", "CartPole-v1", compile=TRACE_ONLY)  # a backend that builds nothing needs none


def test_compile_options_build_one_cpp_library_per_graph_unless_told_otherwise():
    ours = {"cpp.vec_isa_ok": True, "cpp_wrapper": True, "cpp_cache_precompile_headers": False}
    assert compile_options(True) == {"options": ours}
    assert compile_options({"options": {"cpp_wrapper": False}}) == {"options": {**ours, "cpp_wrapper": False}}
    assert compile_options({"mode": "max-autotune-no-cudagraphs"}) == {"mode": "max-autotune-no-cudagraphs"}
    assert compile_options(TRACE_ONLY) == TRACE_ONLY


def test_a_hook_that_makes_state_in_before_train_is_seen_by_the_graph_of_the_first_call():
    """PPO-EWMA builds its average policy in before_train; with a clip range that is a graph input
    (a schedule, a linked attribute) the graph's copy of the component must be made after that."""
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    schedule = Scaled(0.2, 1.0)  # a schedule with a plain form
    model = PPOVariant(
        "MlpPolicy", env, variant="ppo-ewma", clip_range=schedule, n_steps=32, batch_size=32, n_epochs=2,
        compile=True, seed=0, device="cpu",
    )  # fmt: skip
    model.learn(128)
    assert model.compiled_path is not None and model.num_timesteps == 128  # before, the first call failed
