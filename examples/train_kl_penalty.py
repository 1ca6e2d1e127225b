"""Train PPO with the PPO paper's adaptive KL penalty (no clipping) on CartPole-v1, and show what the rule did.

python examples/train_kl_penalty.py [--timesteps 100000] [--seed 0]

The penalty replaces the clip (Schulman et al. 2017, sec. 4): after each ``train()`` call the
coefficient is doubled when the call's KL exceeded 1.5 x the target and halved when it stayed under
target / 1.5, so the KL of an update hovers near the target. Late in this run the Zoo's learning
rate decays to 0, the updates shrink, and the rule halves the coefficient every call: its final value
says nothing about the run. With PPO's clip kept beside the penalty, the KL rarely reaches the target
and the coefficient decays to nothing in the same way.
"""

import argparse
import statistics
import time

import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_ppo_variants import PPOVariant
from sb3_ppo_variants.components import EntropyBonus, KLPenalty, Surrogate, ValueLoss
from sb3_ppo_variants.tuning.baselines import zoo_ppo_arguments


class PenaltyTrace(BaseCallback):
    """The KL and the coefficient after each ``train()`` call, as the model logged them."""

    def __init__(self) -> None:
        super().__init__()
        self.kl: list[float] = []
        self.coef: list[float] = []

    def _on_rollout_start(self) -> None:
        logged = self.model.logger.name_to_value
        if "train/kl" in logged:
            self.kl.append(float(logged["train/kl"]))
            self.coef.append(float(logged["train/kl_coef"]))

    def _on_step(self) -> bool:
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timesteps", type=int, default=100_000)  # the Zoo's CartPole budget
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    th.set_num_threads(1)  # small networks: one thread is fastest and leaves the other core free

    env = make_vec_env("CartPole-v1", n_envs=8, seed=args.seed)
    # The RL Baselines3 Zoo's tuned PPO hyperparameters; the penalty takes the clip's place.
    arguments = zoo_ppo_arguments("CartPole-v1")
    del arguments["clip_range"]
    target = 0.01
    loss = [
        Surrogate(),
        ValueLoss(coef=0.5),
        EntropyBonus(coef=arguments.pop("ent_coef")),
        KLPenalty(coef=1.0, target=target, adaptive=True, rule="paper", estimator="exact"),
    ]
    model = PPOVariant("MlpPolicy", env, seed=args.seed, device="cpu", loss=loss, **arguments)
    trace = PenaltyTrace()
    start = time.perf_counter()
    model.learn(args.timesteps, callback=trace)
    elapsed = time.perf_counter() - start
    eval_env = make_vec_env("CartPole-v1", n_envs=1, seed=args.seed + 1000)
    mean, std = evaluate_policy(model, eval_env, n_eval_episodes=20, deterministic=True)
    near = sum(target / 1.5 <= kl <= 1.5 * target for kl in trace.kl)
    print(f"PPOVariant, PPO paper's adaptive KL penalty, CartPole-v1, {args.timesteps} steps, seed {args.seed}")
    print(f"training time: {elapsed:.1f} s over {len(trace.kl)} train() calls")
    print(
        f"KL per call: median {statistics.median(trace.kl):.4f} (target {target}); {near} of {len(trace.kl)} calls "
        f"within [target / 1.5, 1.5 x target]"
    )
    print(
        f"KL coefficient: from 1 to {model.loss[3].coef:.3g}, between {min(trace.coef):.3g} and {max(trace.coef):.3g}"
    )
    print(f"evaluation over 20 episodes: {mean:.1f} +/- {std:.1f} (500 is the maximum)")


if __name__ == "__main__":
    main()
