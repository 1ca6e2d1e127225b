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
below) 0.5. Each interval draws its bootstrap samples on a stream of its own, seeded by the row and
the environments, so a row's interval depends on its cells alone.
"""

from __future__ import annotations

import csv
import json
import math
import sys
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from benchmarks.grid.cells import LAST_EVALUATIONS, Cell, EnvProtocol, random_score
from benchmarks.grid.queue import cell_of, is_current, is_result, protocol_of
from benchmarks.grid.rows import LEARNING_RATES, SB3, base_variant, control_setting, is_control
from sb3_ppo_variants.tuning.report import write_html
from sb3_ppo_variants.variants import variant_names


@dataclass
class Run:
    """A finished cell as the report reads it."""

    cell: Cell
    evaluations: list[tuple[int, float]]
    score: float
    """NaN for a cell that raised."""
    seconds: float
    """What the cell cost: its worker's CPU seconds, or for a cell that recorded none (before
    they were recorded) its wall seconds."""
    error: str | None
    learning_rates: list[float] = field(default_factory=list)
    """The learning rate of every ``train()`` call, for a row that adapts it."""


def runs_of(study: optuna.Study) -> list[Run]:
    """Each cell's outcome under its row's current identity: its last trial that scored, else its
    last that raised (cells of a row's earlier version are left out: see :func:`superseded_cells`)."""
    best: dict[Cell, optuna.trial.FrozenTrial] = {}
    for trial in study.get_trials(deepcopy=False):
        cell = cell_of(trial)
        if cell is None or not is_result(trial) or not is_current(study, trial):
            continue
        kept = best.get(cell)
        if kept is None or (trial.state == TrialState.COMPLETE) >= (kept.state == TrialState.COMPLETE):
            best[cell] = trial
    return [
        Run(
            cell=cell,
            evaluations=sorted(trial.intermediate_values.items()),
            score=trial.value if trial.state == TrialState.COMPLETE else math.nan,
            seconds=cost_seconds(trial),
            error=trial.user_attrs.get("fail_reason"),
            learning_rates=list(trial.user_attrs.get(LEARNING_RATES, [])),
        )
        for cell, trial in sorted(best.items())
    ]


def cost_seconds(trial: optuna.trial.FrozenTrial) -> float:
    """A cell's cost in seconds: see :attr:`Run.seconds`."""
    return float(trial.user_attrs.get("cpu_seconds", trial.user_attrs.get("seconds", math.nan)))


def superseded_cells(study: optuna.Study) -> list[tuple[Cell, float]]:
    """Finished cells of a row's earlier version (its code or settings changed since), with their
    seconds: computed, paid for, and left out of the tables."""
    return [
        (cell, cost_seconds(t))
        for t in study.get_trials(deepcopy=False)
        if (cell := cell_of(t)) is not None and is_result(t) and not is_current(study, t)
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


def row_colors(variants: list[str]) -> dict[str, str]:
    """A colour per row that no other row of the plot shares (matplotlib's 20-colour tables, then
    the 40 of tab20b and tab20c), black for SB3's PPO."""
    import matplotlib
    from matplotlib.colors import to_hex

    palette = [to_hex(c) for name in ("tab20", "tab20b", "tab20c") for c in matplotlib.colormaps[name].colors]
    others = [v for v in variants if v != SB3]
    colors = {v: palette[i % len(palette)] for i, v in enumerate(others)}
    return {**colors, SB3: "#000000"}


def plot_curves(runs: list[Run], envs: list[str], variants: list[str], out: Path) -> list[Path]:
    """``curves-<env>.png`` and ``curves-<env>.html`` for each environment; returns their paths.

    Each row has a colour of its own; SB3's PPO is drawn last, on top; the confidence bands are
    clipped to the range of returns any run reached on that environment, so CartPole's band does
    not rise above its maximum of 500."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import plotly.graph_objects as go

    colors = row_colors(variants)
    drawn = [v for v in variants if v != SB3] + [v for v in variants if v == SB3]
    paths = []
    for env_id in envs:
        returns = [v for r in runs if r.cell.env == env_id for _, v in r.evaluations]
        if not returns:
            continue
        low, high = min(returns), max(returns)
        figure, axis = plt.subplots(figsize=(8, 5.5))
        page = go.Figure()
        for variant, steps, mean, half in _curves(runs, env_id, drawn):
            reference = variant == SB3
            color = colors[variant]
            axis.plot(
                steps,
                mean,
                label=variant,
                color=color,
                linewidth=2.4 if reference else 1.0,
                zorder=3 if reference else 2,
            )
            lower, upper = np.clip(mean - half, low, high), np.clip(mean + half, low, high)
            axis.fill_between(steps, lower, upper, color=color, alpha=0.08, zorder=1)
            page.add_scatter(
                x=steps,
                y=mean,
                name=variant,
                legendgroup=variant,
                line={"color": color, "width": 3 if reference else 1.5},
            )
            page.add_scatter(
                x=np.concatenate([steps, steps[::-1]]),
                y=np.concatenate([upper, lower[::-1]]),
                fill="toself",
                fillcolor=color,
                opacity=0.12,
                line_width=0,
                legendgroup=variant,
                showlegend=False,
                hoverinfo="skip",
            )
        title = f"{env_id}: mean and 95% CI over seeds"
        axis.set_title(title)
        axis.set_xlabel("environment steps")
        axis.set_ylabel("evaluation return")
        axis.legend(fontsize=6, ncol=2, loc="center left", bbox_to_anchor=(1.01, 0.5))
        figure.tight_layout()
        path = out / f"curves-{env_id}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        page.update_layout(title=title, xaxis_title="environment steps", yaxis_title="evaluation return")
        paths += [path, write_html(page, out / f"curves-{env_id}.html")]
    return paths


def _learning_rates(runs: list[Run], env_id: str) -> dict[str, list[list[float]]]:
    """``row -> [each seed's learning rates]`` of the rows that recorded them on ``env_id``."""
    by_row: dict[str, list[list[float]]] = {}
    for run in runs:
        if run.cell.env == env_id and run.learning_rates:
            by_row.setdefault(run.cell.variant, []).append(run.learning_rates)
    return by_row


def plot_learning_rates(runs: list[Run], envs: list[str], out: Path) -> list[Path]:
    """``learning-rates-<env>.png``: each adaptive row's learning rate per ``train()`` call, median and
    range over seeds (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for env_id in envs:
        by_row = _learning_rates(runs, env_id)
        if not by_row:
            continue
        figure, axis = plt.subplots(figsize=(7, 4))
        for row, series in sorted(by_row.items()):
            length = min(len(s) for s in series)
            rates = np.array([s[:length] for s in series])
            calls = np.arange(1, length + 1)
            (line,) = axis.plot(calls, np.median(rates, axis=0), label=f"{row} (median of {len(series)} seeds)")
            axis.fill_between(calls, rates.min(axis=0), rates.max(axis=0), color=line.get_color(), alpha=0.15)
        axis.set_yscale("log")
        axis.set_title(f"{env_id}: learning rate of each train() call")
        axis.set_xlabel("train() call")
        axis.set_ylabel("learning rate")
        axis.legend(fontsize=7)
        figure.tight_layout()
        path = out / f"learning-rates-{env_id}.png"
        figure.savefig(path, dpi=110)
        plt.close(figure)
        paths.append(path)
    return paths


def learning_rate_table(runs: list[Run], envs: list[str]) -> list[str]:
    """Each adaptive row's learning rates over all calls and seeds: median, 90th percentile, maximum
    (the controls' fixed rates are taken from these)."""
    lines = [
        "| environment | row | seeds | calls | median | 90th percentile | maximum |",
        "|---|---|---|---|---|---|---|",
    ]
    for env_id in envs:
        by_row = _learning_rates(runs, env_id)
        for row, series in sorted(by_row.items()):
            rates = np.concatenate([np.asarray(s) for s in series])
            lines.append(
                f"| {env_id} | {row} | {len(series)} | {len(rates)} | {np.median(rates):.3g} "
                f"| {np.percentile(rates, 90):.3g} | {rates.max():.3g} |"
            )
    return lines if len(lines) > 2 else []


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


@contextmanager
def _stream(*names: str) -> Iterator[None]:
    """Bootstrap draws of one estimate's own, seeded by what it estimates: its interval depends only
    on its cells, the same each time the report is read and whichever rows come before it.

    rliable's stratified bootstraps draw from numpy's global generator whatever their
    ``random_state`` says (rliable 1.2.0, ``StratifiedBootstrap.update_indices``), so this seeds
    that generator for the estimate and restores it after.
    """
    state = np.random.get_state()
    np.random.seed(zlib.crc32("|".join(names).encode()))
    try:
        yield
    finally:
        np.random.set_state(state)


def probability_of_improvement(scores_x: np.ndarray, scores_y: np.ndarray) -> float:
    """P(X > Y) of a run drawn from each, ties counting half, averaged over tasks (the columns).

    rliable's ``metrics.probability_of_improvement`` (Agarwal et al. 2021, the Mann-Whitney U
    statistic over ``n_x * n_y``) in one array expression instead of a SciPy call per task, so
    each comparison's bootstrap can afford as many samples as the IQM's.
    """
    x, y = scores_x[:, None, :], scores_y[None, :, :]
    return float(((x > y) + 0.5 * (x == y)).mean(axis=(0, 1)).mean())


def probability_interval(row: np.ndarray, reference: np.ndarray, reps: int, key: str) -> tuple[float, float, float]:
    """P(row > reference) with its 95% stratified-bootstrap interval, on ``key``'s own stream."""
    from rliable import library as rly

    with _stream(key):
        value, interval = rly.get_interval_estimates({key: (row, reference)}, probability_of_improvement, reps=reps)
    low, high = np.ravel(interval[key])[:2]
    return float(np.ravel(value[key])[0]), float(low), float(high)


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

    estimates, intervals = {}, {}
    for variant, scores in scored.items():
        with _stream(variant, name):
            estimate, interval = rly.get_interval_estimates({variant: scores}, iqm_and_mean, reps=reps)
        estimates[variant], intervals[variant] = estimate[variant], interval[variant]
    improvement = {
        v: probability_interval(scored[v], scored[SB3], reps, f"{v},{SB3}{name}")
        for v in scored
        if v != SB3 and SB3 in scored
    }
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
    with _stream("profiles", name):
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


def waiting_cells(study: optuna.Study, planned: list[Cell] | None = None) -> list[Cell]:
    """The cells with no outcome yet for their row's current identity: of ``planned``, or (``None``)
    those enqueued or in training."""
    trials = study.get_trials(deepcopy=False)
    finished = {cell_of(t) for t in trials if is_result(t) and is_current(study, t)}
    if planned is not None:
        return sorted(set(planned) - finished)
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
    planned: list[Cell] | None = None,
    controls: dict[str, dict[str, list[str]]] | None = None,
) -> str:
    """Write the report of ``study``'s finished cells (default: all of them) under ``out``.

    :param planned: The table's cells: those not finished count as waiting in the compute table,
        enqueued or not (default: the cells enqueued or in training).
    :param aggregates: Named groups of environments to aggregate over, each with its own
        table and plots; a group is reported when all its environments have finished cells, and
        once if two groups are the same (default, and when none is: one over all ``envs``). A
        variant enters a group's table with the seeds it finished on every environment of it.
    :param controls: Per environment, each controlled row's control rows (:func:`control_table`).
    """
    runs = runs_of(study)
    asked = envs or sorted({r.cell.env for r in runs})
    asked_rows = None if variants is None else set(variants)

    def selected(cell: Cell) -> bool:
        return (
            cell.env in asked
            and (asked_rows is None or cell.variant in asked_rows)
            and (seeds is None or cell.seed in seeds)
        )

    runs = [r for r in runs if selected(r.cell)]
    waiting = [cell for cell in waiting_cells(study, planned) if selected(cell)]
    envs = [e for e in asked if any(r.cell.env == e for r in runs)]
    variants = [v for v in _rows(runs) if asked_rows is None or v in asked_rows]  # SB3, its controls, VARIANTS order
    out.mkdir(parents=True, exist_ok=True)
    protocols = {env_id: protocol_of(study, env_id) for env_id in envs}
    write_csv(runs, out / "grid.csv")
    plot_curves(runs, envs, variants, out)
    plot_learning_rates(runs, envs, out)
    budgets = ", ".join(f"{e} {p.timesteps:,}" for e, p in protocols.items())
    text = [
        f"Budgets (environment steps): {budgets}.",
        "",
        f"Final score (mean of the last {LAST_EVALUATIONS} evaluations), mean ± sd over seeds (seeds):",
        "",
        *per_env_table(runs, envs, variants),
    ]
    verdicts = 0
    for name, group in _groups(aggregates, envs).items():
        matrices = normalised_scores(runs, group, variants, protocols, out)
        table = aggregate(matrices, out, reps, f"-{name}" if name else "")
        verdicts += sum(1 for line in table[2:] if line.rstrip(" |").endswith(("**better**", "**worse**", "–")))
        text += [
            "",
            f"Normalised score, (score - random) / (Zoo PPO at full budget - random), aggregated over "
            f"{', '.join(group)} (rliable, {reps} bootstrap samples):",
            "",
            *table,
        ]
    if verdicts:
        text += ["", multiplicity_note(verdicts)]
    controlled = control_table(runs, envs, protocols, out, reps, controls or {})
    if controlled:
        text += [
            "",
            "Controls: each row against SB3's PPO with the setting that may explain its difference changed "
            "(the control's name says which), same seeds:",
            "",
            *controlled,
        ]
    rates = learning_rate_table(runs, envs)
    if rates:
        text += ["", "Learning rates reached by the rows that adapt it (every call of every seed):", "", *rates]
    superseded = [(c, sec) for c, sec in superseded_cells(study) if selected(c)]
    text += [
        "",
        "Compute: each cell's cost in one worker with one torch thread, as the study recorded it (its CPU "
        "seconds; its wall seconds for the cells from before CPU time was recorded); the waiting cells' "
        "estimate is their count times the environment's mean cell:",
        "",
        *compute_table(runs, waiting, asked),
    ]
    if superseded:
        hours = sum(sec for _, sec in superseded if not math.isnan(sec)) / 3600
        text += [
            "",
            f"Superseded: {len(superseded)} finished cells ({hours:.2f} CPU-hours) ran an earlier version of a row "
            "whose code or settings changed since; they are left out of every table above.",
        ]
    errors = [f"- {r.cell}: {r.error}" for r in runs if r.error]
    if errors:
        text += ["", "Failed cells:", *errors]
    result = "\n".join(text) + "\n"
    (out / "results.md").write_text(result)
    return result


def control_table(
    runs: list[Run],
    envs: list[str],
    protocols: dict[str, EnvProtocol],
    out: Path,
    reps: int,
    controls: dict[str, dict[str, list[str]]],
) -> list[str]:
    """Each row against its controls on the same seeds: P(row > control) with its bootstrap
    interval; "better" only when the row adds to what the control's setting explains.

    :param controls: per environment, each controlled row's control rows (SB3's PPO at fixed
        learning rates an adaptive row reached, say).
    """
    lines = [
        "| environment | row | control | seeds | P(row > control) [95% CI] | row better than its control |",
        "|---|---|---|---|---|---|",
    ]
    for env_id in envs:
        pairs = [(row, control) for row, named in controls.get(env_id, {}).items() for control in named]
        present = {r.cell.variant for r in runs if r.cell.env == env_id}
        pairs = [(row, control) for row, control in pairs if {row, control} <= present]
        if not pairs:
            continue
        matrices = normalised_scores(runs, [env_id], sorted({name for pair in pairs for name in pair}), protocols, out)
        for row, control in pairs:
            if row not in matrices or control not in matrices:
                continue
            seeds = min(len(matrices[row]), len(matrices[control]))
            key = f"{row},{control}-{env_id}"
            p, low, high = probability_interval(matrices[row][:seeds], matrices[control][:seeds], reps, key)
            lines.append(
                f"| {env_id} | {row} | {control} | {seeds} | {p:.2f} [{low:.2f}, {high:.2f}] "
                f"| {_verdict(low, high, seeds)} |"
            )
    return lines if len(lines) > 2 else []


def multiplicity_note(comparisons: int) -> str:
    """How many verdicts the tables give, and how many false ones chance alone would give."""
    return (
        f"Multiplicity: the tables above make {comparisons} comparisons with SB3's PPO, each at 95% (the "
        "interval of P(row > SB3 PPO) excludes 0.5 on one side or the other). If no row differed from SB3's "
        f"PPO, about {0.05 * comparisons:.1f} of them would still read better or worse by chance, so a single "
        "verdict, especially one near its bound, is a lead to check (more seeds, a control), not a finding. "
        "The comparisons share SB3's runs and environments, so they are not independent."
    )


def _groups(aggregates: dict[str, list[str]] | None, envs: list[str]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for name, group in (aggregates or {}).items():
        if set(group) <= set(envs) and sorted(group) not in [sorted(g) for g in groups.values()]:
            groups[name] = group
    return groups or {"": envs}


def _rows(runs: list[Run]) -> list[str]:
    """SB3's row first, then its controls (by setting and value), then the variants in the order of
    ``VARIANTS``, each recommended-settings row beside its drop-in row."""

    present = {r.cell.variant for r in runs}
    controls = sorted((v for v in present if is_control(v)), key=control_setting)
    drop_in = variant_names(recommended=False)
    variants = sorted(variant_names(), key=lambda v: drop_in.index(base_variant(v)))
    order = [SB3, *controls, *variants]
    return [v for v in order if v in present] + sorted(present - set(order))
