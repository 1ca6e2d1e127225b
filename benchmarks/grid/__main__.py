"""What each PPO variant learns: ``python -m benchmarks.grid``, a grid of variants x environments x seeds.

    python -m benchmarks.grid --jobs 2                         # the README's table (resumes)
    python -m benchmarks.grid --envs CartPole-v1 --variants sb3-ppo spo --seeds 0 --budget-scale 0.1
    python -m benchmarks.grid --storage postgresql://user@host/db --jobs 8   # the same on every machine
    python -m benchmarks.grid --report-only                    # tables and plots from finished cells
    optuna-dashboard sqlite:///benchmarks/results/grid/grid.db # the grid's progress, trial by trial

Running the command again resumes: finished cells are never recomputed, and a cell whose
worker was lost (killed, its machine gone) is trained again. Several commands, on one machine or
many, can share one storage: each worker claims cells nobody has taken.
"""

from __future__ import annotations

import argparse
import os
from functools import partial
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from benchmarks.grid.cells import ENVS, SB3, Cell
from benchmarks.grid.migrate import migrate
from benchmarks.grid.queue import (
    GridSettings,
    cell_of,
    enqueue,
    load_grid,
    open_grid,
    run_cells,
    work,
)
from benchmarks.grid.report import report
from tuning.errors import TuningError
from tuning.progress import Progress
from tuning.storage import HEARTBEAT_INTERVAL
from tuning.workers import interrupt_on_terminate, run_processes

CLASSIC_CHEAP = ["CartPole-v1", "Pendulum-v1"]
CLASSIC_COSTLY = ["Acrobot-v1", "LunarLander-v3"]
MUJOCO = ["HalfCheetah-v5", "Hopper-v5"]
AGGREGATES = {
    "": list(ENVS),
    "classic": [*CLASSIC_CHEAP, *CLASSIC_COSTLY],
    "acrobot": [*CLASSIC_CHEAP, "Acrobot-v1"],
    "cheap": CLASSIC_CHEAP,
    **{env_id: [env_id] for env_id in [*CLASSIC_COSTLY, *MUJOCO]},
}
"""The report's aggregates: every environment; classic control; without LunarLander, the costliest
of classic control's cells; the two with 10 seeds; and each environment where a row's budget is
long enough to separate the variants (CartPole's ceiling and Pendulum's spread hide differences
that one of these shows alone)."""


def table_rows() -> list[str]:
    """SB3's PPO and every named variant but ``ppo`` (bit-identical to SB3's by construction)."""
    from sb3_ppo_variants.variants import VARIANTS

    return [SB3, *(v for v in VARIANTS if v != "ppo")]


def table_cells() -> list[Cell]:
    """The README's table, in the order it is computed, so that wherever compute stops the
    finished part is whole: CartPole and Pendulum (cheap) for seeds 0-4 of every row, then
    seeds 5-9; then Acrobot and LunarLander at the Zoo's full budgets, row by row with 5 seeds
    each; then MuJoCo the same way.
    """
    rows = table_rows()
    cheap = [Cell(e, v, s) for first in (0, 5) for s in range(first, first + 5) for e in CLASSIC_CHEAP for v in rows]
    costly = [Cell(e, v, s) for group in (CLASSIC_COSTLY, MUJOCO) for v in rows for e in group for s in range(5)]
    return cheap + costly


def cells_of(envs: list[str], variants: list[str], seeds: list[int]) -> list[Cell]:
    """An explicit selection's cells, seed by seed."""
    return [Cell(e, v, s) for s in seeds for e in envs for v in variants]


def cell_line(trial: FrozenTrial) -> str:
    seconds = trial.user_attrs.get("seconds")
    took = f" ({seconds:.0f} s)" if seconds is not None else ""
    if trial.state == TrialState.COMPLETE:
        return f"{cell_of(trial)}: score {trial.value:.1f}{took}"
    if "fail_reason" in trial.user_attrs:
        return f"{cell_of(trial)}: failed: {trial.user_attrs['fail_reason']}{took}"
    return f"{cell_of(trial)}: its worker was lost or interrupted; it runs again"


def main(argv: list[str] | None = None) -> None:
    from sb3_ppo_variants.variants import VARIANTS

    parser = argparse.ArgumentParser(prog="python -m benchmarks.grid", description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", choices=list(ENVS), help="default: the README's table")
    parser.add_argument("--variants", nargs="+", help=f"{SB3} is SB3's own PPO; default: the README's table")
    parser.add_argument("--seeds", nargs="+", type=int, help="default: the README's table")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="worker processes, one thread each")
    parser.add_argument("--budget-scale", type=float, default=1.0, help="multiply every budget (a quick look: 0.1)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/grid"), help="the report's folder")
    parser.add_argument("--storage", help="SQLAlchemy URL of the grid's study (default: sqlite:///OUT/grid.db)")
    parser.add_argument("--study-name", default="grid")
    parser.add_argument("--compile", action="store_true", help="the variants' rows on PPOVariant's fast path")
    parser.add_argument("--retry-failed", action="store_true", help="train again the cells that raised")
    parser.add_argument("--heartbeat-interval", type=int, default=HEARTBEAT_INTERVAL, help="seconds")
    parser.add_argument("--bootstrap", type=int, default=2000, help="bootstrap samples for the CIs")
    parser.add_argument("--report-only", action="store_true", help="skip training; report the finished cells")
    parser.add_argument("--migrate", type=Path, metavar="CELLS", help="import the earlier runner's cell files")
    args = parser.parse_args(argv)
    table = table_cells()
    args.envs = args.envs or list(ENVS)
    args.variants = args.variants or table_rows()
    explicit = args.seeds is not None or args.envs != list(ENVS) or args.variants != table_rows()
    args.seeds = args.seeds or sorted({cell.seed for cell in table})
    unknown = sorted(set(args.variants) - {SB3, *VARIANTS})
    if unknown:
        parser.error(f"unknown variant(s) {', '.join(unknown)}: accepted values are {SB3}, {', '.join(VARIANTS)}")
    if args.jobs < 1 or args.budget_scale <= 0:
        parser.error("--jobs must be >= 1 and --budget-scale > 0")

    args.out.mkdir(parents=True, exist_ok=True)
    interrupt_on_terminate()
    settings = GridSettings(
        storage_url=args.storage or f"sqlite:///{args.out / 'grid.db'}",
        study_name=args.study_name,
        heartbeat_interval=args.heartbeat_interval or None,
    )
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if args.migrate:
            study = open_grid(settings)
            print(f"{migrate(args.migrate, study)} cells imported from {args.migrate}")
        elif args.report_only:
            study = load_grid(settings)
        else:
            protocols = {e: ENVS[e].scaled(args.budget_scale) for e in args.envs}
            study = open_grid(settings, protocols, compile=args.compile)
            cells = cells_of(args.envs, args.variants, args.seeds) if explicit else table
            run(study, settings, cells, args.jobs, args.retry_failed)
        envs = [e for e in args.envs if e in study.user_attrs.get("protocols", {})]
        print(report(study, args.out, envs, args.variants, args.seeds, args.bootstrap, AGGREGATES))
    except TuningError as error:  # a storage that cannot be opened, a study made for another protocol
        parser.exit(2, f"error: {error}\n")


def run(study: optuna.Study, settings: GridSettings, cells: list[Cell], jobs: int, retry_failed: bool) -> None:
    enqueued, finished = enqueue(study, cells, retry_failed)
    print(
        f"{len(cells)} cells: {finished} finished, {len(cells) - finished} to run ({enqueued} newly enqueued), "
        f"{jobs} processes",
        flush=True,
    )
    chosen = set(cells)  # the workers train these only, whatever else other commands left waiting
    unfinished = study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
    if not any(cell_of(trial) in chosen for trial in unfinished):
        return
    progress = Progress(study, len(cells), line=cell_line, selected=lambda t: cell_of(t) in chosen, unit="cell")
    try:
        if jobs == 1:
            run_cells(settings, frozenset(chosen), after_cell=progress.update)
        else:
            run_processes(partial(work, settings, cells=frozenset(chosen)), jobs, progress, "grid-worker")
    except KeyboardInterrupt:
        progress.close()
        print("interrupted: finished cells are kept; run the same command to resume")
        raise SystemExit(130) from None
    progress.close()


if __name__ == "__main__":
    main()
