"""What a running study prints: a progress bar, and one line per finished trial."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState


def counts(trial: FrozenTrial) -> bool:
    """Whether a finished trial counts towards ``n_trials``: it ran to an outcome.

    A FAIL without ``fail_reason`` was interrupted (Ctrl-C) or lost its worker (and is retried).
    """
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "fail_reason" in trial.user_attrs


def status_line(trial: FrozenTrial) -> str:
    """One line per finished trial: its outcome, value or where it stopped, and its duration."""
    seconds = trial.duration.total_seconds() if trial.duration else math.nan
    if trial.state == TrialState.COMPLETE:
        outcome = f"value {trial.value:.2f}"
    elif trial.state == TrialState.PRUNED:
        reason = trial.user_attrs.get("pruned_reason", "pruned")
        last = trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else None
        outcome = reason + (f" (last evaluation {last:.2f})" if last is not None else "")
    elif trial.state == TrialState.FAIL:
        outcome = "failed: " + trial.user_attrs.get("fail_reason", "interrupted or its worker was lost")
    else:
        outcome = trial.state.name.lower()
    described = describe(trial.user_attrs.get("hyperparameters"))
    return f"trial {trial.number:>4} {trial.state.name:<8} {outcome}, {seconds:.1f} s" + (
        f" [{described}]" if described else ""
    )


SHOWN = ("learning_rate", "n_steps", "batch_size", "n_epochs", "gamma", "gae_lambda", "max_grad_norm")
"""The SB3 arguments a one-line description shows, in this order, before the loss."""


def describe(hyperparameters: dict[str, Any] | None) -> str:
    """A trial's arguments in SB3's names: ``learning_rate=0.00031, n_steps=256, ...; loss: name + name``."""
    if not hyperparameters:
        return ""
    parts = [f"{key}={_short(hyperparameters[key])}" for key in SHOWN if key in hyperparameters]
    loss = hyperparameters.get("loss") or []
    names = [c.get("name", "?") for c in loss if isinstance(c, dict)]
    return ", ".join(parts) + (f"; loss: {' + '.join(names)}" if names else "")


def _short(value: Any) -> str:
    if isinstance(value, float) and 0.99 < value < 1:  # a discount near 1: its nines, then 3 digits
        nines = math.floor(-math.log10(1 - value))
        return f"{value:.{nines + 3}f}".rstrip("0")
    if isinstance(value, float):
        return f"{value:.3g}"
    if isinstance(value, dict) and "start" in value:  # a schedule's plain form
        return f"lin_{value['start']:.3g}"
    return str(value)


class Progress:
    """A progress bar over counted trials and a status line for each trial as it finishes.

    :param line: The status line of a finished trial (default :func:`status_line`).
    :param selected: Which of the study's trials the bar follows (default: all).
    :param unit: What the bar counts.
    """

    def __init__(
        self,
        study: optuna.Study,
        n_trials: int,
        enabled: bool = True,
        line: Callable[[FrozenTrial], str] = status_line,
        selected: Callable[[FrozenTrial], bool] = lambda trial: True,
        unit: str = "trial",
    ) -> None:
        from tqdm.auto import tqdm

        self.study, self.enabled, self.line, self.selected = study, enabled, line, selected
        finished = self._finished()
        self.seen = {t.number for t in finished}
        done = sum(counts(t) for t in finished)
        self.bar = tqdm(total=n_trials, initial=min(done, n_trials), unit=unit, disable=not enabled)

    def _finished(self) -> list[FrozenTrial]:
        states = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
        return [t for t in self.study.get_trials(deepcopy=False, states=states) if self.selected(t)]

    def update(self) -> None:
        for trial in sorted(self._finished(), key=lambda t: t.number):
            if trial.number in self.seen:
                continue
            self.seen.add(trial.number)
            if self.enabled:
                self.bar.write(self.line(trial))
            if counts(trial):
                self.bar.update(1)

    def close(self) -> None:
        self.update()
        self.bar.close()
