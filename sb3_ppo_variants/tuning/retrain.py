"""``python -m tuning retrain``: is the tuned configuration really better, and does a trial replay?

- :func:`compare` trains a configuration (a study's best trial, or a ``best.yaml``) on fresh
  seeds ``0 .. n-1`` and, on the same seeds and budget, SB3's ``PPO`` with the RL Baselines3
  Zoo's tuned hyperparameters (SB3's defaults where the Zoo has none), each evaluated exactly as
  the study's trials were; it returns every learning curve, and :func:`comparison_table` and
  :func:`plot_comparison` show them.
- :func:`reproduce` replays one trial with its recorded seed and returns its recorded and
  replayed evaluations, which are equal: the trial ran :func:`~sb3_ppo_variants.tuning.objective.train_and_evaluate`
  with the same arguments on one torch thread.
"""

from __future__ import annotations

import dataclasses
import functools
import multiprocessing
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import FrozenTrial

from sb3_ppo_variants.persistence.config import from_plain, load_config
from sb3_ppo_variants.tuning.baselines import ZOO_PPO, zoo_ppo_arguments
from sb3_ppo_variants.tuning.errors import TuningError
from sb3_ppo_variants.tuning.objective import Task, train_and_evaluate
from sb3_ppo_variants.tuning.report import best_trial, find_trial, plain_hyperparameters
from sb3_ppo_variants.tuning.storage import task_of

TUNED = "tuned"


def trial_arguments(trial: FrozenTrial) -> dict[str, Any]:
    return from_plain(plain_hyperparameters(trial))


def reproduce(study: optuna.Study, number: int) -> tuple[dict[int, float], dict[int, float]]:
    """``(recorded, replayed)`` evaluations ``{step: mean return}`` of trial ``number``."""
    trial, task = find_trial(study, number), task_of(study)
    arguments, seed = trial_arguments(trial), int(trial.user_attrs["seed"])
    recorded, replayed = dict(trial.intermediate_values), {}
    steps = sorted(recorded)
    for k in range(task.n_train_seeds):
        own = steps[k * task.n_evaluations : (k + 1) * task.n_evaluations]  # seed k reported these
        if not own:
            break  # the trial was pruned before this seed
        offset = k * task.n_timesteps

        def until_last(timesteps: int, _: float, offset: int = offset, last: int = own[-1]) -> bool:
            return offset + timesteps < last  # stop where the trial stopped (pruned)

        for step, value in train_and_evaluate(task, arguments, seed + k, on_evaluation=until_last):
            replayed[offset + step] = value
    return recorded, replayed


def _run(
    task: Task, label: str, arguments: dict[str, Any], seed: int, sb3: bool, models_dir: Path | None = None
) -> tuple[str, int, list, float]:
    import torch as th
    from stable_baselines3 import PPO

    from sb3_ppo_variants import PPOVariant

    th.set_num_threads(1)
    algorithm = PPO if sb3 else PPOVariant
    start = time.perf_counter()
    save = None if models_dir is None else functools.partial(_save, models_dir / f"{_slug(label)}-seed{seed}")
    evaluations = train_and_evaluate(task, arguments, seed, algorithm=algorithm, on_trained=save)
    return label, seed, evaluations, time.perf_counter() - start


def _slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_" else "-" for c in label).strip("-")


def _save(stem: Path, model: Any, evaluations: list[tuple[int, float]]) -> None:
    """A retrained model, ``<stem>.zip``, with ``<stem>-vecnormalize.pkl`` for a normalised task."""
    from stable_baselines3.common.vec_env import VecNormalize

    stem.parent.mkdir(parents=True, exist_ok=True)
    model.save(stem.with_suffix(".zip"))
    if isinstance(model.get_env(), VecNormalize):
        model.get_env().save(str(stem.with_name(f"{stem.name}-vecnormalize.pkl")))


def baseline(task: Task) -> tuple[str, Task, dict[str, Any]]:
    """SB3's PPO as the Zoo trains it on this environment (its own n_envs and normalisation)."""
    zoo = ZOO_PPO.get(task.env_id)
    if zoo is None:
        return "sb3-ppo (defaults)", task, {}
    zoo_task = dataclasses.replace(task, n_envs=zoo.n_envs, normalize=zoo.normalize)
    return "sb3-ppo (zoo)", zoo_task, zoo_ppo_arguments(task.env_id)


def compare(
    task: Task,
    arguments: dict[str, Any],
    seeds: int = 5,
    n_jobs: int = 1,
    include_baseline: bool = True,
    models_dir: str | Path | None = None,
    on_run: Callable[[str, int, float, float], None] | None = None,
) -> dict[str, dict[int, list[tuple[int, float]]]]:
    """``{label: {seed: [(timesteps, mean return)]}}`` for the tuned configuration and SB3's PPO.

    ``models_dir``: save each run's model there (``<label>-seed<k>.zip``). ``on_run(label, seed,
    score, seconds)`` is called as each run finishes (the command prints a line)."""
    folder = None if models_dir is None else Path(models_dir)
    runs = [(task, TUNED, arguments, s, False, folder) for s in range(seeds)]
    tasks = {TUNED: task}
    if include_baseline:
        label, baseline_task, baseline_arguments = baseline(task)
        runs += [(baseline_task, label, baseline_arguments, s, True, folder) for s in range(seeds)]
        tasks[label] = baseline_task
    results: dict[str, dict[int, list]] = {}

    def finished(outcome: tuple[str, int, list, float]) -> None:
        label, seed, evaluations, seconds = outcome
        results.setdefault(label, {})[seed] = evaluations
        if on_run is not None:
            on_run(label, seed, tasks[label].score(evaluations), seconds)

    if n_jobs == 1:
        for run in runs:
            finished(_run(*run))
    else:
        with ProcessPoolExecutor(n_jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            for future in as_completed([pool.submit(_run, *run) for run in runs]):
                finished(future.result())
    return {label: dict(sorted(by_seed.items())) for label, by_seed in results.items()}


def load_target(
    study: optuna.Study | None, trial_number: int | None, config: str | Path | None, allow: tuple[str, ...] = ()
) -> tuple[Task, dict[str, Any], str]:
    """What to retrain: a study's trial (the best by default), or a configuration file (importing
    classes of the trusted packages only, and of the modules ``allow`` names)."""
    if config is not None:
        import yaml

        policy, arguments = load_config(config, allow)
        document = yaml.safe_load(Path(config).read_text())
        if "task" not in document:
            raise TuningError(f"configuration file {config} has no 'task' (write it with python -m tuning report)")
        task = Task.from_dict({**document["task"], "policy": policy})
        return task, arguments, f"{config}"
    if study is None:
        raise TuningError("retrain needs a study (--storage and --study-name) or --config")
    trial = best_trial(study) if trial_number is None else find_trial(study, trial_number)
    return task_of(study), trial_arguments(trial), f"trial {trial.number} of {study.study_name!r}"


def comparison_table(task: Task, results: dict[str, dict[int, list[tuple[int, float]]]]) -> str:
    """Final score (mean of the last evaluations, as the study scores) per configuration, Markdown."""
    lines = [
        f"{task.env_id}, {task.n_timesteps} steps, score = mean of the last {task.n_last_evaluations} evaluations "
        f"({task.n_eval_episodes} episodes each)",
        "",
        "| configuration | mean ± sd over seeds | min | max | seeds |",
        "|---|---|---|---|---|",
    ]
    for label, runs in results.items():
        scores = np.array([task.score(e) for e in runs.values()])
        lines.append(
            f"| {label} | {scores.mean():.1f} ± {scores.std(ddof=1) if len(scores) > 1 else 0.0:.1f} "
            f"| {scores.min():.1f} | {scores.max():.1f} | {len(scores)} |"
        )
    others = [label for label in results if label != TUNED]
    if TUNED in results and others:
        tuned, base = ([task.score(e) for e in results[label].values()] for label in (TUNED, others[0]))
        if len(tuned) > 1 and len(base) > 1:
            lines += ["", difference_sentence(np.array(tuned), np.array(base), others[0])]
    return "\n".join(lines)


def difference_interval(
    tuned: np.ndarray, baseline: np.ndarray, resamples: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """The difference of mean scores (tuned less baseline) and its percentile bootstrap 95%
    interval: each configuration's seeds resampled with replacement, independently."""
    rng = np.random.default_rng(seed)
    tuned_means = rng.choice(tuned, (resamples, len(tuned))).mean(axis=1)
    baseline_means = rng.choice(baseline, (resamples, len(baseline))).mean(axis=1)
    low, high = np.percentile(tuned_means - baseline_means, [2.5, 97.5])
    return float(tuned.mean() - baseline.mean()), float(low), float(high)


def difference_sentence(tuned: np.ndarray, baseline: np.ndarray, label: str) -> str:
    """The tuned configuration against the baseline, in words, with the interval."""
    difference, low, high = difference_interval(tuned, baseline)
    if low > 0:
        verdict = f"the tuned configuration beats {label}"
    elif high < 0:
        verdict = f"{label} beats the tuned configuration"
    else:
        verdict = "the interval contains 0: the seeds cannot tell the two apart"
    return (
        f"Tuned less {label}: {difference:+.1f}, bootstrap 95% interval [{low:+.1f}, {high:+.1f}] "
        f"(10,000 resamples of each one's seeds): {verdict}."
    )


def plot_comparison(task: Task, results: dict[str, dict[int, list[tuple[int, float]]]], path: str | Path) -> Path:
    """Learning curves: mean over seeds and the min-max band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6.5, 4))
    for label, runs in results.items():
        length = min(len(e) for e in runs.values())
        steps = np.array([t for t, _ in next(iter(runs.values()))[:length]])
        returns = np.array([[r for _, r in e[:length]] for e in runs.values()])
        (line,) = axis.plot(steps, returns.mean(axis=0), label=f"{label} ({len(runs)} seeds)")
        axis.fill_between(steps, returns.min(axis=0), returns.max(axis=0), color=line.get_color(), alpha=0.15)
    axis.set_title(f"{task.env_id}: mean and min-max over seeds")
    axis.set_xlabel("environment steps")
    axis.set_ylabel("evaluation return")
    axis.legend()
    figure.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
