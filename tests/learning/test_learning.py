"""The variants learn, not only run. The Pendulum check is long and marked slow."""

import pytest
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_ppo_variants import PPOVariant
from sb3_ppo_variants.components import ClippedSurrogate, EntropyBonus, KLPenalty, ValueLoss
from sb3_ppo_variants.tuning.baselines import zoo_ppo_arguments
from sb3_ppo_variants.variants import VARIANTS, variant_arguments, variant_policy

# The RL Baselines3 Zoo's tuned PPO hyperparameters (linear learning-rate and clip schedules on CartPole).
CARTPOLE, PENDULUM = zoo_ppo_arguments("CartPole-v1"), zoo_ppo_arguments("Pendulum-v1")


def _with_loss(zoo, *extra):
    """The Zoo's arguments with its loss settings moved into the components, and ``extra`` added."""
    arguments = dict(zoo)
    policy = ClippedSurrogate(clip_range=arguments.pop("clip_range", 0.2))
    entropy = EntropyBonus(coef=arguments.pop("ent_coef", 0.0))
    return {**arguments, "loss": [policy, ValueLoss(), entropy, *extra]}


def test_kl_penalty_variant_solves_cartpole():
    env = make_vec_env("CartPole-v1", n_envs=8, seed=0)
    arguments = _with_loss(CARTPOLE, KLPenalty(coef=0.2, target=0.01))
    model = PPOVariant("MlpPolicy", env, seed=0, device="cpu", **arguments).learn(50_000)
    mean, _ = evaluate_policy(model, make_vec_env("CartPole-v1", seed=1), n_eval_episodes=10)
    assert mean >= 475


@pytest.mark.slow
@pytest.mark.parametrize("rule", ["paper", "rllib"])
def test_penalty_variants_learn_pendulum(rule):
    env = make_vec_env("Pendulum-v1", n_envs=4, seed=0)
    arguments = _with_loss(PENDULUM, KLPenalty(coef=0.2, target=0.01, rule=rule))
    model = PPOVariant("MlpPolicy", env, seed=0, device="cpu", **arguments).learn(100_000)
    mean, _ = evaluate_policy(model, make_vec_env("Pendulum-v1", seed=1), n_eval_episodes=10)
    assert mean > -400  # a random policy scores about -1200


@pytest.mark.slow
@pytest.mark.parametrize("name", [name for name in VARIANTS if name != "ppo"])
def test_every_named_variant_learns_cartpole(name):
    # The Zoo's CartPole hyperparameters, 50k steps: the benchmark grid's cell. A random policy
    # scores about 22; PPO-penalty is the slowest learner there, so the bar is "learns", not "solves".
    env = make_vec_env("CartPole-v1", n_envs=8, seed=0)
    policy = variant_policy(name, "MlpPolicy")  # PPG's has the auxiliary head
    model = PPOVariant(policy, env, seed=0, device="cpu", **variant_arguments(name, CARTPOLE)).learn(50_000)
    mean, _ = evaluate_policy(model, make_vec_env("CartPole-v1", seed=1), n_eval_episodes=10)
    assert mean >= 150


@pytest.mark.slow
def test_the_compiled_fast_path_solves_cartpole():
    """compile=True learns as the default path does (benchmarks/fast_path.py compares over seeds)."""
    env = make_vec_env("CartPole-v1", n_envs=8, seed=0)
    model = PPOVariant("MlpPolicy", env, seed=0, device="cpu", compile=True, **CARTPOLE).learn(50_000)
    mean, _ = evaluate_policy(model, make_vec_env("CartPole-v1", seed=1), n_eval_episodes=10)
    assert mean >= 475
