"""A diverging update stops with an error that says where, before NaN reaches the weights."""

import re
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch as th

from sb3_ppo_variants import PPOVariant, TrainingDivergedError
from sb3_ppo_variants.components import LOG_RATIO_LIMIT, ClippedSurrogate, LossComponent, LossTerm, ValueLoss
from tests.conftest import FAST


@dataclass
class ExplodesOnSecondUpdate(LossComponent):
    """A test component whose term becomes NaN after the first minibatch."""

    name: ClassVar[str] = "explodes_on_second_update"
    calls: int = 0

    def __call__(self, batch):
        self.calls += 1
        scale = float("nan") if self.calls > 1 else 0.0
        return LossTerm(scale * batch.values.mean())


def test_nan_term_stops_training_naming_component_and_update_with_finite_weights():
    model = PPOVariant(
        "MlpPolicy", "CartPole-v1", loss=[ClippedSurrogate(), ValueLoss(), ExplodesOnSecondUpdate()], **FAST
    )
    message = (
        "Non-finite value from loss component(s) explodes_on_second_update in train() "
        "at update 0 (epoch 0, minibatch 1)"
    )
    with pytest.raises(TrainingDivergedError, match=re.escape(message)):
        model.learn(64)
    assert all(th.isfinite(p).all() for p in model.policy.parameters())


def test_log_ratio_is_clamped_so_the_ratio_cannot_overflow():
    model = PPOVariant("MlpPolicy", "CartPole-v1", **FAST).learn(64)
    model.rollout_buffer.log_probs[:2] = [[-1e4], [1e4]]  # old probabilities of ~0 and "~e^10000"
    batch = model.evaluate_minibatch(next(model.rollout_buffer.get(64)))
    assert th.isfinite(batch.ratio).all() and batch.log_ratio.abs().max() == LOG_RATIO_LIMIT
    assert th.isfinite(ClippedSurrogate()(batch).loss)
