"""What a grid cell is and how it trains.

Every cell trains from the RL Baselines3 Zoo's tuned PPO hyperparameters for its environment
(``sb3_ppo_variants.tuning.baselines``, the shared base; each variant changes only its own part, see
``sb3_ppo_variants.variants``) and evaluates the deterministic policy on separate environments
``n_evaluations`` times, evenly spaced. A run's score is the mean of its last
``LAST_EVALUATIONS`` evaluations. The protocol of a grid (budget and evaluation of each
environment) is stored on its study, so every worker, on any machine, trains the same cells.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

from benchmarks.grid.rows import LEARNING_RATES, adapts_learning_rate, row_setup
from sb3_ppo_variants.tuning.baselines import ZOO_PPO
from sb3_ppo_variants.tuning.objective import Task, train_and_evaluate

LAST_EVALUATIONS = 3


@dataclass(frozen=True)
class EnvProtocol:
    """How a grid trains and scores one environment.

    :param timesteps: Environment steps per run.
    :param n_evaluations: Evaluations per run, evenly spaced; the last ``LAST_EVALUATIONS`` score it.
    :param eval_episodes: Episodes per evaluation, spread over ``eval_envs`` environments
        stepped together (the policy answers them in one batch).
    :param zoo_ppo_score: The Zoo's PPO at its full budget (its ``benchmark.md``), the top of
        the normalised scale (the bottom is a random policy).
    """

    timesteps: int
    n_evaluations: int
    zoo_ppo_score: float
    eval_episodes: int = 10
    eval_envs: int = 5

    def scaled(self, budget_scale: float) -> EnvProtocol:
        """The protocol at ``budget_scale`` times the budget (a quick look), evaluations kept apart."""
        timesteps = max(int(self.timesteps * budget_scale), 1)
        return dataclasses.replace(self, timesteps=timesteps, n_evaluations=min(self.n_evaluations, timesteps))

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _zoo_budget(env_id: str) -> int:
    return ZOO_PPO[env_id].n_timesteps


ENVS: dict[str, EnvProtocol] = {
    "CartPole-v1": EnvProtocol(_zoo_budget("CartPole-v1"), n_evaluations=10, zoo_ppo_score=500.0),
    "Acrobot-v1": EnvProtocol(_zoo_budget("Acrobot-v1"), n_evaluations=10, zoo_ppo_score=-73.506),
    "LunarLander-v3": EnvProtocol(_zoo_budget("LunarLander-v3"), n_evaluations=10, zoo_ppo_score=242.119),
    "Pendulum-v1": EnvProtocol(_zoo_budget("Pendulum-v1"), n_evaluations=10, zoo_ppo_score=-172.225),
    # 30% of the Zoo's 1M steps: what fits this project's compute (see the README's table).
    "HalfCheetah-v5": EnvProtocol(300_000, n_evaluations=10, eval_episodes=5, zoo_ppo_score=5819.099),
    "Hopper-v5": EnvProtocol(300_000, n_evaluations=10, eval_episodes=5, zoo_ppo_score=2410.435),
}
"""The reference table's protocol: the Zoo's full budgets on classic control, 300k steps on MuJoCo."""


@dataclass(frozen=True, order=True)
class Cell:
    """One run of the grid."""

    env: str
    variant: str
    seed: int

    def as_attrs(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any]) -> Cell | None:
        """The cell a trial's user attributes name, ``None`` if they name none."""
        if not all(name in attrs for name in ("env", "variant", "seed")):
            return None
        return cls(str(attrs["env"]), str(attrs["variant"]), int(attrs["seed"]))

    def __str__(self) -> str:
        return f"{self.env} / {self.variant} / seed {self.seed}"


def cell_task(cell: Cell, protocol: EnvProtocol) -> Any:
    """The ``tuning`` task a cell trains and is scored by (its score: the mean of its last
    ``LAST_EVALUATIONS`` evaluations)."""

    return Task.for_env(
        cell.env,
        protocol.timesteps,
        n_evaluations=protocol.n_evaluations,
        n_eval_episodes=protocol.eval_episodes,
        n_eval_envs=protocol.eval_envs,
        n_last_evaluations=min(LAST_EVALUATIONS, protocol.n_evaluations),
    )


def train_cell(
    cell: Cell,
    protocol: EnvProtocol,
    compile: bool = False,
    on_evaluation: Callable[[int, float], bool] | None = None,
    records: dict[str, Any] | None = None,
) -> list[tuple[int, float]]:
    """Train and evaluate ``cell``; return its ``[(timesteps, mean return)]``.

    It trains its row's setup (``benchmarks.grid.rows``) through ``tuning``'s
    :func:`~sb3_ppo_variants.tuning.objective.train_and_evaluate`, the loop a tuning trial runs (one torch thread,
    evaluation environments seeded apart from training). ``compile`` turns on ``PPOVariant``'s
    fast path for the variants' rows (SB3's rows have none). ``records``, if given, receives
    what the row's cells record (the learning rate of every call, for a row that adapts it).
    """

    task = cell_task(cell, protocol)
    algorithm, policy, arguments = row_setup(cell.variant, cell.env, task.policy)
    if compile and "loss" in arguments:
        arguments["compile"] = True
    callbacks = []
    if adapts_learning_rate(arguments):
        rates = LearningRates()
        callbacks.append(rates)
    evaluations = train_and_evaluate(
        dataclasses.replace(task, policy=policy),
        arguments,
        cell.seed,
        algorithm=algorithm,
        on_evaluation=on_evaluation,
        callbacks=callbacks,
    )
    if records is not None and callbacks:
        records[LEARNING_RATES] = rates.learning_rates
    return evaluations


class LearningRates(BaseCallback):
    """The learning rate of every ``train()`` call: the optimizer's, read when the next rollout starts
    (SB3 sets it at the start of each call) and when training ends."""

    def __init__(self) -> None:
        super().__init__()
        self.learning_rates: list[float] = []
        self._calls_seen = -1

    def _read(self) -> None:
        if self._calls_seen >= 0:  # the first rollout comes before any call
            self.learning_rates.append(float(self.model.policy.optimizer.param_groups[0]["lr"]))
        self._calls_seen += 1

    def _on_rollout_start(self) -> None:
        self._read()

    def _on_training_end(self) -> None:
        self._read()

    def _on_step(self) -> bool:
        return True


def random_score(env_id: str, episodes: int = 20) -> float:
    """Mean return of uniformly random actions (the bottom of the normalised scale)."""
    import gymnasium as gym

    env = gym.make(env_id)
    env.action_space.seed(0)
    total = 0.0
    for episode in range(episodes):
        env.reset(seed=episode)
        done = False
        while not done:
            _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
            total += float(reward)
            done = terminated or truncated
    env.close()
    return total / episodes
