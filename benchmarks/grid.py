"""What each PPO variant learns: a grid of variants x environments x seeds, SB3's PPO as a row.

Every cell trains from the RL Baselines3 Zoo's tuned PPO hyperparameters for its environment
(the shared base; each variant changes only its own part, see ``sb3_ppo_variants.variants``)
and evaluates the deterministic policy on a separate environment every ``eval_every`` steps.
Cells run in parallel processes with one torch thread each; a finished cell is a file in
``OUT/cells``, so an interrupted grid resumes where it stopped. Then the report:

- ``OUT/grid.csv``: every evaluation (env, variant, seed, timesteps, mean return);
- ``OUT/curves-<env>.png``: learning curves, mean and min-max band across seeds;
- ``OUT/aggregate.png`` and ``OUT/profiles.png``: rliable's interval estimates and performance
  profiles of the normalised final scores;
- ``OUT/results.md``: per-environment table and the aggregate table.

A run's score is the mean of its last ``LAST_EVALS`` evaluations. Scores are normalised per
environment as ``(score - random policy) / (Zoo's PPO at its full budget - random policy)``.
Aggregates follow Agarwal et al. 2021 (arXiv:2108.13264; the ``rliable`` library): interquartile
mean and mean with 95% stratified-bootstrap confidence intervals, and the probability that the
variant beats SB3's PPO on a run drawn at random.

    python benchmarks/grid.py --jobs 2                           # the README's grid
    python benchmarks/grid.py --envs CartPole-v1 --variants sb3-ppo spo --seeds 0 --budget-scale 0.1
    python benchmarks/grid.py --report-only                      # tables and plots from finished cells
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from tuning.zoo import zoo_ppo_arguments

LAST_EVALS = 3
SB3 = "sb3-ppo"


@dataclass
class EnvSetup:
    """One environment of the grid: its budget and evaluation (hyperparameters: ``tuning.zoo``)."""

    timesteps: int
    eval_every: int
    zoo_ppo_score: float
    """The Zoo's PPO at its full budget (benchmark.md), the top of the normalised scale."""
    eval_episodes: int = 10


ENVS: dict[str, EnvSetup] = {
    "CartPole-v1": EnvSetup(timesteps=50_000, eval_every=5_000, zoo_ppo_score=500.0),
    "Acrobot-v1": EnvSetup(timesteps=100_000, eval_every=10_000, zoo_ppo_score=-73.506),
    "LunarLander-v3": EnvSetup(timesteps=200_000, eval_every=40_000, eval_episodes=5, zoo_ppo_score=242.119),
    "Pendulum-v1": EnvSetup(timesteps=100_000, eval_every=8_192, zoo_ppo_score=-172.225),
    "HalfCheetah-v5": EnvSetup(timesteps=51_200, eval_every=10_240, eval_episodes=5, zoo_ppo_score=5819.099),
    "Hopper-v5": EnvSetup(timesteps=51_200, eval_every=10_240, eval_episodes=5, zoo_ppo_score=2410.435),
}


# --- one cell ---------------------------------------------------------------------------


def cell_path(out: Path, env_id: str, variant: str, seed: int) -> Path:
    return out / "cells" / f"{env_id}__{variant}__{seed}.json"


def run_cell(env_id: str, variant: str, seed: int, budget_scale: float, out: str) -> dict[str, Any]:
    """Train and evaluate one (environment, variant, seed); write its file; return its record.

    The cell trains through ``tuning``'s :func:`~tuning.objective.train_and_evaluate`, the loop a
    tuning trial runs (one torch thread, evaluation environments seeded apart from training).
    """
    from stable_baselines3 import PPO

    from sb3_ppo_variants import PPOVariant
    from sb3_ppo_variants.variants import variant_arguments, variant_policy
    from tuning.objective import Task, train_and_evaluate

    setup = ENVS[env_id]
    timesteps = max(int(setup.timesteps * budget_scale), 1)
    n_evaluations = min(max(timesteps // max(int(setup.eval_every * budget_scale), 1), 1), timesteps)
    task = Task.for_env(
        env_id,
        timesteps,
        n_evaluations=n_evaluations,
        n_eval_episodes=setup.eval_episodes,
        n_eval_envs=1,
        n_last_evaluations=min(LAST_EVALS, n_evaluations),
    )
    arguments = zoo_ppo_arguments(env_id)
    algorithm, arguments = (PPO, arguments) if variant == SB3 else (PPOVariant, variant_arguments(variant, arguments))
    task = dataclasses.replace(task, policy=variant_policy(variant, task.policy))  # PPG's policy has an extra head
    evaluations: list[list[float]] = []

    def keep(timesteps: int, mean_return: float) -> bool:
        evaluations.append([timesteps, mean_return])
        return True

    start = time.perf_counter()
    record: dict[str, Any] = {"env": env_id, "variant": variant, "seed": seed, "timesteps": timesteps}
    try:
        train_and_evaluate(task, arguments, seed, algorithm=algorithm, on_evaluation=keep)
    except Exception as error:  # a diverging variant is a result of the grid, not its end
        record["error"] = f"{type(error).__name__}: {error}"
    record["seconds"] = time.perf_counter() - start
    record["evaluations"] = evaluations
    path = cell_path(Path(out), env_id, variant, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record))
    os.replace(temporary, path)  # a cell is finished only once its whole file is there
    return record


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
    return total / episodes


# --- the report -------------------------------------------------------------------------


def load_cells(out: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted((out / "cells").glob("*.json"))]


def score(record: dict[str, Any]) -> float:
    returns = [r for _, r in record["evaluations"][-LAST_EVALS:]]
    return float(np.mean(returns)) if returns and "error" not in record else math.nan


def write_csv(records: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["env", "variant", "seed", "timesteps", "mean_return", "error"])
        for r in records:
            for timesteps, mean_return in r["evaluations"] or [[None, None]]:
                writer.writerow([r["env"], r["variant"], r["seed"], timesteps, mean_return, r.get("error", "")])


def plot_curves(records: list[dict[str, Any]], envs: list[str], variants: list[str], out: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for env_id in envs:
        figure, axis = plt.subplots(figsize=(6, 4))
        for variant in variants:
            runs = [r for r in records if r["env"] == env_id and r["variant"] == variant and r["evaluations"]]
            if not runs:
                continue
            length = min(len(r["evaluations"]) for r in runs)
            steps = np.array([t for t, _ in runs[0]["evaluations"][:length]])
            returns = np.array([[v for _, v in r["evaluations"][:length]] for r in runs])
            style = {"color": "black", "linewidth": 2.2} if variant == SB3 else {}
            (line,) = axis.plot(steps, returns.mean(axis=0), label=variant, **style)
            axis.fill_between(steps, returns.min(axis=0), returns.max(axis=0), color=line.get_color(), alpha=0.12)
        axis.set_title(f"{env_id}: mean and min-max over seeds")
        axis.set_xlabel("environment steps")
        axis.set_ylabel("evaluation return")
        axis.legend(fontsize=7, ncol=2)
        figure.tight_layout()
        path = out / f"curves-{env_id}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
    return paths


def normalised_scores(
    records: list[dict[str, Any]], envs: list[str], variants: list[str], seeds: list[int], out: Path
) -> dict[str, np.ndarray]:
    """``variant -> (n_seeds, n_envs)`` normalised final scores (NaN where a cell is missing)."""
    cache = out / "random_scores.json"
    randoms = json.loads(cache.read_text()) if cache.exists() else {}
    for env_id in envs:
        if env_id not in randoms:
            randoms[env_id] = random_score(env_id)
    cache.write_text(json.dumps(randoms, indent=1))
    by_key = {(r["env"], r["variant"], r["seed"]): score(r) for r in records}
    matrices = {}
    for variant in variants:
        matrix = np.full((len(seeds), len(envs)), np.nan)
        for i, seed in enumerate(seeds):
            for j, env_id in enumerate(envs):
                raw = by_key.get((env_id, variant, seed), math.nan)
                matrix[i, j] = (raw - randoms[env_id]) / (ENVS[env_id].zoo_ppo_score - randoms[env_id])
        matrices[variant] = matrix
    return matrices


def aggregate(matrices: dict[str, np.ndarray], out: Path, reps: int) -> list[str]:
    """rliable's IQM, mean and probability of improvement over SB3 with bootstrap CIs, and plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import library as rly
    from rliable import metrics, plot_utils

    complete = {v: m for v, m in matrices.items() if not np.isnan(m).any()}
    if len(complete) < len(matrices):
        missing = sorted(set(matrices) - set(complete))
        print(f"aggregate leaves out variants with missing or failed cells: {', '.join(missing)}", file=sys.stderr)
    if not complete:
        return []

    def iqm_and_mean(scores: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores)])

    estimates, intervals = rly.get_interval_estimates(complete, iqm_and_mean, reps=reps)
    lines = [
        "| variant | IQM [95% CI] | mean [95% CI] | P(variant > SB3 PPO) [95% CI] |",
        "|---|---|---|---|",
    ]
    improvement: dict[str, tuple[float, float, float]] = {}
    if SB3 in complete:
        pairs = {f"{v},{SB3}": (complete[v], complete[SB3]) for v in complete if v != SB3}
        if pairs:
            probabilities, probability_cis = rly.get_interval_estimates(
                pairs, metrics.probability_of_improvement, reps=max(reps // 4, 50)
            )
            for key, value in probabilities.items():
                low, high = probability_cis[key][:, 0] if probability_cis[key].ndim == 2 else probability_cis[key]
                improvement[key.split(",")[0]] = (float(value), float(low), float(high))
    for variant in sorted(complete, key=lambda v: -estimates[v][0]):
        iqm, mean = estimates[variant]
        (iqm_low, mean_low), (iqm_high, mean_high) = intervals[variant]
        if variant in improvement:
            p, low, high = improvement[variant]
            better = f"{p:.2f} [{low:.2f}, {high:.2f}]"
        else:
            better = "(reference)" if variant == SB3 else ""
        lines.append(
            f"| {variant} | {iqm:.3f} [{iqm_low:.3f}, {iqm_high:.3f}] | {mean:.3f} [{mean_low:.3f}, {mean_high:.3f}] "
            f"| {better} |"
        )

    order = sorted(complete, key=lambda v: estimates[v][0])
    figure, _ = plot_utils.plot_interval_estimates(
        estimates, intervals, metric_names=["IQM", "Mean"], algorithms=order, xlabel="normalised score"
    )
    figure.savefig(out / "aggregate.png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    thresholds = np.linspace(0.0, 1.5, 61)
    profiles, profile_cis = rly.create_performance_profile(complete, thresholds)
    figure, axis = plt.subplots(figsize=(7, 4.5))
    plot_utils.plot_performance_profiles(
        profiles, thresholds, performance_profile_cis=profile_cis, ax=axis, xlabel=r"normalised score $\tau$"
    )
    axis.legend(fontsize=7, ncol=2)
    figure.savefig(out / "profiles.png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return lines


def per_env_table(records: list[dict[str, Any]], envs: list[str], variants: list[str]) -> list[str]:
    """Final score, mean ± sd over seeds (n seeds), per environment; failures counted."""
    lines = ["| variant | " + " | ".join(envs) + " |", "|---|" + "---|" * len(envs)]
    for variant in variants:
        cells = []
        for env_id in envs:
            runs = [r for r in records if r["env"] == env_id and r["variant"] == variant]
            scores = [score(r) for r in runs if not math.isnan(score(r))]
            failed = len(runs) - len(scores)
            text = f"{np.mean(scores):.1f} ± {np.std(scores):.1f} ({len(scores)})" if scores else "–"
            cells.append(text + (f", {failed} failed" if failed else ""))
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return lines


def report(out: Path, envs: list[str], variants: list[str], seeds: list[int], reps: int) -> str:
    records = [r for r in load_cells(out) if r["env"] in envs and r["variant"] in variants and r["seed"] in seeds]
    write_csv(records, out / "grid.csv")
    plot_curves(records, envs, variants, out)
    matrices = normalised_scores(records, envs, variants, seeds, out)
    seconds = sum(r["seconds"] for r in records)
    text = [
        f"Final score (mean of the last {LAST_EVALS} evaluations), mean ± sd over seeds (seeds):",
        "",
        *per_env_table(records, envs, variants),
        "",
        "Normalised score, (score - random) / (Zoo PPO at full budget - random), aggregated over "
        f"{len(envs)} environments x {len(seeds)} seeds (rliable, {reps} bootstrap samples):",
        "",
        *aggregate(matrices, out, reps),
        "",
        f"{len(records)} cells, {seconds / 3600:.2f} CPU-hours of training.",
    ]
    errors = [f"- {r['env']} / {r['variant']} / seed {r['seed']}: {r['error']}" for r in records if "error" in r]
    if errors:
        text += ["", "Failed cells:", *errors]
    result = "\n".join(text) + "\n"
    (out / "results.md").write_text(result)
    return result


# --- the command --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    from sb3_ppo_variants.variants import VARIANTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", default=list(ENVS), choices=list(ENVS))
    parser.add_argument("--variants", nargs="+", default=[SB3, *[v for v in VARIANTS if v != "ppo"]])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="parallel processes")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every budget (a quick look: 0.1)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/grid"))
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap samples for the CIs")
    parser.add_argument("--report-only", action="store_true", help="skip training; report the finished cells")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.variants) - {SB3, *VARIANTS})
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}: accepted values are {SB3}, {', '.join(VARIANTS)}")

    args.out.mkdir(parents=True, exist_ok=True)
    if not args.report_only:
        todo = [
            (env_id, variant, seed)
            for seed in args.seeds
            for env_id in args.envs
            for variant in args.variants
            if not cell_path(args.out, env_id, variant, seed).exists()
        ]
        done = len(args.envs) * len(args.variants) * len(args.seeds) - len(todo)
        print(f"{len(todo)} cells to run, {done} already finished, {args.jobs} processes", flush=True)
        run_grid(todo, args.jobs, args.budget_scale, args.out)
    print(report(args.out, args.envs, args.variants, args.seeds, args.bootstrap))


def run_grid(todo: list[tuple[str, str, int]], jobs: int, budget_scale: float, out: Path) -> None:
    from tqdm import tqdm

    start = time.perf_counter()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = {pool.submit(run_cell, *cell, budget_scale, str(out)): cell for cell in todo}
        with tqdm(total=len(todo), unit="cell", dynamic_ncols=True) as progress:
            for future in as_completed(futures):
                record = future.result()
                outcome = record.get("error") or f"score {score(record):.1f}"
                progress.write(
                    f"{record['env']:15s} {record['variant']:22s} seed {record['seed']}: {outcome} "
                    f"({record['seconds']:.0f} s)"
                )
                progress.update()
    print(f"grid finished in {(time.perf_counter() - start) / 60:.1f} min", flush=True)


if __name__ == "__main__":
    main()
