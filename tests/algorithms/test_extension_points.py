"""The training loop's extension points (TrainingHook), each used by a tiny component, on all three algorithms."""

import copy
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest
import torch as th
from sb3_contrib.common.envs import InvalidActionEnvDiscrete
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from sb3_ppo_variants import (
    HyperparameterError,
    MaskablePPOVariant,
    PPOVariant,
    RecurrentPPOVariant,
    TrainingDivergedError,
)
from sb3_ppo_variants.components import ClippedSurrogate, LossComponent, LossTerm, ValueLoss
from tests.conftest import FAST, _rng_state, _set_rng_state, parameters_equal

ALGORITHMS = {
    "ppo": (PPOVariant, "MlpPolicy", lambda: make_vec_env("CartPole-v1", n_envs=2, seed=0)),
    "masked": (
        MaskablePPOVariant,
        "MlpPolicy",
        lambda: make_vec_env(lambda: InvalidActionEnvDiscrete(dim=10, n_invalid_actions=3), n_envs=2, seed=0),
    ),
    "recurrent": (RecurrentPPOVariant, "MlpLstmPolicy", lambda: make_vec_env("CartPole-v1", n_envs=2, seed=0)),
}
CALLS = 3  # train() calls: FAST rollouts of 64 steps on 2 environments
MINIBATCHES = 64 * 2 // FAST["batch_size"]


def _model(algorithm, *extra, **kwargs):
    cls, policy, make_env = ALGORITHMS[algorithm]
    return cls(policy, make_env(), loss=[ClippedSurrogate(), ValueLoss(), *extra], **{**FAST, **kwargs})


@dataclass
class CountHooks(LossComponent):
    """Adds nothing to the loss; records when each hook runs."""

    name: ClassVar[str] = "count_hooks"

    def __post_init__(self):
        self.calls: list[tuple] = []

    def __call__(self, batch):
        return LossTerm(None)

    def before_train(self, context):
        self.calls.append(("before_train", context.rollout_buffer.buffer_size * context.rollout_buffer.n_envs))

    def before_epoch(self, context, epoch):
        self.calls.append(("before_epoch", epoch))

    def after_step(self, context):
        self.calls.append(("after_step",))

    def extra_phase(self, context):
        self.calls.append(("extra_phase",))
        return {}

    def after_train(self, stats):
        self.calls.append(("after_train", "value_loss" in stats))
        return {}


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_the_loop_calls_every_hook_in_order(algorithm):
    model = _model(algorithm, CountHooks())
    model.learn(128 * CALLS)
    one_call = [
        ("before_train", 128),
        *[entry for epoch in range(FAST["n_epochs"]) for entry in [("before_epoch", epoch)] + [("after_step",)] * 4],
        ("extra_phase",),
        ("after_train", True),
    ]
    assert MINIBATCHES == 4
    assert model.loss[2].calls == one_call * CALLS


@dataclass
class ZeroAdvantages(LossComponent):
    """Before each epoch, sets every advantage of the rollout to zero: the actor gets no gradient."""

    name: ClassVar[str] = "zero_advantages"

    def __call__(self, batch):
        return LossTerm(None)

    def before_epoch(self, context, epoch):
        context.rollout_buffer.advantages[:] = 0.0


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_before_epoch_can_rewrite_the_advantages_the_loss_sees(algorithm):
    model = _model(algorithm, ZeroAdvantages(), normalize_advantage=False)
    actor = {k: v.clone() for k, v in model.policy.action_net.state_dict().items()}
    critic = {k: v.clone() for k, v in model.policy.value_net.state_dict().items()}
    model.learn(128)
    assert all(th.equal(actor[k], v) for k, v in model.policy.action_net.state_dict().items())
    assert not all(th.equal(critic[k], v) for k, v in model.policy.value_net.state_dict().items())


@dataclass
class WeightAverage(LossComponent):
    """An exponential moving average of the policy's weights, moved after every optimizer step."""

    decay: float = 0.9
    name: ClassVar[str] = "weight_average"

    def __post_init__(self):
        self.average: dict[str, th.Tensor] = {}
        self.steps = th.zeros(())

    def __call__(self, batch):
        return LossTerm(None)

    def after_step(self, context):
        for key, value in context.policy.state_dict().items():
            if key not in self.average:
                self.average[key] = value.detach().clone()
            else:
                self.average[key].lerp_(value, 1 - self.decay)
        self.steps += 1


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_after_step_sees_every_update_and_keeps_tensor_state(algorithm):
    model = _model(algorithm, WeightAverage())
    model.learn(128 * CALLS)
    average = model.loss[2]
    assert average.steps.item() == CALLS * FAST["n_epochs"] * MINIBATCHES
    weights = model.policy.state_dict()
    key = "value_net.weight"
    assert not th.equal(average.average[key], weights[key])  # it lags behind the weights
    assert th.allclose(average.average[key], weights[key], atol=0.1)


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_tensor_state_is_saved_and_loaded_exactly(algorithm, tmp_path):
    model = _model(algorithm, WeightAverage()).learn(128)
    model.save(tmp_path / "model.zip")
    loaded = ALGORITHMS[algorithm][0].load(tmp_path / "model.zip", device="cpu")
    assert th.equal(loaded.loss[2].steps, model.loss[2].steps)
    assert model.loss[2].average.keys() == loaded.loss[2].average.keys()
    for key, tensor in model.loss[2].average.items():
        assert th.equal(loaded.loss[2].average[key], tensor), key


# RecurrentPPO does not save its last LSTM states, so its resumed rollouts differ whatever the loss.
@pytest.mark.parametrize("algorithm", ["ppo", "masked"])
def test_tensor_state_survives_save_load_and_continued_training_bit_for_bit(algorithm, tmp_path):
    model = _model(algorithm, WeightAverage()).learn(256)
    model.save(tmp_path / "model.zip")
    env_at_save, rng_at_save = copy.deepcopy(model.get_env()), _rng_state()
    model.learn(256, reset_num_timesteps=False)

    cls = ALGORITHMS[algorithm][0]
    resumed = cls.load(tmp_path / "model.zip", env=env_at_save, device="cpu", force_reset=False)
    assert resumed.loss[2].steps.item() == 2 * FAST["n_epochs"] * MINIBATCHES
    _set_rng_state(rng_at_save)
    resumed.learn(256, reset_num_timesteps=False)

    assert parameters_equal(model.policy, resumed.policy)
    assert resumed.loss[2].steps.item() == model.loss[2].steps.item()
    for key, tensor in model.loss[2].average.items():
        assert th.equal(resumed.loss[2].average[key], tensor), key


@dataclass
class HalveLearningRate(LossComponent):
    """Trains at half the scheduled learning rate."""

    name: ClassVar[str] = "halve_learning_rate"

    def __call__(self, batch):
        return LossTerm(None)

    def learning_rate(self, learning_rate):
        return learning_rate / 2


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_learning_rate_adjusts_every_parameter_group(algorithm):
    two_groups = {"vf_learning_rate": 1e-3}
    model = _model(algorithm, HalveLearningRate(), learning_rate=lambda progress: 4e-4 * progress, **two_groups)
    model.learn(128)
    progress = model._current_progress_remaining
    assert [group["lr"] for group in model.policy.optimizer.param_groups] == pytest.approx([2e-4 * progress, 5e-4])
    assert model.logger.name_to_value["train/learning_rate"] == pytest.approx(2e-4 * progress)


@dataclass
class AffineValues(LossComponent):
    """The critic predicts (v - shift) / scale for a value v in return units; records what the loss sees."""

    scale: float = 10.0
    shift: float = 3.0
    name: ClassVar[str] = "affine_values"

    def __post_init__(self):
        self.seen: list[tuple[th.Tensor, th.Tensor]] = []

    def __call__(self, batch):
        def real(x):  # recurrent minibatches are padded
            return (x if batch.mask is None else x[batch.mask]).detach().clone()

        self.seen.append((real(batch.returns), real(batch.old_values)))
        return LossTerm(None)

    def normalize_values(self, values):
        return (values - self.shift) / self.scale

    def denormalize_values(self, values):
        return values * self.scale + self.shift


class FirstRollout(BaseCallback):
    """Keeps the first rollout's values and returns, as SB3's buffer holds them."""

    def _on_step(self):
        return True

    def _on_rollout_end(self):
        if not hasattr(self, "values"):
            self.values = self.model.rollout_buffer.values.copy()
            self.returns = self.model.rollout_buffer.returns.copy()


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_a_value_transform_reaches_the_rollout_gae_and_the_loss(algorithm):
    plain, transformed = FirstRollout(), FirstRollout()
    _model(algorithm).learn(128, callback=plain)
    model = _model(algorithm, AffineValues())
    model.learn(128, callback=transformed)
    # Same seed, same weights at the first rollout: the buffer holds the critic's output in return units.
    np.testing.assert_allclose(transformed.values, 10 * plain.values + 3, rtol=1e-5, atol=1e-4)
    assert not np.allclose(transformed.returns, plain.returns)  # GAE ran on the transformed values
    returns, old_values = (th.cat(tensors) for tensors in zip(*model.loss[2].seen[:MINIBATCHES], strict=True))
    # The loss sees normalised targets: the first epoch covers the rollout once, in some order.
    expected = np.sort((transformed.returns.flatten() - 3) / 10)
    np.testing.assert_allclose(np.sort(returns.numpy()), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.sort(old_values.numpy()), np.sort(plain.values.flatten()), rtol=1e-4, atol=1e-5)


def test_two_value_transforms_are_refused():
    with pytest.raises(HyperparameterError, match="both transform value predictions"):
        PPOVariant("MlpPolicy", "CartPole-v1", loss=[ClippedSurrogate(), AffineValues(), AffineValues()])


@dataclass
class LearningRateField(LossComponent):
    learning_rate: float = 1e-3  # would hide the learning_rate hook
    name: ClassVar[str] = "learning_rate_field"

    def __call__(self, batch):
        return LossTerm(None)


def test_a_field_named_like_a_hook_is_refused_with_its_name():
    with pytest.raises(HyperparameterError, match=r"field named like a method of LossComponent \(learning_rate\)"):
        PPOVariant("MlpPolicy", "CartPole-v1", loss=[ClippedSurrogate(), LearningRateField()])


@dataclass
class RewardDistillation(LossComponent):
    """Keeps every rollout's rewards; every ``every`` calls, pulls the value head's bias towards
    their mean in a few steps of its own."""

    every: int = 2
    steps: int = 3
    name: ClassVar[str] = "reward_distillation"

    def __post_init__(self):
        self.kept: list[np.ndarray] = []
        self.calls = 0
        self.phases: list[tuple[int, float]] = []  # (samples used, target)

    def __call__(self, batch):
        return LossTerm(None)

    def before_train(self, context):
        self.kept.append(context.rollout_buffer.rewards.copy())

    def extra_phase(self, context):
        self.calls += 1
        if self.calls % self.every:
            return {}
        kept = np.concatenate(self.kept)
        target = float(kept.mean())
        bias = context.policy.value_net.bias
        for _ in range(self.steps):
            context.step(100.0 * ((bias - target) ** 2).sum())
        self.phases.append((kept.size, target))
        self.kept.clear()
        return {"distillation_target": target}


@pytest.mark.parametrize("algorithm", list(ALGORITHMS))
def test_an_extra_phase_every_n_calls_over_kept_rollouts(algorithm):
    model = _model(algorithm, RewardDistillation(every=2))
    model.learn(128 * 2)  # the second call runs the phase over both rollouts
    [(samples, target)] = model.loss[2].phases
    assert samples == 2 * 128 and model.logger.name_to_value["train/distillation_target"] == target
    without = _model(algorithm).learn(128 * 2)
    assert not parameters_equal(model.policy, without.policy)


@dataclass
class DivergingPhase(RewardDistillation):
    name: ClassVar[str] = "diverging_phase"

    def extra_phase(self, context):
        context.step(context.policy.value_net.bias.sum() * th.nan)
        return {}


def test_an_extra_phase_that_diverges_stops_before_its_step():
    model = _model("ppo", DivergingPhase())
    with pytest.raises(TrainingDivergedError, match="an extra phase"):
        model.learn(128)
