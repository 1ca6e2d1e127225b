"""Options beyond SB3's PPO: advantages per batch or recomputed each epoch, a value learning rate."""

import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.buffers import RolloutBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from sb3_ppo_variants import HyperparameterError, MaskablePPOVariant, ModelFileWarning, PPOVariant, RecurrentPPOVariant
from sb3_ppo_variants.components import ClippedSurrogate, LossTerm, Minibatch
from tests.conftest import FAST, DictEnv, ImageEnv, parameters_equal


class RolloutAdvantages(BaseCallback):
    """Keeps the advantages and returns the rollout computed, before train() touches them."""

    def _on_step(self) -> bool:
        return True

    def _on_rollout_end(self) -> None:
        buffer = self.model.rollout_buffer
        self.advantages = RolloutBuffer.swap_and_flatten(buffer.advantages.copy())
        self.returns = RolloutBuffer.swap_and_flatten(buffer.returns.copy())
        self.values = RolloutBuffer.swap_and_flatten(buffer.values.copy())


class RecordAdvantages(ClippedSurrogate):
    """PPO's surrogate that also keeps each minibatch's advantages."""

    def __call__(self, batch: Minibatch) -> LossTerm:
        self.__dict__.setdefault("seen", []).append(batch.advantages.detach().clone())
        return super().__call__(batch)


def test_minibatch_normalisation_by_name_is_sb3s():
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    reference = PPO("MlpPolicy", env, normalize_advantage=True, **FAST).learn(256)
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    ours = PPOVariant("MlpPolicy", env, normalize_advantage="minibatch", **FAST).learn(256)
    assert parameters_equal(ours.policy, reference.policy)


def test_batch_normalisation_normalises_the_rollout_once_not_each_minibatch():
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = PPOVariant("MlpPolicy", env, normalize_advantage="batch", **{**FAST, "n_epochs": 1})
    recorder = RecordAdvantages()
    model.loss[0] = recorder
    model.learn(128)
    seen = recorder.seen
    assert len(seen) == 4  # 128 samples in minibatches of 32
    everything = th.cat(seen)
    assert everything.mean().item() == pytest.approx(0.0, abs=1e-5)
    assert everything.std().item() == pytest.approx(1.0, abs=1e-4)
    assert max(abs(batch.mean().item()) for batch in seen) > 0.05  # minibatches keep their own offsets


def test_recomputing_with_an_unchanged_value_function_reproduces_the_rollouts_gae():
    # With a zero learning rate the value function does not move, so GAE recomputed from the
    # flattened buffer must give back exactly what the rollout computed: the reshaping is right.
    env = DictEnv()
    model = PPOVariant("MultiInputPolicy", env, recompute_advantages=True, learning_rate=0.0, **FAST)
    rollout = RolloutAdvantages()
    model.learn(64, callback=rollout)
    np.testing.assert_allclose(model.rollout_buffer.advantages, rollout.advantages, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.rollout_buffer.returns, rollout.returns, rtol=1e-5, atol=1e-5)


def test_recomputed_advantages_follow_the_trained_value_function_and_keep_old_values():
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = PPOVariant("MlpPolicy", env, recompute_advantages=True, learning_rate=3e-3, **FAST)
    rollout = RolloutAdvantages()
    model.learn(128, callback=rollout)
    buffer = model.rollout_buffer
    assert not np.allclose(buffer.advantages, rollout.advantages)
    np.testing.assert_array_equal(buffer.values, rollout.values)  # value clipping still sees the rollout's
    observations = th.as_tensor(buffer.observations)
    with th.no_grad():
        values_before_last_epoch = (buffer.returns - buffer.advantages).flatten()
        values_now = model.policy.predict_values(observations).flatten().numpy()
    # The last recomputation ran before the last epoch, so its values are not the final ones.
    assert not np.allclose(values_before_last_epoch, values_now)


def test_masked_variant_recomputes_advantages():
    from sb3_contrib.common.envs import InvalidActionEnvDiscrete

    env = InvalidActionEnvDiscrete(dim=4, n_invalid_actions=2)
    model = MaskablePPOVariant("MlpPolicy", env, recompute_advantages=True, normalize_advantage="batch", **FAST)
    model.learn(128)
    assert np.isfinite(model.rollout_buffer.advantages).all()


def test_recurrent_variant_refuses_recomputation_with_the_reason():
    with pytest.raises(HyperparameterError, match="recompute_advantages=True is invalid for RecurrentPPOVariant"):
        RecurrentPPOVariant("MlpLstmPolicy", "CartPole-v1", recompute_advantages=True)


def test_invalid_advantage_options_name_the_parameter():
    with pytest.raises(HyperparameterError, match="normalize_advantage='episode' is invalid: accepted values are one"):
        PPOVariant("MlpPolicy", "CartPole-v1", normalize_advantage="episode")
    with pytest.raises(HyperparameterError, match="recompute_advantages='yes' is invalid"):
        PPOVariant("MlpPolicy", "CartPole-v1", recompute_advantages="yes")
    with pytest.raises(HyperparameterError, match=r"vf_learning_rate=-0\.1 is invalid: accepted values are numbers"):
        PPOVariant("MlpPolicy", "CartPole-v1", vf_learning_rate=-0.1)


def _parameters(module: th.nn.Module) -> list[th.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def test_value_learning_rate_moves_only_the_value_functions_own_parameters():
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = PPOVariant("MlpPolicy", env, learning_rate=0.0, vf_learning_rate=1e-3, **FAST)
    policy = model.policy
    shared, value = policy.optimizer.param_groups
    value_ids = {id(p) for p in value["params"]}
    assert value_ids == {id(p) for p in [*policy.value_net.parameters(), *policy.mlp_extractor.value_net.parameters()]}
    assert len(shared["params"]) + len(value["params"]) == len(list(policy.parameters()))
    actor_before = _parameters(policy.action_net) + _parameters(policy.mlp_extractor.policy_net)
    critic_before = _parameters(policy.value_net)
    model.learn(128)
    actor_after = _parameters(policy.action_net) + _parameters(policy.mlp_extractor.policy_net)
    assert all(th.equal(a, b) for a, b in zip(actor_before, actor_after, strict=True))
    assert not th.equal(critic_before[0], policy.value_net.weight)
    assert model.logger.name_to_value["train/vf_learning_rate"] == 1e-3


def test_value_learning_rate_follows_its_schedule_and_survives_save_and_load(tmp_path):
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    model = PPOVariant("MlpPolicy", env, vf_learning_rate=lambda progress: 1e-3 * progress, **FAST).learn(256)
    assert model.policy.optimizer.param_groups[1]["lr"] == pytest.approx(1e-3 * model._current_progress_remaining)
    model.save(tmp_path / "model")
    loaded = PPOVariant.load(tmp_path / "model", env=env, safe=False)  # a lambda: our own file, trusted
    assert len(loaded.policy.optimizer.param_groups) == 2
    assert loaded.vf_learning_rate(0.5) == pytest.approx(5e-4)
    with pytest.warns(ModelFileWarning, match="vf_learning_rate is a Python function pickled by value"):
        safely = PPOVariant.load(tmp_path / "model", env=env)  # the default runs none of it: 0.0 in its place
    assert safely.vf_learning_rate == 0.0
    loaded.learn(128)


def test_value_learning_rate_leaves_a_shared_features_extractor_on_the_policy_rate():
    model = PPOVariant("CnnPolicy", ImageEnv(), vf_learning_rate=1e-3, **FAST)
    value_ids = {id(p) for p in model.policy.optimizer.param_groups[1]["params"]}
    assert {id(p) for p in model.policy.value_net.parameters()} <= value_ids
    assert not {id(p) for p in model.policy.features_extractor.parameters()} & value_ids


def test_recurrent_value_learning_rate_takes_the_critic_lstm():
    model = RecurrentPPOVariant("MlpLstmPolicy", "CartPole-v1", vf_learning_rate=1e-3, n_steps=32, batch_size=32)
    value_ids = {id(p) for p in model.policy.optimizer.param_groups[1]["params"]}
    assert {id(p) for p in model.policy.lstm_critic.parameters()} <= value_ids
    assert not {id(p) for p in model.policy.lstm_actor.parameters()} & value_ids
    model.learn(64)


def test_train_turns_distribution_checks_off_only_while_it_runs():
    import torch as th

    from sb3_ppo_variants import PPOVariant

    seen = []
    model = PPOVariant("MlpPolicy", "CartPole-v1", n_steps=64, batch_size=32, n_epochs=1, seed=0)
    evaluate = model.policy.evaluate_actions

    def spy(*args):
        seen.append(th.distributions.Distribution._validate_args)
        return evaluate(*args)

    model.policy.evaluate_actions = spy
    before = th.distributions.Distribution._validate_args
    model.learn(64)
    assert seen and not any(seen)  # the rollout's parameters were checked when it sampled them
    assert th.distributions.Distribution._validate_args == before
