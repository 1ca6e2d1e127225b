"""Database round trips of a tuning study: what limits scaling to many machines on one storage.

    python -m benchmarks.storage_round_trips                                  # SQLite, a temporary file
    python -m benchmarks.storage_round_trips --storage postgresql://postgres@127.0.0.1:5432/postgres

Runs a small study (``tuning.run_study`` in this process, one worker, CartPole-v1) and counts
every SQL statement the storage sends, with the time spent in them (SQLAlchemy's cursor events).
Per trial it prints the statements, the seconds in the database and the seconds of the trial;
their ratio bounds how many workers one database serves before it is the bottleneck (a rough
bound: it assumes the database runs one statement at a time and that workers do not contend).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import optuna
from sqlalchemy import event
from sqlalchemy.engine import Engine


class StatementCounter:
    """Counts the statements of every SQLAlchemy engine in this process and times them."""

    def __init__(self) -> None:
        self.statements = 0
        self.seconds = 0.0
        self._started: list[float] = []
        event.listen(Engine, "before_cursor_execute", self._before)
        event.listen(Engine, "after_cursor_execute", self._after)

    def _before(self, *_: object) -> None:
        self._started.append(time.perf_counter())

    def _after(self, *_: object) -> None:
        self.statements += 1
        self.seconds += time.perf_counter() - self._started.pop()


def main(argv: list[str] | None = None) -> None:
    from sb3_ppo_variants.tuning import run_study

    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.storage_round_trips", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--storage", help="SQLAlchemy URL (default: a SQLite file in a temporary folder)")
    parser.add_argument("--n-trials", type=int, default=10)
    parser.add_argument("--n-timesteps", type=int, default=5_000, help="steps per trial")
    parser.add_argument("--n-evaluations", type=int, default=10, help="evaluations, each a report to the storage")
    args = parser.parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)

    with tempfile.TemporaryDirectory() as folder:
        storage = args.storage or f"sqlite:///{Path(folder) / 'study.db'}"
        name = f"round-trips-{time.time_ns()}"  # a fresh study on a shared server
        counter = StatementCounter()
        start = time.perf_counter()
        study = run_study(
            "CartPole-v1",
            args.n_trials,
            n_timesteps=args.n_timesteps,
            storage=storage,
            study_name=name,
            n_evaluations=args.n_evaluations,
            n_eval_episodes=2,
            progress=False,
        )
        wall = time.perf_counter() - start
    trials = len(study.trials)
    per_trial = wall / trials
    database = counter.seconds / trials
    print(f"storage: {storage.split('://')[0]}, {trials} trials of {args.n_timesteps} steps, "
          f"{args.n_evaluations} evaluations each, one worker")  # fmt: skip
    print(f"statements per trial: {counter.statements / trials:.0f}")
    print(f"seconds in the database per trial: {database:.3f} ({database / per_trial:.1%} of the trial)")
    print(f"seconds per trial: {per_trial:.2f}")
    print(f"one database serves about {per_trial / database:.0f} workers before it is the bottleneck")


if __name__ == "__main__":
    main()
