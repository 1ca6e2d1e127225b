"""Train PPO with an adaptive KL penalty on CartPole-v1 and print its evaluation.

python examples/train_kl_penalty.py [--timesteps 50000] [--seed 0]
"""

import argparse
import time

import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_ppo_variants import PPOVariant
from sb3_ppo_variants.losses import ClippedSurrogate, EntropyBonus, KLPenalty, ValueLoss
from tuning.zoo import zoo_ppo_arguments


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=50_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    th.set_num_threads(1)  # small networks: one thread is fastest and leaves the other core free

    env = make_vec_env("CartPole-v1", n_envs=8, seed=args.seed)
    # The RL Baselines3 Zoo's tuned PPO hyperparameters; its loss settings go into the components.
    arguments = zoo_ppo_arguments("CartPole-v1")
    loss = [
        ClippedSurrogate(clip_range=arguments.pop("clip_range")),
        ValueLoss(coef=0.5),
        EntropyBonus(coef=arguments.pop("ent_coef")),
        KLPenalty(coef=0.2, target=0.01, adaptive=True, rule="paper"),
    ]
    model = PPOVariant("MlpPolicy", env, seed=args.seed, device="cpu", loss=loss, **arguments)
    start = time.perf_counter()
    model.learn(args.timesteps)
    elapsed = time.perf_counter() - start
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=args.seed + 1000)
    mean, std = evaluate_policy(model, eval_env, n_eval_episodes=20, deterministic=True)
    print(f"PPOVariant, clipped surrogate + adaptive KL penalty, CartPole-v1, {args.timesteps} steps, seed {args.seed}")
    print(f"training time: {elapsed:.1f} s; final KL coefficient: {model.loss[3].coef:.4g}")
    print(f"evaluation over 20 episodes: {mean:.1f} +/- {std:.1f} (500 is the maximum)")


if __name__ == "__main__":
    main()
