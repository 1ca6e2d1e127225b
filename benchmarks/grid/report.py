"""The grid's report, read from its study.

- ``OUT/grid.csv``: every evaluation (env, variant, seed, timesteps, mean return, error);
- ``OUT/curves-<env>.png`` and ``.html`` (plotly, interactive, working offline): learning
  curves, mean and 95% confidence interval across seeds;
- ``OUT/aggregate.png`` and ``OUT/profiles.png``: rliable's interval estimates and performance
  profiles of the normalised final scores;
- ``OUT/results.md``: per-environment final scores, the aggregate tables and the compute (measured
  per environment, and estimated for the cells still waiting).

Scores are normalised per environment as ``(score - random policy) / (Zoo's PPO at its full
budget - random policy)``. Aggregates follow Agarwal et al. 2021, "Deep Reinforcement Learning
at the Edge of the Statistical Precipice" (arXiv:2108.13264; the ``rliable`` library):
interquartile mean and mean with 95% stratified-bootstrap confidence intervals, and the
probability that the variant beats SB3's PPO on a run drawn at random. A variant is *better*
(or *worse*) than SB3's PPO with confidence when that probability's interval lies above (or
below) 0.5.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from benchmarks.grid.cells import LAST_EVALUATIONS, SB3, Cell, EnvProtocol, random_score
from benchmarks.grid.queue import cell_of, is_result, protocol_of


@dataclass
class Run:
    """A finished cell as the report reads it."""

    cell: Cell
    evaluations: list[tuple[int, float]]
    score: float
    """NaN for a cell that raised."""
    seconds: float
    error: str | None


def runs_of(study: optuna.Study) -> list[Run]:
    """Each cell's outcome: its last trial that scored, else its last that raised."""
    best: dict[Cell, optuna.trial.FrozenTrial] = {}
    for trial in study.get_trials(deepcopy=False):
        cell = cell_of(trial)
        if cell is None or not is_result(trial):
            continue
        kept = best.get(cell)
        if kept is None or (trial.state == TrialState.COMPLETE) >= (kept.state == TrialState.COMPLETE):
            best[cell] = trial
    return [
        Run(
            cell=cell,
            evaluations=sorted(trial.intermediate_values.items()),
            score=trial.value if trial.state == TrialState.COMPLETE else math.nan,
            seconds=float(trial.user_attrs.get("seconds", math.nan)),
            error=trial.user_attrs.get("fail_reason"),
        )
        for cell, trial in sorted(best.items())
    ]


def write_csv(runs: list[Run], path: Path) -> None:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["env", "variant", "seed", "timesteps", "mean_return", "error"])
        for run in runs:
            cell = run.cell
            for timesteps, mean_return in run.evaluations or [(None, None)]:
                writer.writerow([cell.env, cell.variant, cell.seed, timesteps, mean_return, run.error or ""])


def _t_interval(values: np.ndarray) -> np.ndarray:
    """Half-width of the 95% Student-t interval of the mean, per column (0 for a single run)."""
    from scipy import stats

    n = values.shape[0]
    if n < 2:
        return np.zeros(values.shape[1])
    return stats.t.ppf(0.975, n - 1) * values.std(axis=0, ddof=1) / math.sqrt(n)


def _curves(
    runs: list[Run], env_id: str, variants: list[str]
) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """``(variant, steps, mean, 95% half-width)`` of each variant with runs on ``env_id``."""
    for variant in variants:
        curves = [r.evaluations for r in runs if r.evaluations and (r.cell.env, r.cell.variant) == (env_id, variant)]
        if curves:
            length = min(len(curve) for curve in curves)
            returns = np.array([[v for _, v in curve[:length]] for curve in curves])
            yield variant, np.array([t for t, _ in curves[0][:length]]), returns.mean(axis=0), _t_interval(returns)


def plot_curves(runs: list[Run], envs: list[str], variants: list[str], out: Path) -> list[Path]:
    """``curves-<env>.png`` and ``curves-<env>.html`` for each environment; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go
    from plotly.colors import DEFAULT_PLOTLY_COLORS

    from tuning.report import write_html

    paths = []
    for env_id in envs:
        figure, axis = plt.subplots(figsize=(7, 4.5))
        page = go.Figure()
        for index, (variant, steps, mean, half) in enumerate(_curves(runs, env_id, variants)):
            style = {"color": "black", "linewidth": 2.2} if variant == SB3 else {"linewidth": 1.0}
            (line,) = axis.plot(steps, mean, label=variant, **style)
            axis.fill_between(steps, mean - half, mean + half, color=line.get_color(), alpha=0.1)
            band = np.concatenate([mean + half, (mean - half)[::-1]])
            color = "black" if variant == SB3 else DEFAULT_PLOTLY_COLORS[index % len(DEFAULT_PLOTLY_COLORS)]
            page.add_scatter(x=steps, y=mean, name=variant, legendgroup=variant, line={"color": color, "width": 1.5})
            page.add_scatter(
                x=np.concatenate([steps, steps[::-1]]),
                y=band,
                fill="toself",
                fillcolor=color,
                opacity=0.15,
                line_width=0,
                legendgroup=variant,
                showlegend=False,
                hoverinfo="skip",
            )
        title = f"{env_id}: mean and 95% CI over seeds"
        axis.set_title(title)
        axis.set_xlabel("environment steps")
        axis.set_ylabel("evaluation return")
        axis.legend(fontsize=6, ncol=3)
        figure.tight_layout()
        path = out / f"curves-{env_id}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        page.update_layout(title=title, xaxis_title="environment steps", yaxis_title="evaluation return")
        paths += [path, write_html(page, out / f"curves-{env_id}.html")]
    return paths


def random_scores(envs: list[str], out: Path) -> dict[str, float]:
    """Each environment's random-policy score, cached in ``OUT/random_scores.json``."""
    cache = out / "random_scores.json"
    randoms = json.loads(cache.read_text()) if cache.exists() else {}
    for env_id in envs:
        if env_id not in randoms:
            randoms[env_id] = random_score(env_id)
    cache.write_text(json.dumps(randoms, indent=1))
    return randoms


def normalised_scores(
    runs: list[Run], envs: list[str], variants: list[str], protocols: dict[str, EnvProtocol], out: Path
) -> dict[str, np.ndarray]:
    """``variant -> (n_seeds, n_envs)`` normalised scores, over the seeds it finished on every env.

    A variant whose cell raised scores NaN there; a variant with no such seed is left out.
    """
    randoms = random_scores(envs, out)
    by_cell = {run.cell: run.score for run in runs}
    matrices = {}
    for variant in variants:
        seeds = sorted({r.cell.seed for r in runs if r.cell.variant == variant})
        complete = [s for s in seeds if all(Cell(e, variant, s) in by_cell for e in envs)]
        if not complete:
            continue
        matrix = np.array([[by_cell[Cell(e, variant, s)] for e in envs] for s in complete])
        low = np.array([randoms[e] for e in envs])
        high = np.array([protocols[e].zoo_ppo_score for e in envs])
        matrices[variant] = (matrix - low) / (high - low)
    return matrices


MIN_SEEDS_FOR_VERDICT = 3
"""Fewer seeds than this on either side and the bootstrap interval says nothing: no verdict."""


def _verdict(low: float, high: float, seeds: int) -> str:
    if seeds < MIN_SEEDS_FOR_VERDICT:
        return f"(< {MIN_SEEDS_FOR_VERDICT} seeds)"
    return "**better**" if low > 0.5 else "**worse**" if high < 0.5 else "–"


def aggregate(matrices: dict[str, np.ndarray], out: Path, reps: int, name: str) -> list[str]:
    """rliable's IQM, mean and probability of improvement over SB3 with bootstrap CIs, and plots."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import library as rly
    from rliable import metrics, plot_utils

    scored = {v: m for v, m in matrices.items() if not np.isnan(m).any()}
    if len(scored) < len(matrices):
        failed = sorted(set(matrices) - set(scored))
        print(f"{name}: aggregate leaves out variants with failed cells: {', '.join(failed)}", file=sys.stderr)
    if not scored:
        return []

    def iqm_and_mean(scores: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(scores), metrics.aggregate_mean(scores)])

    random_state = np.random.RandomState(0)  # a report read twice from one study is the same report
    np.random.seed(0)  # the performance profiles' bootstrap draws from numpy's global generator
    estimates, intervals = rly.get_interval_estimates(scored, iqm_and_mean, reps=reps, random_state=random_state)
    improvement: dict[str, tuple[float, float, float]] = {}
    if SB3 in scored:
        pairs = {f"{v},{SB3}": (scored[v], scored[SB3]) for v in scored if v != SB3}
        if pairs:
            probabilities, probability_cis = rly.get_interval_estimates(
                pairs, metrics.probability_of_improvement, reps=max(reps // 4, 50), random_state=random_state
            )
            for key, value in probabilities.items():
                low, high = np.ravel(probability_cis[key])[:2]
                improvement[key.split(",")[0]] = (float(np.ravel(value)[0]), float(low), float(high))
    lines = [
        "| variant | seeds | IQM [95% CI] | mean [95% CI] | P(variant > SB3 PPO) [95% CI] | vs SB3 PPO |",
        "|---|---|---|---|---|---|",
    ]
    for variant in sorted(scored, key=lambda v: -estimates[v][0]):
        iqm, mean = estimates[variant]
        (iqm_low, mean_low), (iqm_high, mean_high) = intervals[variant]
        if variant in improvement:
            p, low, high = improvement[variant]
            seeds = min(scored[variant].shape[0], scored[SB3].shape[0])
            better, verdict = f"{p:.2f} [{low:.2f}, {high:.2f}]", _verdict(low, high, seeds)
        else:
            better, verdict = ("(reference)", "") if variant == SB3 else ("", "")
        lines.append(
            f"| {variant} | {scored[variant].shape[0]} | {iqm:.3f} [{iqm_low:.3f}, {iqm_high:.3f}] "
            f"| {mean:.3f} [{mean_low:.3f}, {mean_high:.3f}] | {better} | {verdict} |"
        )

    order = sorted(scored, key=lambda v: estimates[v][0])
    figure, _ = plot_utils.plot_interval_estimates(
        estimates, intervals, metric_names=["IQM", "Mean"], algorithms=order, xlabel="normalised score"
    )
    figure.savefig(out / f"aggregate{name}.png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    thresholds = np.linspace(0.0, 1.5, 61)
    profiles, profile_cis = rly.create_performance_profile(scored, thresholds)
    figure, axis = plt.subplots(figsize=(7, 4.5))
    plot_utils.plot_performance_profiles(
        profiles, thresholds, performance_profile_cis=profile_cis, ax=axis, xlabel=r"normalised score $\tau$"
    )
    axis.legend(fontsize=6, ncol=3)
    figure.savefig(out / f"profiles{name}.png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return lines


def per_env_table(runs: list[Run], envs: list[str], variants: list[str]) -> list[str]:
    """Final score per environment: mean ± sd over seeds (seeds), failures counted."""
    lines = ["| variant | " + " | ".join(envs) + " |", "|---|" + "---|" * len(envs)]
    for variant in variants:
        cells = []
        for env_id in envs:
            outcomes = [r for r in runs if r.cell.env == env_id and r.cell.variant == variant]
            scores = [r.score for r in outcomes if not math.isnan(r.score)]
            failed = len(outcomes) - len(scores)
            text = f"{np.mean(scores):.1f} ± {np.std(scores):.1f} ({len(scores)})" if scores else "–"
            cells.append(text + (f", {failed} failed" if failed else ""))
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return lines


def compute_table(runs: list[Run], waiting: list[Cell], envs: list[str]) -> list[str]:
    """What each environment's cells cost, measured, and what its waiting cells would cost at that rate.

    A cell's cost is the wall time of its training and evaluations in one worker (one torch
    thread), as the study recorded it, so cells run beside other work count slower. Cells that
    raised are left out of the rate: most raise at construction.
    """
    lines = [
        "| environment | finished cells | CPU-hours | s per cell | waiting cells | their estimate (CPU-hours) |",
        "|---|---|---|---|---|---|",
    ]
    total_spent = total_estimate = 0.0
    for env_id in envs:
        done = [r for r in runs if r.cell.env == env_id]
        left = sum(cell.env == env_id for cell in waiting)
        if not done and not left:
            continue
        spent = sum(r.seconds for r in done if not math.isnan(r.seconds)) / 3600
        timed = [r.seconds for r in done if not math.isnan(r.score + r.seconds)]
        mean = float(np.mean(timed)) if timed else None
        estimate = left * (mean or 0.0) / 3600
        total_spent += spent
        total_estimate += estimate
        rate = "–" if mean is None else f"{mean:.0f}"
        estimated = "not measured yet" if left and mean is None else f"{estimate:.2f}"
        lines.append(f"| {env_id} | {len(done)} | {spent:.2f} | {rate} | {left} | {estimated} |")
    lines.append(f"| all | {len(runs)} | {total_spent:.2f} | | {len(waiting)} | {total_estimate:.2f} |")
    return lines


def waiting_cells(study: optuna.Study) -> list[Cell]:
    """The cells enqueued or in training that have no outcome yet."""
    trials = study.get_trials(deepcopy=False)
    finished = {cell_of(t) for t in trials if is_result(t)}
    unfinished = {cell_of(t) for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)}
    return sorted(unfinished - finished - {None})


def report(
    study: optuna.Study,
    out: Path,
    envs: list[str] | None = None,
    variants: list[str] | None = None,
    seeds: list[int] | None = None,
    reps: int = 2000,
    aggregates: dict[str, list[str]] | None = None,
) -> str:
    """Write the report of ``study``'s finished cells (default: all of them) under ``out``.

    :param aggregates: Named groups of environments to aggregate over, each with its own
        table and plots; a group is reported when all its environments have finished cells, and
        once if two groups are the same (default, and when none is: one over all ``envs``). A
        variant enters a group's table with the seeds it finished on every environment of it.
    """
    runs = runs_of(study)
    asked = envs or sorted({r.cell.env for r in runs})

    def selected(cell: Cell) -> bool:
        return (
            cell.env in asked
            and (variants is None or cell.variant in variants)
            and (seeds is None or cell.seed in seeds)
        )

    runs = [r for r in runs if selected(r.cell)]
    waiting = [cell for cell in waiting_cells(study) if selected(cell)]
    envs = [e for e in asked if any(r.cell.env == e for r in runs)]
    variants = [v for v in variants or _rows(runs) if any(r.cell.variant == v for r in runs)]
    out.mkdir(parents=True, exist_ok=True)
    protocols = {env_id: protocol_of(study, env_id) for env_id in envs}
    write_csv(runs, out / "grid.csv")
    plot_curves(runs, envs, variants, out)
    budgets = ", ".join(f"{e} {p.timesteps:,}" for e, p in protocols.items())
    text = [
        f"Budgets (environment steps): {budgets}.",
        "",
        f"Final score (mean of the last {LAST_EVALUATIONS} evaluations), mean ± sd over seeds (seeds):",
        "",
        *per_env_table(runs, envs, variants),
    ]
    for name, group in _groups(aggregates, envs).items():
        matrices = normalised_scores(runs, group, variants, protocols, out)
        text += [
            "",
            f"Normalised score, (score - random) / (Zoo PPO at full budget - random), aggregated over "
            f"{', '.join(group)} (rliable, {reps} bootstrap samples):",
            "",
            *aggregate(matrices, out, reps, f"-{name}" if name else ""),
        ]
    text += [
        "",
        "Compute: each cell's wall time in one worker with one torch thread, as the study recorded it; "
        "the waiting cells' estimate is their count times the environment's mean cell:",
        "",
        *compute_table(runs, waiting, asked),
    ]
    errors = [f"- {r.cell}: {r.error}" for r in runs if r.error]
    if errors:
        text += ["", "Failed cells:", *errors]
    result = "\n".join(text) + "\n"
    (out / "results.md").write_text(result)
    return result


def _groups(aggregates: dict[str, list[str]] | None, envs: list[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name, group in (aggregates or {}).items():
        if set(group) <= set(envs) and sorted(group) not in [sorted(g) for g in groups.values()]:
            groups[name] = group
    return groups or {"": envs}


def _rows(runs: list[Run]) -> list[str]:
    """SB3's row first, then the variants in the order of ``VARIANTS``."""
    from sb3_ppo_variants.variants import VARIANTS

    present = {r.cell.variant for r in runs}
    order = [SB3, *VARIANTS]
    return [v for v in order if v in present] + sorted(present - set(order))
