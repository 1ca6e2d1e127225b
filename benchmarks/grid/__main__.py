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
import math
import os
from functools import partial
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from benchmarks.grid.cells import ENVS, Cell
from benchmarks.grid.migrate import adopt_legacy_cells, migrate
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
from benchmarks.grid.rows import SB3, check_row, control_row
from sb3_ppo_variants.tuning.errors import TuningError
from sb3_ppo_variants.tuning.progress import Progress
from sb3_ppo_variants.tuning.storage import HEARTBEAT_INTERVAL
from sb3_ppo_variants.tuning.workers import interrupt_on_terminate, run_processes
from sb3_ppo_variants.variants import VARIANTS, variant_names

CLASSIC_CHEAP = ["CartPole-v1", "Pendulum-v1"]
CLASSIC_COSTLY = ["Acrobot-v1", "LunarLander-v3"]
MUJOCO = ["HalfCheetah-v5", "Hopper-v5"]
AGGREGATES = {
    "": list(ENVS),
    "classic": [*CLASSIC_CHEAP, *CLASSIC_COSTLY],
    "acrobot": [*CLASSIC_CHEAP, "Acrobot-v1"],
    "cheap": CLASSIC_CHEAP,
    "mujoco": MUJOCO,
    **{env_id: [env_id] for env_id in [*CLASSIC_COSTLY, *MUJOCO]},
}
"""The report's aggregates: every environment; classic control; without LunarLander, the costliest
of classic control's cells; the two with 10 seeds; MuJoCo; and each environment where a row's budget is
long enough to separate the variants (CartPole's ceiling and Pendulum's spread hide differences
that one of these shows alone)."""


FAITHFUL = ["ppo-ewma", "trgppo"]
"""Rows recomputed to match their authors' code (see ``migrate.CHANGED_SINCE_LEGACY``)."""
ADAPTIVE = ["kl-adaptive-lr"]
"""Rows that adapt the learning rate; their cells record it, and their "better" verdicts get controls."""

CONTROLS: dict[str, dict[str, list[str]]] = {
    "Acrobot-v1": {
        # The median and the maximum, over all 245 calls of seeds 0-4, of the learning rates kl-adaptive-lr
        # reached on Acrobot-v1 (3e-4 x 1.5^4 and x 1.5^5; the report's learning-rate table shows them).
        "kl-adaptive-lr": [control_row("lr", 0.00151875), control_row("lr", 0.002278125)],
    },
    "LunarLander-v3": {
        # SB3's PPO clips the joint gradient norm of its policy and value losses at 0.5. On LunarLander
        # the unnormalized value targets make that norm 11 to 377 (its median per call, seed 0, first
        # 400k steps), so the clip scales the policy's gradient by a median 0.001 to 0.044, a factor
        # that changes from minibatch to minibatch with the value loss (Adam undoes only a constant
        # one); with normalized targets the norm is about 0.5 and the factor a median 0.8 to 1. The
        # control never clips: the policy's own gradient norm (about 0.3) is under 0.5 anyway.
        "value-norm": [control_row("max_grad_norm", math.inf)],
        "popart": [control_row("max_grad_norm", math.inf)],
    },
    "Hopper-v5": {
        # PPG's auxiliary phase trains the critic again: every 4 calls, 6 epochs over the 4 rollouts
        # kept, so each sample feeds the critic 5 + 6 epochs where the Zoo's PPO gives it 5 (and the
        # policy network's value head 6 more). The control trains SB3's PPO 11 epochs a call: more
        # training of the same data, without the phase's separate value head and cloning loss.
        "ppg@recommended": [control_row("n_epochs", 11)],
    },
}
"""Per environment where a row was better than SB3's PPO with confidence: SB3's PPO with the setting
that may explain it changed (``rows.control_row``), same seeds. The report sets each row against
each of its controls."""


def control_rows(env_id: str) -> list[str]:
    """The controls run on ``env_id``, each once."""
    return list(dict.fromkeys(c for named in CONTROLS.get(env_id, {}).values() for c in named))


def table_rows() -> list[str]:
    """SB3's PPO and every named variant but ``ppo`` (bit-identical to SB3's by construction), drop-in."""

    return [SB3, *(v for v in VARIANTS if v != "ppo")]


def recommended_rows() -> list[str]:
    """The variants at the settings recommended for control tasks (``VARIANTS[...].recommended``)."""

    return [name for name in variant_names() if "@" in name]


def table_cells() -> list[Cell]:
    """The README's table, in the order it is computed, cheapest credibility first, so that wherever
    compute stops the finished part is whole:

    1. the rows recomputed for faithfulness and the controls of every "better": the adaptive rows on
       Acrobot first (their learning rates choose the controls), the controls, the faithful rows on
       Acrobot, CartPole and Pendulum, the adaptive rows on CartPole and Pendulum;
    2. the recommended-settings rows on CartPole, Pendulum and Acrobot;
    3. LunarLander, every drop-in row (the controls of a "better" found there first: they come
       before the rows still waiting), then its recommended rows, so its column is whole before
       MuJoCo starts; 4. HalfCheetah and Hopper, every drop-in row; 5. the recommended rows and
       the controls there.

    The drop-in rows already computed on CartPole, Pendulum (seeds 0-9) and Acrobot (0-4) come
    first in the list; a finished cell is skipped.
    """
    rows, recommended = table_rows(), recommended_rows()
    seeds = {e: range(10) if e in CLASSIC_CHEAP else range(5) for e in ENVS}

    def cells(envs: list[str], names: list[str]) -> list[Cell]:
        return [Cell(e, v, s) for v in names for e in envs for s in seeds[e]]

    recomputed = {*FAITHFUL, *ADAPTIVE}
    kept = [v for v in rows if v not in recomputed]
    cheap = [Cell(e, v, s) for first in (0, 5) for s in range(first, first + 5) for e in CLASSIC_CHEAP for v in kept]
    classic = [*CLASSIC_CHEAP, "Acrobot-v1"]
    order = [
        *cheap,
        *cells(["Acrobot-v1"], kept),
        *cells(["Acrobot-v1"], ADAPTIVE),
        *cells(["Acrobot-v1"], control_rows("Acrobot-v1")),
        *cells(["Acrobot-v1", *CLASSIC_CHEAP], FAITHFUL),
        *cells(CLASSIC_CHEAP, ADAPTIVE),
        *[c for e in CLASSIC_CHEAP for c in cells([e], control_rows(e))],
        *cells(classic, recommended),
        *cells(["LunarLander-v3"], control_rows("LunarLander-v3")),
        *cells(["LunarLander-v3"], [*rows, *recommended]),
        *cells(MUJOCO, rows),
        *[c for e in MUJOCO for c in cells([e], [*recommended, *control_rows(e)])],
    ]
    return list(dict.fromkeys(order))  # each cell once, at its first place


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
    parser = argparse.ArgumentParser(prog="python -m benchmarks.grid", description=__doc__.splitlines()[0])
    parser.add_argument("--envs", nargs="+", choices=list(ENVS), help="default: the README's table")
    parser.add_argument(
        "--variants",
        nargs="+",
        metavar="ROW",
        help=f"rows: {SB3} (SB3's own PPO), a variant (spo), a variant at its recommended settings "
        f"(ppg@recommended) or a control ({SB3}@lr=0.001, {SB3}@max_grad_norm=inf); default: the README's table",
    )
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
    all_rows = list(dict.fromkeys(cell.variant for cell in table))
    args.envs = args.envs or list(ENVS)
    explicit = args.seeds is not None or args.envs != list(ENVS) or args.variants is not None
    args.variants = args.variants or all_rows
    args.seeds = args.seeds or sorted({cell.seed for cell in table})
    for row in args.variants:
        try:
            check_row(row)
        except ValueError as error:
            parser.error(str(error))
    if args.jobs < 1 or args.budget_scale <= 0:
        parser.error("--jobs must be >= 1 and --budget-scale > 0")

    selection = cells_of(args.envs, args.variants, args.seeds) if explicit else table
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
            adopt_legacy_cells(study)
        elif args.report_only:
            study = load_grid(settings)
            adopt_legacy_cells(study)
        else:
            protocols = {e: ENVS[e].scaled(args.budget_scale) for e in args.envs}
            study = open_grid(settings, protocols, compile=args.compile)
            adopt_legacy_cells(study)
            run(study, settings, selection, args.jobs, args.retry_failed)
        envs = [e for e in args.envs if e in study.user_attrs.get("protocols", {})]
        planned = [c for c in selection if c.env in envs]
        print(report(study, args.out, envs, args.variants, args.seeds, args.bootstrap, AGGREGATES, planned, CONTROLS))
    except TuningError as error:  # a storage that cannot be opened, a study made for another protocol
        parser.exit(2, f"error: {error}\n")


def run(study: optuna.Study, settings: GridSettings, cells: list[Cell], jobs: int, retry_failed: bool) -> None:
    enqueued, finished = enqueue(study, cells, retry_failed)
    print(
        f"{len(cells)} cells: {finished} finished, {len(cells) - finished} to run ({enqueued} newly enqueued), "
        f"{jobs} processes",
        flush=True,
    )
    chosen = {cell: order for order, cell in enumerate(cells)}  # the workers train these only, in this order
    unfinished = study.get_trials(deepcopy=False, states=(TrialState.WAITING, TrialState.RUNNING))
    if not any(cell_of(trial) in chosen for trial in unfinished):
        return
    progress = Progress(study, len(cells), line=cell_line, selected=lambda t: cell_of(t) in chosen, unit="cell")
    try:
        if jobs == 1:
            run_cells(settings, chosen, after_cell=progress.update)
        else:
            run_processes(partial(work, settings, cells=chosen), jobs, progress, "grid-worker")
    except KeyboardInterrupt:
        progress.close()
        print("interrupted: finished cells are kept; run the same command to resume")
        raise SystemExit(130) from None
    progress.close()


if __name__ == "__main__":
    main()
