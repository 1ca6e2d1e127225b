"""Tuning throughput side by side with the RL Baselines3 Zoo: same environment, trials, steps per
trial, evaluations and workers, on the same machine, one after the other.

    python -m benchmarks.tuning_vs_zoo                  # CartPole-v1 and Pendulum-v1, 3 studies a side of 50 trials
    python -m benchmarks.tuning_vs_zoo --envs CartPole-v1 --n-studies 1 --n-trials 8 --n-timesteps 8000 --seeds 2

``--n-studies`` independent studies per side and environment (sampler seeds 0, 1, ...), the sides
taking turns, each a fresh SQLite study started as a user starts it:

- ``zoo``: ``python -m rl_zoo3.train --algo ppo --env ENV -optimize --n-jobs N`` (SB3's PPO, the
  Zoo's search space, its TPE sampler and median pruner; the Zoo's jobs are threads of one process);
- ``ours``: ``python -m tuning run --env ENV --n-jobs N`` (PPOVariant, our search space, loss
  included; our jobs are processes with one torch thread each);
- ``ours --compile``: the same on the fast path.

Each reports wall time, trials per hour (finished and pruned trials), CPU use (CPU seconds of the
command and its children over wall seconds: 2.0 is both cores busy), and the best value it found
(each study's own objective: the Zoo scores a trial by its last evaluation, ours by the mean of the
last three; they are not comparable, the retrained scores are). The best configuration of each
study is then retrained on ``--seeds`` fresh seeds with the trials' budget and scored the same way
(:func:`sb3_ppo_variants.tuning.objective.train_and_evaluate`, the mean of the last 3 of 10 evaluations of 5
episodes): the Zoo's with SB3's PPO, on the Zoo's settings for the environment plus the sampled
values, as the Zoo trains it; ours with PPOVariant. Each side's retrained score is the mean over
its studies' runs, and the difference of two sides has a bootstrap 95% interval that resamples
studies, then each resampled study's runs, so it counts how much studies differ, not only seeds.

The benchmark resumes: each finished study (with its retrained runs) is written to
``results.json`` at once, a rerun with the same settings skips it, and an interrupted study starts
again from scratch (its trials per hour would mean nothing otherwise).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import resource
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import optuna
from optuna.trial import TrialState

STUDIES = ("zoo", "ours", "ours --compile")
FIRST_SEED = 1000  # retraining seeds, none of which a trial trained with (trial seeds are hashed)


def commands(name: str, env_id: str, args: argparse.Namespace, storage: str, logs: Path, seed: int) -> list[str]:
    """The command line that runs study ``name`` from scratch."""
    evaluations = ["--n-evaluations", str(args.n_evaluations)]
    if name == "zoo":
        return [
            sys.executable, "-m", "rl_zoo3.train", "--algo", "ppo", "--env", env_id, "-optimize",
            "--n-trials", str(args.n_trials), "--n-jobs", str(args.n_jobs), "-n", str(args.n_timesteps),
            *evaluations, "--eval-episodes", "5", "--n-eval-envs", "5", "--sampler", "tpe", "--pruner", "median",
            "--n-startup-trials", str(args.n_startup_trials), "--storage", storage, "--study-name", "zoo",
            "--seed", str(seed), "-f", str(logs), "--no-optim-plots", "--verbose", "0",
        ]  # fmt: skip
    return [
        sys.executable, "-m", "tuning", "run", "--env", env_id, "--n-trials", str(args.n_trials),
        "--n-jobs", str(args.n_jobs), "--n-timesteps", str(args.n_timesteps), *evaluations,
        "--n-eval-episodes", "5", "--n-last-evaluations", str(last_evaluations(args)),
        "--n-startup-trials", str(args.n_startup_trials), "--storage", storage,
        "--study-name", "ours", "--seed", str(seed), "--quiet", *(["--compile"] if name.endswith("--compile") else []),
    ]  # fmt: skip


def last_evaluations(args: argparse.Namespace) -> int:
    return min(3, args.n_evaluations)


def run_study(name: str, env_id: str, args: argparse.Namespace, out: Path, index: int) -> dict[str, Any]:
    """Run study number ``index`` of side ``name`` as a subprocess; its wall time, CPU use, trials
    and best trial."""
    slug = name.replace(" --", "-")
    database = out / f"{env_id}-{slug}-{index}.db"
    database.unlink(missing_ok=True)  # a fresh study: trials per hour of a resumed one would mean nothing
    storage = f"sqlite:///{database}"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    logs = out / f"{env_id}-zoo-logs-{index}"
    subprocess.run(commands(name, env_id, args, storage, logs, seed=index), check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    study = optuna.load_study(study_name="zoo" if name == "zoo" else "ours", storage=storage)
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    return {
        "study": name,
        "index": index,
        "env": env_id,
        "wall_s": wall,
        "cpu_use": cpu / wall,
        "trials": len(finished),
        "pruned": sum(t.state == TrialState.PRUNED for t in finished),
        "trials_per_hour": len(finished) / wall * 3600,
        "best_value": study.best_value,
        "best_trial": study.best_trial.number,
        "storage": storage,
    }


def retrain_runs(result: dict[str, Any], args: argparse.Namespace) -> list[tuple[Any, dict[str, Any], int, bool]]:
    """``(task, arguments, seed, sb3)`` for retraining a study's best configuration."""
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER

    from sb3_ppo_variants.tuning.objective import Task
    from sb3_ppo_variants.tuning.retrain import baseline, trial_arguments

    study = optuna.load_study(study_name=None, storage=result["storage"])
    best = study.best_trial
    task = Task.for_env(
        result["env"],
        args.n_timesteps,
        n_evaluations=args.n_evaluations,
        n_eval_episodes=5,
        n_last_evaluations=last_evaluations(args),
    )
    if result["study"] == "zoo":
        _, zoo_task, zoo_arguments = baseline(task)  # the Zoo's settings for this environment
        arguments = {**zoo_arguments, **HYPERPARAMS_CONVERTER["ppo"](best.params)}
        return [(zoo_task, arguments, FIRST_SEED + s, True) for s in range(args.seeds)]
    task = dataclasses.replace(task, n_envs=Task.from_dict(study.user_attrs["task"]).n_envs)
    return [(task, trial_arguments(best), FIRST_SEED + s, False) for s in range(args.seeds)]


def retrain_one(task: Any, arguments: dict[str, Any], seed: int, sb3: bool) -> float:
    import torch as th
    from stable_baselines3 import PPO

    from sb3_ppo_variants import PPOVariant
    from sb3_ppo_variants.tuning.objective import train_and_evaluate

    th.set_num_threads(1)
    return task.score(train_and_evaluate(task, arguments, seed, algorithm=PPO if sb3 else PPOVariant))


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| environment | study | wall s | trials (pruned) | trials per hour | CPU use | best value (own objective) "
        "| retrained best, mean ± sd (seeds) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        scores = np.array(r.get("retrained", []))
        retrained = f"{scores.mean():.1f} ± {scores.std(ddof=1):.1f} ({len(scores)})" if len(scores) > 1 else "–"
        lines.append(
            f"| {r['env']} | {r['study']} {r.get('index', 0)} | {r['wall_s']:.0f} | {r['trials']} ({r['pruned']}) "
            f"| {r['trials_per_hour']:.0f} | {r['cpu_use']:.2f} | {r['best_value']:.1f} | {retrained} |"
        )
    return "\n".join(lines)


def side_summaries(results: list[dict[str, Any]]) -> str:
    """Per environment and side: trials per hour and the retrained score over studies; each side
    against the Zoo's, with the two-level bootstrap interval of the difference."""
    lines = [
        "| environment | side | studies | trials per hour, mean over studies | retrained, mean over every run "
        "| its study means | less the Zoo's, bootstrap 95% interval |",
        "|---|---|---|---|---|---|---|",
    ]
    for env_id in dict.fromkeys(r["env"] for r in results):
        sides: dict[str, list[dict[str, Any]]] = {}
        for r in results:
            if r["env"] == env_id and r.get("retrained"):
                sides.setdefault(r["study"], []).append(r)
        for side, studies in sides.items():
            groups = [np.array(r["retrained"]) for r in studies]
            compared = ""
            if side != "zoo" and "zoo" in sides:
                zoo = [np.array(r["retrained"]) for r in sides["zoo"]]
                difference, low, high = two_level_difference(groups, zoo)
                compared = f"{difference:+.1f} [{low:+.1f}, {high:+.1f}]"
            per_hour = np.mean([r["trials_per_hour"] for r in studies])
            means = ", ".join(f"{g.mean():.1f}" for g in groups)
            lines.append(
                f"| {env_id} | {side} | {len(studies)} | {per_hour:.0f} | {np.concatenate(groups).mean():.1f} "
                f"| {means} | {compared} |"
            )
    return "\n".join(lines)


def two_level_difference(
    ours: list[np.ndarray], theirs: list[np.ndarray], resamples: int = 10_000, seed: int = 0
) -> tuple[float, float, float]:
    """The difference of two sides' mean retrained scores (every run of every study) and its
    percentile bootstrap 95% interval: studies resampled with replacement, then each resampled
    study's runs."""
    rng = np.random.default_rng(seed)

    def resampled_means(groups: list[np.ndarray]) -> np.ndarray:
        means = np.empty(resamples)
        for i in range(resamples):
            picked = [groups[j] for j in rng.integers(len(groups), size=len(groups))]
            means[i] = np.concatenate([rng.choice(g, size=len(g)) for g in picked]).mean()
        return means

    point = np.concatenate(ours).mean() - np.concatenate(theirs).mean()
    low, high = np.percentile(resampled_means(ours) - resampled_means(theirs), [2.5, 97.5])
    return float(point), float(low), float(high)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.tuning_vs_zoo", description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=["CartPole-v1", "Pendulum-v1"])
    parser.add_argument("--studies", nargs="+", choices=STUDIES, default=["zoo", "ours"], help="the sides")
    parser.add_argument("--n-studies", type=int, default=3, help="independent studies per side and environment")
    parser.add_argument("--n-trials", type=int, default=50)
    parser.add_argument("--n-timesteps", type=int, default=20_000, help="steps per trial")
    parser.add_argument("--n-evaluations", type=int, default=10)
    parser.add_argument("--n-startup-trials", type=int, default=5)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--seeds", type=int, default=10, help="fresh seeds to retrain each best configuration on")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/tuning_vs_zoo"))
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    settings = (
        f"{args.n_trials} trials of {args.n_timesteps} steps, {args.n_evaluations} evaluations of 5 episodes per "
        f"trial, {args.n_startup_trials} random trials first, {args.n_jobs} jobs; best retrained on {args.seeds} seeds"
    )
    saved = args.out / "results.json"
    earlier = json.loads(saved.read_text()) if saved.exists() else {}
    results: list[dict[str, Any]] = earlier.get("results", []) if earlier.get("settings") == settings else []
    done = {(r["env"], r["study"], r.get("index", 0)) for r in results if r.get("retrained")}

    for env_id in args.envs:
        for index in range(args.n_studies):
            for name in args.studies:  # the sides take turns, so a slower hour of the machine hits both
                if (env_id, name, index) in done:
                    continue
                result = run_study(name, env_id, args, args.out, index)
                runs = retrain_runs(result, args)
                with ProcessPoolExecutor(args.n_jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
                    result["retrained"] = list(pool.map(retrain_one, *zip(*runs, strict=True)))
                results.append(result)
                saved.write_text(json.dumps({"settings": settings, "results": results}, indent=1))
                print(f"{env_id} / {name} {index}: {result['wall_s']:.0f} s, {result['trials']} trials", flush=True)

    report = f"{settings}\n\n{table(results)}\n\n{side_summaries(results)}\n"
    (args.out / "results.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
