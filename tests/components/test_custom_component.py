"""A user-written component works without subclassing PPOVariant (the README's example)."""

from dataclasses import dataclass
from typing import ClassVar

import torch as th
from stable_baselines3.common.env_util import make_vec_env

from sb3_ppo_variants import PPOVariant
from sb3_ppo_variants.components import ClippedSurrogate, EntropyBonus, LossComponent, LossTerm, ValueLoss
from tests.conftest import FAST


@dataclass
class ValueHeadL2(LossComponent):
    """L2 penalty on the value head's weights: ``coef * sum(w^2)``."""

    coef: float = 1e-3
    name: ClassVar[str] = "value_head_l2"

    def __call__(self, batch):
        penalty = sum((p**2).sum() for p in batch.policy.value_net.parameters())
        return LossTerm(self.coef * penalty, {"value_head_l2": penalty})


def test_custom_component_trains_logs_and_round_trips(tmp_path):
    model = PPOVariant(
        "MlpPolicy",
        "CartPole-v1",
        loss=[ClippedSurrogate(), ValueLoss(), EntropyBonus(coef=0.01), ValueHeadL2(coef=0.01)],
        **FAST,
    ).learn(128)
    assert model.logger.name_to_value["train/value_head_l2"] > 0
    model.save(tmp_path / "model.zip")
    loaded = PPOVariant.load(tmp_path / "model.zip", device="cpu")
    assert isinstance(loaded.loss[3], ValueHeadL2) and loaded.loss[3].coef == 0.01


def test_custom_component_by_name_as_plain_data():
    model = PPOVariant(
        "MlpPolicy", "CartPole-v1", loss=["clipped_surrogate", "value", {"name": "value_head_l2"}], **FAST
    )
    assert isinstance(model.loss[2], ValueHeadL2)


def test_custom_penalty_shrinks_the_value_head():
    weights = {}
    for coef in (0.0, 10.0):
        model = PPOVariant(
            "MlpPolicy", "CartPole-v1", loss=[ClippedSurrogate(), ValueLoss(), ValueHeadL2(coef=coef)], **FAST
        )
        model.learn(128)
        weights[coef] = th.cat([p.flatten() for p in model.policy.value_net.parameters()]).norm().item()
    assert weights[10.0] < weights[0.0]


def test_the_component_takes_the_compiled_one_graph_path_with_nothing_declared():
    def three_calls(compile):
        env = make_vec_env("CartPole-v1", n_envs=1, seed=0)
        loss = [ClippedSurrogate(), ValueLoss(), ValueHeadL2(coef=0.01)]
        model = PPOVariant("MlpPolicy", env, n_steps=32, batch_size=32, n_epochs=1, seed=0, loss=loss, compile=compile)
        return model.learn(32 * 3)

    compiled, default = three_calls({"backend": "aot_eager"}), three_calls(False)
    assert compiled.compiled_path == "one graph"
    for parameter, reference in zip(compiled.policy.parameters(), default.policy.parameters(), strict=True):
        assert th.allclose(parameter, reference, rtol=1e-5, atol=1e-7)
