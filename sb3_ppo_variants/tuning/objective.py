"""The objective of a study: train a configuration, evaluate it often, score it robustly.

RL returns are noisy, and the Zoo's objective shows what that costs (its issues: the "best"
trial does not reproduce; the pruner never acts). Here:

- every trial is **seeded** from the study seed and its number, and the seed is recorded on the
  trial (``user_attrs["seed"]``), with the exact hyperparameters it trained
  (``user_attrs["hyperparameters"]``, plain data);
- the policy is evaluated on **separate environments** (their own seeds) ``n_evaluations``
  times per run, each reported to the pruner, so pruning acts from the first report;
- the value is the **mean of the last** ``n_last_evaluations`` evaluations, averaged over
  ``n_train_seeds`` training runs, so one lucky evaluation does not make a best trial;
- a **diverging** run (``TrainingDivergedError``, a non-finite return) prunes the trial with
  the reason in ``user_attrs["pruned_reason"]``; any other error fails it with
  ``user_attrs["fail_reason"]``. Neither stops the study or the worker.

:func:`train_and_evaluate` is the one training loop: the objective, ``retrain`` and the
comparison with SB3's PPO all run it, so retraining a trial with its seed replays it exactly.
"""

from __future__ import annotations

import functools
import importlib
import math
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import optuna
import torch as th
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecNormalize, sync_envs_normalization

from sb3_ppo_variants import PPOVariant, TrainingDivergedError
from sb3_ppo_variants.persistence.config import to_plain
from sb3_ppo_variants.tuning.baselines import ZOO_PPO
from sb3_ppo_variants.tuning.errors import TuningError
from sb3_ppo_variants.tuning.models import ModelStore
from sb3_ppo_variants.tuning.space import SearchSpace, Space

EVAL_SEED_OFFSET = 10_000
"""Evaluation environments of a run seeded ``seed`` are seeded from ``seed + EVAL_SEED_OFFSET``."""

VEC_ENVS: dict[str, type[VecEnv]] = {"dummy": DummyVecEnv, "subproc": SubprocVecEnv}
"""How a run steps its training environments: in its process, or one process each."""


@dataclass(frozen=True)
class Task:
    """What a study optimises: an environment, a budget, and how a run is scored.

    Stored on the study (``study.user_attrs["task"]``), so ``report``, ``retrain`` and every
    worker read the same definition, and a command that changes it cannot resume the study.

    :param n_timesteps: Environment steps per training run.
    :param n_envs: Training environments (default: the Zoo's for this environment, else 1).
    :param normalize: ``VecNormalize`` the training environments (default: as the Zoo does).
    :param n_evaluations: Evaluations per run, evenly spaced; each is a pruner report.
    :param n_eval_episodes: Episodes per evaluation, on ``n_eval_envs`` separate environments.
    :param n_last_evaluations: The run's score is the mean of its last this many evaluations.
    :param n_train_seeds: Training runs per trial (seeds ``seed``, ``seed + 1``, ...); the
        trial's value is the mean of their scores.
    :param deterministic_eval: Evaluate the deterministic (mode) action.
    :param gym_packages: Modules imported before the environment is made, so that their
        environments register (your own package, as the Zoo's ``--gym-packages``); every worker
        process imports them too.
    :param env_kwargs: Keyword arguments of ``gymnasium.make`` for the training environments.
    :param eval_env_kwargs: The same for the evaluation environments (``None``: ``env_kwargs``).
    """

    env_id: str
    n_timesteps: int
    n_envs: int
    normalize: bool
    policy: str = "MlpPolicy"
    n_evaluations: int = 10
    n_eval_episodes: int = 5
    n_eval_envs: int = 5
    n_last_evaluations: int = 3
    n_train_seeds: int = 1
    deterministic_eval: bool = True
    gym_packages: tuple[str, ...] = ()
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    eval_env_kwargs: dict[str, Any] | None = None

    @classmethod
    def for_env(cls, env_id: str, n_timesteps: int, **settings: Any) -> Task:
        """A checked task; ``None`` settings take their default (``n_envs``, ``normalize``: the Zoo's)."""
        import_gym_packages(tuple(settings.get("gym_packages") or ()))
        _check_env(env_id)
        zoo = ZOO_PPO.get(env_id)
        settings = {k: v for k, v in settings.items() if v is not None}
        settings.setdefault("n_envs", zoo.n_envs if zoo else 1)
        settings.setdefault("normalize", zoo.normalize if zoo else False)
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(settings) - names)
        if unknown:
            raise TuningError(f"unknown task setting(s) {', '.join(unknown)}: accepted are {', '.join(sorted(names))}")
        task = cls(env_id=env_id, n_timesteps=n_timesteps, **settings)
        task.check()
        return task

    def check(self) -> None:
        for name in ("n_timesteps", "n_envs", "n_evaluations", "n_eval_episodes", "n_eval_envs", "n_train_seeds"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise TuningError(f"{name}={value!r} is invalid: accepted values are integers >= 1")
        if not 1 <= self.n_last_evaluations <= self.n_evaluations:
            raise TuningError(
                f"n_last_evaluations={self.n_last_evaluations!r} is invalid: accepted values are 1 to "
                f"n_evaluations={self.n_evaluations}"
            )
        if self.n_timesteps < self.n_evaluations:
            raise TuningError(
                f"n_timesteps={self.n_timesteps} is invalid: accepted values are at least "
                f"n_evaluations={self.n_evaluations} (one evaluation per step at most)"
            )

    def as_dict(self) -> dict[str, Any]:
        """Plain data (as the study stores it); :meth:`from_dict` reads it, filling later fields' defaults."""
        return {**asdict(self), "gym_packages": list(self.gym_packages)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Task:
        return cls(**{**data, "gym_packages": tuple(data.get("gym_packages", ()))})

    def make_envs(self, seed: int, evaluation: bool = False, vec_env_cls: type[VecEnv] | None = None) -> VecEnv:
        """The training (or evaluation) environments of a run seeded ``seed``."""
        import_gym_packages(self.gym_packages)
        kwargs = self.env_kwargs if not evaluation or self.eval_env_kwargs is None else self.eval_env_kwargs
        return make_vec_env(
            _MakeAfterImports(self.env_id, self.gym_packages) if self.gym_packages else self.env_id,
            n_envs=self.n_eval_envs if evaluation else self.n_envs,
            seed=seed + EVAL_SEED_OFFSET if evaluation else seed,
            env_kwargs=kwargs,
            vec_env_cls=vec_env_cls,
        )

    def score(self, evaluations: list[tuple[int, float]]) -> float:
        """A run's score: the mean of its last ``n_last_evaluations`` evaluations."""
        return float(np.mean([r for _, r in evaluations[-self.n_last_evaluations :]]))


@dataclass(frozen=True)
class _MakeAfterImports:
    """``gymnasium.make(env_id)`` after importing ``packages``: an environment factory that also
    works in the processes of a ``SubprocVecEnv``, which have not imported them."""

    env_id: str
    packages: tuple[str, ...]

    def __call__(self, **kwargs: Any) -> Any:
        import gymnasium as gym

        import_gym_packages(self.packages)
        return gym.make(self.env_id, **kwargs)


def import_gym_packages(packages: tuple[str, ...]) -> None:
    """Import the modules that register a task's environments."""
    for package in packages:
        try:
            importlib.import_module(package)
        except ImportError as error:
            raise TuningError(f"gym package {package!r} cannot be imported: {error}") from error


def _check_env(env_id: str) -> None:
    import gymnasium as gym

    try:
        gym.spec(env_id)
    except gym.error.Error as error:
        raise TuningError(f"unknown environment {env_id!r}: {error}") from error


@contextmanager
def one_torch_thread() -> Iterator[None]:
    """Train on one torch thread: results do not depend on the thread count, and workers share cores."""
    previous = th.get_num_threads()
    th.set_num_threads(1)
    try:
        yield
    finally:
        th.set_num_threads(previous)


class _Evaluations(BaseCallback):
    """Evaluate every ``n_timesteps / n_evaluations`` steps; stop when ``on_evaluation`` says so."""

    def __init__(self, task: Task, eval_env: VecEnv, on_evaluation: Callable[[int, float], bool] | None) -> None:
        super().__init__()
        self.task, self.eval_env, self.on_evaluation = task, eval_env, on_evaluation
        self.interval = task.n_timesteps / task.n_evaluations
        self.evaluations: list[tuple[int, float]] = []

    def _on_step(self) -> bool:
        if self.num_timesteps < self.interval * (len(self.evaluations) + 1) - 1e-9:
            return True
        sync_envs_normalization(self.training_env, self.eval_env)
        mean, _ = evaluate_policy(
            self.model,
            self.eval_env,
            n_eval_episodes=self.task.n_eval_episodes,
            deterministic=self.task.deterministic_eval,
        )
        if not math.isfinite(mean):
            raise TrainingDivergedError(f"evaluation at step {self.num_timesteps} returned {mean}")
        self.evaluations.append((self.num_timesteps, float(mean)))
        if self.on_evaluation is not None and not self.on_evaluation(self.num_timesteps, float(mean)):
            return False
        return len(self.evaluations) < self.task.n_evaluations


def train_and_evaluate(
    task: Task,
    arguments: dict[str, Any],
    seed: int,
    algorithm: Any = PPOVariant,
    on_evaluation: Callable[[int, float], bool] | None = None,
    device: str = "cpu",
    vec_env: str = "dummy",
    on_trained: Callable[[Any, list[tuple[int, float]]], None] | None = None,
    compile: bool = False,
    callbacks: list[Any] | None = None,
) -> list[tuple[int, float]]:
    """Train ``algorithm(task.policy, env, **arguments)`` with ``seed``; return ``[(timesteps, mean return)]``.

    ``on_evaluation(timesteps, mean_return)`` is called after each evaluation; returning
    ``False`` stops training (a pruned trial). ``algorithm`` is any SB3 on-policy class.
    ``device`` is torch's; ``vec_env`` one of :data:`VEC_ENVS`. ``on_trained(model, evaluations)``
    is called when training ends (to save the model), before the environments close.
    ``compile``: train on ``PPOVariant``'s fast path (``compile=True``). ``callbacks``: SB3 callbacks
    run beside the evaluations (to record what a run does).
    """
    with one_torch_thread():
        env = task.make_envs(seed, vec_env_cls=VEC_ENVS[vec_env])
        eval_env = task.make_envs(seed, evaluation=True)
        if task.normalize:
            env = VecNormalize(env, gamma=arguments.get("gamma", 0.99))
            eval_env = VecNormalize(eval_env, training=False, norm_reward=False)  # statistics synced before use
        try:
            fast_path = {"compile": True} if compile else {}  # only PPOVariant takes it (a baseline is SB3's PPO)
            model = algorithm(task.policy, env, seed=seed, device=device, verbose=0, **arguments, **fast_path)
            evaluations = _Evaluations(task, eval_env, on_evaluation)
            model.learn(task.n_timesteps, callback=[evaluations, *callbacks] if callbacks else evaluations)
            if on_trained is not None:
                on_trained(model, evaluations.evaluations)
        finally:
            env.close()
            eval_env.close()
    return evaluations.evaluations


def trial_seed(study_seed: int, number: int) -> int:
    """A trial's seed: independent streams for (study seed, trial number), below 2**31."""
    return int(np.random.SeedSequence([study_seed, number]).generate_state(1)[0] % 2**31)


class Objective:
    """``study.optimize(Objective(task))``: one seeded, evaluated, robustly scored trial.

    :param space: A :class:`~sb3_ppo_variants.tuning.space.SearchSpace`, any object with
        ``arguments(trial, n_envs) -> dict``, or a function ``(trial, n_envs) -> dict`` of
        ``PPOVariant`` keyword arguments (to extend the space with your own components).
    :param seed: The study seed; trial ``n`` trains with :func:`trial_seed` ``(seed, n)``, and a
        retried trial keeps the seed it was given.
    :param device: Where the networks train (torch's device; default ``"cpu"``).
    :param vec_env: How the training environments step: ``"dummy"`` (in the worker) or
        ``"subproc"`` (a process each, for slow environments).
    :param models_dir: Keep each finished trial's model there, an artifact store shared by the
        study's workers (see :mod:`sb3_ppo_variants.tuning.models`; ``user_attrs["model_artifacts"]`` records it, and
        ``python -m tuning report`` writes the best as ``best_model.zip``). ``None``: no models are kept.
    :param compile: Train every trial on ``PPOVariant``'s fast path (``compile=True``): learning
        statistically the same, not bit-identical; torch's compile cache makes every trial after
        the first on a machine compile from the cache.
    """

    def __init__(
        self,
        task: Task,
        space: SearchSpace | Space | Callable[[optuna.Trial, int], dict[str, Any]] | None = None,
        seed: int = 0,
        device: str = "cpu",
        vec_env: str = "dummy",
        models_dir: str | os.PathLike | None = None,
        compile: bool = False,
    ) -> None:
        if vec_env not in VEC_ENVS:
            raise TuningError(f"vec_env={vec_env!r} is invalid: accepted values are {', '.join(VEC_ENVS)}")
        try:
            get_device(device)  # SB3's reading, "auto" included
        except (RuntimeError, TypeError) as error:
            raise TuningError(
                f"device={device!r} is invalid: accepted values are torch devices (cpu, cuda, auto)"
            ) from error
        self.task, self.seed, self.device, self.vec_env, self.compile = task, seed, device, vec_env, compile
        self.models = None if models_dir is None else ModelStore(models_dir)
        self.space = SearchSpace() if space is None else space
        if isinstance(self.space, SearchSpace):
            self.space.check(task.n_envs)

    def sample(self, trial: optuna.Trial) -> dict[str, Any]:
        if hasattr(self.space, "arguments"):
            return self.space.arguments(trial, self.task.n_envs)
        return self.space(trial, self.task.n_envs)  # type: ignore[operator]

    def __call__(self, trial: optuna.Trial) -> float:
        seed = int(trial.user_attrs.get("seed", trial_seed(self.seed, trial.number)))
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        arguments = self.sample(trial)
        try:
            trial.set_user_attr("hyperparameters", to_plain(arguments))
        except TypeError as error:  # a custom space with a Python schedule: still tunable, not replayable
            trial.set_user_attr("hyperparameters_error", str(error))
        scores = []
        for k in range(self.task.n_train_seeds):
            offset = k * self.task.n_timesteps  # steps of later seeds follow the earlier ones

            def report(timesteps: int, mean_return: float, offset: int = offset) -> bool:
                trial.report(mean_return, offset + timesteps)
                return not trial.should_prune()

            last = k == self.task.n_train_seeds - 1
            try:
                evaluations = train_and_evaluate(
                    self.task, arguments, seed + k, on_evaluation=report, device=self.device, vec_env=self.vec_env,
                    on_trained=functools.partial(self._save, trial) if last and self.models else None,
                    compile=self.compile,
                )  # fmt: skip
            except TrainingDivergedError as error:
                trial.set_user_attr("pruned_reason", f"diverged: {error}")
                raise optuna.TrialPruned(f"diverged: {error}") from error
            except Exception as error:
                trial.set_user_attr("fail_reason", f"{type(error).__name__}: {error}")
                raise
            if len(evaluations) < self.task.n_evaluations:
                step = offset + evaluations[-1][0]
                trial.set_user_attr("pruned_reason", f"pruned at step {step}")
                raise optuna.TrialPruned(f"pruned at step {step}")
            scores.append(self.task.score(evaluations))
        trial.set_user_attr("seed_scores", scores)
        return float(np.mean(scores))

    def _save(self, trial: optuna.Trial, model: Any, evaluations: list[tuple[int, float]]) -> None:
        """Keep a finished trial's model (a pruned one stopped early: it is not kept)."""
        if len(evaluations) < self.task.n_evaluations:
            return
        assert self.models is not None
        self.models.keep(trial, model)
