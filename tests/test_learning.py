"""The variants learn, not only run. The Pendulum check is long and marked slow."""

import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_ppo_variants import PPOVariant
from sb3_ppo_variants.losses import ClippedSurrogate, EntropyBonus, KLPenalty, ValueLoss
from sb3_ppo_variants.variants import VARIANTS, variant_arguments

# The RL Baselines3 Zoo's tuned PPO hyperparameters for each environment.
CARTPOLE = dict(n_steps=32, batch_size=256, n_epochs=20, gae_lambda=0.8, gamma=0.98, learning_rate=1e-3)
PENDULUM = dict(
    n_steps=1024, gae_lambda=0.95, gamma=0.9, n_epochs=10, ent_coef=0.0, learning_rate=1e-3, clip_range=0.2,
    use_sde=True, sde_sample_freq=4,
)  # fmt: skip


def test_kl_penalty_variant_solves_cartpole():
    loss = [ClippedSurrogate(), ValueLoss(), EntropyBonus(), KLPenalty(coef=0.2, target=0.01)]
    env = make_vec_env("CartPole-v1", n_envs=8, seed=0)
    model = PPOVariant("MlpPolicy", env, loss=loss, seed=0, device="cpu", **CARTPOLE).learn(50_000)
    mean, _ = evaluate_policy(model, make_vec_env("CartPole-v1", seed=1), n_eval_episodes=10)
    assert mean >= 475


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["paper", "rllib"])
def test_penalty_variants_learn_pendulum(rule):
    loss = [ClippedSurrogate(), ValueLoss(), EntropyBonus(), KLPenalty(coef=0.2, target=0.01, rule=rule)]
    env = make_vec_env("Pendulum-v1", n_envs=4, seed=0)
    kwargs = {key: value for key, value in PENDULUM.items() if key not in ("ent_coef", "clip_range")}
    model = PPOVariant("MlpPolicy", env, loss=loss, seed=0, device="cpu", **kwargs).learn(100_000)
    mean, _ = evaluate_policy(model, make_vec_env("Pendulum-v1", seed=1), n_eval_episodes=10)
    assert mean > -400  # a random policy scores about -1200


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name in VARIANTS if name != "ppo"])
def test_every_named_variant_learns_cartpole(name):
    # The Zoo's CartPole hyperparameters, 50k steps: the benchmark grid's cell. A random policy
    # scores about 22; PPO-penalty is the slowest learner there, so the bar is "learns", not "solves".
    env = make_vec_env("CartPole-v1", n_envs=8, seed=0)
    model = PPOVariant("MlpPolicy", env, seed=0, device="cpu", **variant_arguments(name, CARTPOLE)).learn(50_000)
    mean, _ = evaluate_policy(model, make_vec_env("CartPole-v1", seed=1), n_eval_episodes=10)
    assert mean >= 150


@pytest.mark.slow
def test_the_compiled_fast_path_solves_cartpole():
    """compile=True learns as the default path does (benchmarks/fast_path.py compares over seeds)."""
    env = make_vec_env("CartPole-v1", n_envs=8, seed=0)
    model = PPOVariant("MlpPolicy", env, seed=0, device="cpu", compile=True, **CARTPOLE).learn(50_000)
    mean, _ = evaluate_policy(model, make_vec_env("CartPole-v1", seed=1), n_eval_episodes=10)
    assert mean >= 475
