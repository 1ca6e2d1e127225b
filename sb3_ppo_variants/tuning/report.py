"""``python -m tuning report``: what a study found, as files and a summary table.

Writes into ``out``:

- ``best.yaml``: the best trial's configuration; ``PPOVariant.from_config("best.yaml")``
  (on the environment it was tuned on)
  and ``python -m tuning retrain --config best.yaml`` load it as it is;
- ``best_model.zip``: the best trial's model from the study's model store (:mod:`sb3_ppo_variants.tuning.models`;
  kept by default beside a SQLite study), with ``best_model-vecnormalize.pkl`` for a normalised
  task; ``PPOVariant.load`` opens it;
- ``trials.csv``: every trial (number, state, value, duration, parameters, seed, reasons);
- ``optimization_history``, ``param_importances``, ``parallel_coordinate`` and
  ``intermediate_values``, each as ``.png`` (matplotlib) and ``.html`` (plotly, interactive),
  with plotly.js beside them (``plotly.min.js``), so the pages work offline (see :func:`write_html`).

Parameter importances use PED-ANOVA (Watanabe et al. 2023, arXiv:2304.10255), which needs no
scikit-learn and copes with the conditional loss parameters.
"""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from sb3_ppo_variants.persistence.config import save_config
from sb3_ppo_variants.tuning.errors import TuningError
from sb3_ppo_variants.tuning.models import MODEL_ARTIFACTS, ModelStore
from sb3_ppo_variants.tuning.progress import describe
from sb3_ppo_variants.tuning.storage import task_of

PLOTS = ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values")


def best_trial(study: optuna.Study) -> FrozenTrial:
    try:
        return study.best_trial
    except ValueError as error:  # Optuna's words for "no completed trial"
        raise TuningError(f"study {study.study_name!r} has no completed trial yet") from error


def find_trial(study: optuna.Study, number: int) -> FrozenTrial:
    trials = [t for t in study.get_trials(deepcopy=False) if t.number == number]
    if not trials:
        raise TuningError(f"study {study.study_name!r} has no trial {number}")
    return trials[0]


def plain_hyperparameters(trial: FrozenTrial) -> dict[str, Any]:
    """The ``PPOVariant`` arguments the trial trained, as the objective recorded them (plain data)."""
    if "hyperparameters" not in trial.user_attrs:
        raise TuningError(
            f"trial {trial.number} recorded no plain hyperparameters "
            f"({trial.user_attrs.get('hyperparameters_error', 'it ran before they were recorded')})"
        )
    return trial.user_attrs["hyperparameters"]


def save_trial_config(study: optuna.Study, trial: FrozenTrial, path: str | Path) -> Path:
    """The trial's configuration file, with what it came from (task, seed, value) on top."""
    task = task_of(study)
    return save_config(
        path,
        task.policy,
        plain_hyperparameters(trial),
        study=study.study_name,
        trial=trial.number,
        value=trial.value,
        seed=trial.user_attrs.get("seed"),
        task=task.as_dict(),
        search_space_values=trial.params,  # the study's own names, to enqueue the trial again
    )


def summary(study: optuna.Study, top: int = 5) -> str:
    """Counts, wall time, and the best trials as a Markdown table."""
    trials = study.get_trials(deepcopy=False)
    by_state = {state: sum(t.state == state for t in trials) for state in TrialState}
    starts = [t.datetime_start for t in trials if t.datetime_start]
    ends = [t.datetime_complete for t in trials if t.datetime_complete]
    wall = (max(ends) - min(starts)).total_seconds() if starts and ends else 0.0
    lines = [
        f"study {study.study_name!r} on {task_of(study).env_id}: {len(trials)} trials, "
        f"{by_state[TrialState.COMPLETE]} complete, {by_state[TrialState.PRUNED]} pruned, "
        f"{by_state[TrialState.FAIL]} failed, {by_state[TrialState.RUNNING]} running; "
        f"wall time {wall / 60:.1f} min",
    ]
    complete = sorted(
        study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)), key=lambda t: t.value, reverse=True
    )
    if complete:
        lines += ["", "| trial | value | seconds | arguments (SB3's names) and loss |", "|---|---|---|---|"]
        for t in complete[:top]:
            seconds = t.duration.total_seconds() if t.duration else float("nan")
            lines.append(
                f"| {t.number} | {t.value:.2f} | {seconds:.0f} | {describe(t.user_attrs.get('hyperparameters'))} |"
            )
        lines += tie_note(study, complete)
    return "\n".join(lines)


def tie_note(study: optuna.Study, complete: list[FrozenTrial]) -> list[str]:
    """A warning when the best value is shared, or at the environment's reward threshold, where the
    study cannot tell configurations apart (retrain them over seeds to compare)."""
    best = complete[0].value
    tied = [t.number for t in complete if t.value == best]
    notes = []
    if len(tied) > 1:
        notes.append(
            f"{len(tied)} complete trials tie at the best value {best:.2f} (trials {', '.join(map(str, tied[:10]))}"
            f"{', ...' if len(tied) > 10 else ''}); the best is the first of them: the study cannot tell them apart"
        )
    threshold = _reward_threshold(task_of(study).env_id)
    if threshold is not None and best >= threshold:
        notes.append(
            f"the best value is at or above the environment's reward threshold ({threshold:g}): near its ceiling, "
            "trials differ little; a longer or harder task separates them better"
        )
    return ["", *(f"Note: {note}." for note in notes)] if notes else []


def _reward_threshold(env_id: str) -> float | None:
    import gymnasium as gym

    try:
        return gym.spec(env_id).reward_threshold
    except gym.error.Error:
        return None


def write_report(study: optuna.Study, out: str | Path, models_dir: str | Path | None = None) -> dict[str, Path]:
    """Write the files listed in the module docstring; return them by name.

    ``models_dir``: the study's model store (default: the one the study was run with)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    best = best_trial(study)
    files = {"best": save_trial_config(study, best, out / "best.yaml")}
    store = models_dir or study.user_attrs.get("models_dir")
    if MODEL_ARTIFACTS in best.user_attrs and store is not None:
        kept = ModelStore(store).fetch(best, out)
        files.update({"best_model" if k == "model" else "best_vecnormalize": v for k, v in kept.items()})
    elif "model" in best.user_attrs and Path(best.user_attrs["model"]).exists():  # a study from before the store
        model = Path(best.user_attrs["model"])
        files["best_model"] = Path(shutil.copyfile(model, out / "best_model.zip"))
        statistics = model.with_name(f"{model.stem}-vecnormalize.pkl")
        if statistics.exists():
            files["best_vecnormalize"] = Path(shutil.copyfile(statistics, out / "best_model-vecnormalize.pkl"))
    frame = study.trials_dataframe()
    frame.to_csv(out / "trials.csv", index=False)
    files["trials"] = out / "trials.csv"
    (out / "summary.md").write_text(summary(study) + "\n\n" + importance_note(study) + "\n")
    files["summary"] = out / "summary.md"
    for name in PLOTS:
        try:
            files.update(_plot(study, name, out))
        except (ValueError, RuntimeError, ImportError) as error:  # e.g. importances of one trial
            warnings.warn(f"{name} not plotted: {error}", stacklevel=2)
    return files


def _plot(study: optuna.Study, name: str, out: Path) -> dict[str, Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import optuna.visualization as plotly_plots
    import optuna.visualization.matplotlib as matplotlib_plots

    kwargs: dict[str, Any] = {}
    if name == "param_importances":
        kwargs["evaluator"] = optuna.importance.PedAnovaImportanceEvaluator()
        kwargs["params"] = ranked_parameters(study)
    elif name == "parallel_coordinate":
        kwargs["params"] = top_parameters(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Some regimes")  # PED-ANOVA on few trials: said in the docs
        axes = getattr(matplotlib_plots, f"plot_{name}")(study, **kwargs)
        figure = (axes.flat[0] if hasattr(axes, "flat") else axes).figure
        figure.set_size_inches(9, 5.5)
        figure.tight_layout()
        figure.savefig(out / f"{name}.png", dpi=100)
        plt.close(figure)
        html = write_html(getattr(plotly_plots, f"plot_{name}")(study, **kwargs), out / f"{name}.html")
    return {f"{name}.png": out / f"{name}.png", f"{name}.html": html}


def sampled_counts(study: optuna.Study) -> tuple[int, dict[str, int]]:
    """``(complete trials, {parameter: how many of them sampled it})``."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    counts: dict[str, int] = {}
    for trial in complete:
        for name in trial.params:
            counts[name] = counts.get(name, 0) + 1
    return len(complete), counts


def ranked_parameters(study: optuna.Study) -> list[str]:
    """The parameters whose importance is ranked: those every complete trial sampled.

    A conditional parameter (sampled only under some choice, such as ``cispo_clip_high`` under
    ``variant=cispo``) is left out: its importance would come from the few trials that sampled
    it, compared with parameters seen by all. :func:`importance_note` lists them with their counts."""
    total, counts = sampled_counts(study)
    return [name for name, count in counts.items() if count == total]


def top_parameters(study: optuna.Study, top: int = 8) -> list[str]:
    """The ``top`` ranked parameters by importance (all of them when importances cannot be computed)."""
    ranked = ranked_parameters(study)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            importances = optuna.importance.get_param_importances(
                study, evaluator=optuna.importance.PedAnovaImportanceEvaluator(), params=ranked
            )
    except (ValueError, RuntimeError):
        return ranked[:top]
    return list(importances)[:top]


def importance_note(study: optuna.Study) -> str:
    """Which parameters the importance plot ranks, and the conditional ones it leaves out."""
    total, counts = sampled_counts(study)
    conditional = sorted((name for name, count in counts.items() if count < total), key=lambda n: -counts[n])
    text = (
        f"Importances (PED-ANOVA) rank the {len(counts) - len(conditional)} parameters that every one "
        f"of the {total} complete trials sampled; the parallel-coordinate plot shows the 8 most important."
    )
    if conditional:
        listed = ", ".join(f"{name} ({counts[name]} of {total})" for name in conditional)
        text += f" Conditional parameters, sampled only under some choices, are not ranked: {listed}."
    return text


def write_html(figure: Any, path: Path) -> Path:
    """Write a plotly figure as an HTML page that works offline: plotly.js is written once beside
    it (``plotly.min.js``, shared by the pages of the folder) instead of loaded from a CDN, which
    leaves the plots blank on a machine without the network."""
    figure.write_html(path, include_plotlyjs="directory")
    return path
