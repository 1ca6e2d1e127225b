"""The tuning command line: run a study, then ``report`` and ``retrain`` it.

From a checkout it is ``python -m tuning``; installed, ``sb3-ppo-tuning`` (or
``python -m sb3_ppo_variants.tuning``) takes the same arguments.

python -m tuning --env Acrobot-v1 --n-trials 60 --n-timesteps 30000 --n-train-seeds 2 --n-jobs 2
python -m tuning --env Acrobot-v1 --storage postgresql://user:pw@host/db --study-name acro
python -m tuning report  --study-name Acrobot-v1
python -m tuning retrain --study-name Acrobot-v1 --seeds 10
python -m tuning retrain --study-name Acrobot-v1 --trial 7 --reproduce
"""

from __future__ import annotations

import argparse
import ast
import shlex
import sys
import time
from pathlib import Path
from typing import Any

import optuna

from sb3_ppo_variants import HyperparameterError
from sb3_ppo_variants.tuning.errors import TuningError
from sb3_ppo_variants.tuning.samplers import PRUNERS, SAMPLERS
from sb3_ppo_variants.tuning.space import SearchSpaceError, load_space
from sb3_ppo_variants.tuning.storage import DEFAULT_STORAGE, HEARTBEAT_INTERVAL, open_storage, open_study
from sb3_ppo_variants.tuning.workers import interrupt_on_terminate

COMMANDS = ("run", "report", "retrain")


class StoreDict(argparse.Action):
    """``KEY:VALUE ...`` -> a dict, as the Zoo's ``--env-kwargs``; values are Python literals
    (``200``, ``9.81``, ``True``, ``'text'``, ``[1, 2]``), anything else is kept as a string."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: Any = None):
        result = {}
        for item in values:
            key, separator, text = item.partition(":")
            if not separator or not key:
                parser.error(f"{option} {item!r} is invalid: accepted values are KEY:VALUE pairs")
            try:
                result[key] = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                result[key] = text
        setattr(namespace, self.dest, result)


class DefaultsShown(argparse.HelpFormatter):
    """Every option's help ends with its default, where it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        unset = action.default is None or action.default is False or action.default is argparse.SUPPRESS
        if not unset and action.default not in ([], {}) and "default" not in text:
            text += " (default: %(default)s)"
        return text


def _study_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--storage", default=DEFAULT_STORAGE, help="SQLAlchemy URL of the study")
    parser.add_argument("--study-name", help="default: the environment id")


USAGE = """Tune PPOVariant (its hyperparameters and its loss) with Optuna, then report and retrain the best.

  python -m tuning --env Acrobot-v1 --n-trials 60 --n-timesteps 30000 --n-train-seeds 2 --n-jobs 2  # run (or resume)
  python -m tuning report  --study-name Acrobot-v1                    # best.yaml, the best model, CSV, plots
  python -m tuning retrain --study-name Acrobot-v1 --seeds 10         # the best over seeds, beside SB3's PPO

The study lives in --storage (default: a SQLite file, tuning.db, here); the same command on several
machines shares a PostgreSQL study (--storage postgresql://user:pw@host/db). "run" is the default
command: its options follow. "python -m tuning report --help" and "retrain --help" show theirs."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tuning", description=USAGE, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="{run,report,retrain}")
    defaults = DefaultsShown

    run = commands.add_parser("run", help="run or resume a study (the default command)", formatter_class=defaults)
    parser.set_defaults(run_parser=run)
    run.add_argument("--env", required=True, help="a Gymnasium environment id")
    run.add_argument("--n-trials", type=int, default=40, help="trials the study should reach")
    run.add_argument("--n-timesteps", type=int, default=50_000, help="training steps per run")
    run.add_argument("--n-jobs", type=int, default=1, help="worker processes, one torch thread each")
    _study_arguments(run)
    run.add_argument("--space", help="a YAML file that fixes, restricts or widens the search space")
    run.add_argument("--sampler", choices=SAMPLERS, default="tpe", help="Optuna's sampler")
    run.add_argument("--pruner", choices=PRUNERS, default="median", help="stops unpromising trials early")
    run.add_argument("--seed", type=int, default=0, help="seeds the sampler and every trial")
    run.add_argument("--n-startup-trials", type=int, default=10, help="random trials before the sampler models")
    run.add_argument("--pruner-startup-trials", type=int, default=5, help="trials before the median pruner prunes")
    run.add_argument("--n-envs", type=int, help="training environments (default: the Zoo's, else 1)")
    run.add_argument("--n-evaluations", type=int, default=10, help="evaluations (pruner reports) per run")
    run.add_argument("--n-eval-episodes", type=int, default=5, help="episodes per evaluation")
    run.add_argument("--n-last-evaluations", type=int, default=3, help="a run scores the mean of its last N")
    run.add_argument("--n-train-seeds", type=int, default=1, help="training runs per trial, value averaged")
    run.add_argument("--timeout", type=float, help="seconds after which no new trial starts")
    run.add_argument("--heartbeat-interval", type=int, default=HEARTBEAT_INTERVAL, help="seconds")
    run.add_argument("--quiet", action="store_true", help="no progress bar or status lines")
    run.add_argument(
        "--compile", action="store_true", help="train on PPOVariant's fast path (compile=True; needs a C++ compiler)"
    )
    own = run.add_argument_group("your own environment (as the Zoo's -optimize)")
    own.add_argument("--gym-packages", nargs="+", default=[], help="modules to import so their environments register")
    own.add_argument("--env-kwargs", nargs="+", default={}, action=StoreDict, metavar="KEY:VALUE",
                     help="gymnasium.make keyword arguments, e.g. max_episode_steps:200 g:9.81")  # fmt: skip
    own.add_argument("--eval-env-kwargs", nargs="+", action=StoreDict, metavar="KEY:VALUE",
                     help="the same for the evaluation environments (default: --env-kwargs)")  # fmt: skip
    own.add_argument("--device", default="cpu", help="torch device the networks train on")
    own.add_argument("--vec-env", choices=("dummy", "subproc"), default="dummy", help="subproc: a process per env")
    own.add_argument(
        "--models-dir",
        type=Path,
        help="where each finished trial's model is kept, a folder every worker can write (default: beside a "
        "SQLite study, tuning-models/ for tuning.db; a PostgreSQL study on several machines needs a shared one)",
    )
    own.add_argument("--no-models", action="store_true", help="keep no trial's model")

    report = commands.add_parser(
        "report", help="best configuration (YAML), trials (CSV), plots, summary", formatter_class=defaults
    )
    _study_arguments(report)
    report.add_argument("--out", type=Path, help="folder (default tuning-results/<study name>)")
    report.add_argument("--models-dir", type=Path, help="the study's model store (default: the one it ran with)")

    retrain = commands.add_parser(
        "retrain", help="the best configuration over seeds, beside SB3's PPO", formatter_class=defaults
    )
    _study_arguments(retrain)
    retrain.add_argument("--config", type=Path, help="a best.yaml from report instead of a study")
    retrain.add_argument(
        "--allow", nargs="+", default=[], metavar="MODULE", help="modules the --config file may import classes from"
    )
    retrain.add_argument("--trial", type=int, help="this trial instead of the best one")
    retrain.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1")
    retrain.add_argument("--n-jobs", type=int, default=1, help="runs in parallel processes")
    retrain.add_argument("--no-baseline", action="store_true", help="skip SB3's PPO")
    retrain.add_argument("--reproduce", action="store_true", help="replay --trial with its recorded seed")
    retrain.add_argument("--out", type=Path, help="folder (default tuning-results/<study name>)")
    return parser


def _open(args: argparse.Namespace) -> optuna.Study:
    if args.study_name is None:
        raise TuningError("--study-name is required (python -m tuning run uses the environment id by default)")
    return open_study(open_storage(args.storage, heartbeat_interval=None), args.study_name)


def _run(args: argparse.Namespace) -> None:
    from sb3_ppo_variants.tuning.study import run_study

    space = load_space(args.space)
    start = time.perf_counter()
    study = run_study(
        args.env,
        args.n_trials,
        args.n_timesteps,
        storage=args.storage,
        study_name=args.study_name,
        space=space,
        sampler=args.sampler,
        pruner=args.pruner,
        n_jobs=args.n_jobs,
        seed=args.seed,
        n_startup_trials=args.n_startup_trials,
        pruner_startup_trials=args.pruner_startup_trials,
        timeout=args.timeout,
        heartbeat_interval=args.heartbeat_interval,
        progress=not args.quiet,
        n_envs=args.n_envs,
        n_evaluations=args.n_evaluations,
        n_eval_episodes=args.n_eval_episodes,
        n_last_evaluations=args.n_last_evaluations,
        n_train_seeds=args.n_train_seeds,
        gym_packages=tuple(args.gym_packages),
        env_kwargs=args.env_kwargs,
        eval_env_kwargs=args.eval_env_kwargs,
        device=args.device,
        vec_env=args.vec_env,
        models_dir=args.models_dir,
        keep_models=not args.no_models,
        compile=args.compile,
        command=shlex.join(["python", "-m", "tuning", *args.argv]),
    )
    from sb3_ppo_variants.tuning.report import summary

    print(summary(study))
    if not args.no_models and "models_dir" not in study.user_attrs:
        print("no models were kept: a study on a server keeps them with --models-dir on a folder every machine shares")
    print(f"this command: {time.perf_counter() - start:.0f} s. Next, the best model and configuration: "
          f"python -m tuning report --storage {args.storage} --study-name {study.study_name}")  # fmt: skip


def _report(args: argparse.Namespace) -> None:
    from sb3_ppo_variants.tuning.report import summary, write_report

    study = _open(args)
    files = write_report(study, args.out or Path("tuning-results") / study.study_name, models_dir=args.models_dir)
    print(summary(study))
    print("wrote " + ", ".join(str(path) for path in files.values()))
    print(next_steps(args.storage, study.study_name, files))


def next_steps(storage: str, study_name: str, files: dict[str, Path]) -> str:
    """What to do with a report: load the model, retrain the configuration, open the dashboard."""
    lines = ["Next:"]
    model = files.get("best_model")
    if model is not None:
        load = f"PPOVariant.load({str(model)!r})"
        if "best_vecnormalize" in files:
            load += f", with load_vec_normalize({str(files['best_vecnormalize'])!r}, env) for its statistics"
        lines.append(f"  the best trial's model:   from sb3_ppo_variants import PPOVariant; {load}")
    else:
        lines.append("  no model was kept for the best trial (run the study with a model store: see --models-dir)")
    lines += [
        f"  the same, trained anew:   PPOVariant.from_config({str(files['best'])!r}).learn(...)",
        f"  over seeds, beside SB3:   python -m tuning retrain --storage {storage} --study-name {study_name} "
        "--seeds 10",
        f"  every trial, interactive: optuna-dashboard {storage}",
    ]
    return "\n".join(lines)


def _retrain(args: argparse.Namespace) -> None:
    from sb3_ppo_variants.tuning.retrain import compare, comparison_table, load_target, plot_comparison, reproduce

    study = None if args.config is not None and args.study_name is None else _open(args)
    if args.reproduce:
        if study is None or args.trial is None:
            raise TuningError("--reproduce replays one trial: give --study-name and --trial")
        recorded, replayed = reproduce(study, args.trial)
        print("| step | recorded | replayed |\n|---|---|---|")
        for step in sorted(set(recorded) | set(replayed)):
            print(f"| {step} | {recorded.get(step, float('nan')):.2f} | {replayed.get(step, float('nan')):.2f} |")
        same = recorded == replayed
        print("replayed exactly" if same else "the replay differs from the trial")
        if not same:
            sys.exit(1)
        return
    task, arguments, source = load_target(study, args.trial, args.config, tuple(args.allow))
    out = args.out or Path("tuning-results") / (study.study_name if study else Path(args.config).stem)
    total = args.seeds * (1 if args.no_baseline else 2)
    print(f"retraining {source} on {args.seeds} seeds" + ("" if args.no_baseline else ", beside SB3's PPO"), flush=True)
    done = [0]

    def line(label: str, seed: int, score: float, seconds: float) -> None:
        done[0] += 1
        print(f"[{done[0]}/{total}] {label}, seed {seed}: score {score:.1f} ({seconds:.0f} s)", flush=True)

    results = compare(
        task, arguments, args.seeds, args.n_jobs, include_baseline=not args.no_baseline,
        models_dir=out / "retrained", on_run=line,
    )  # fmt: skip
    table = comparison_table(task, results)
    out.mkdir(parents=True, exist_ok=True)
    (out / "retrain.md").write_text(f"Retrained {source}.\n\n{table}\n")
    plot = plot_comparison(task, results, out / "retrain.png")
    print(table)
    print(f"wrote {out / 'retrain.md'}, {plot} and each run's model in {out / 'retrained'}")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    if argv in (["-h"], ["--help"]):  # the top level, then the default command's options with their defaults
        print(parser.format_help())
        print(parser.get_default("run_parser").format_help())
        return 0
    if not argv or argv[0] not in (*COMMANDS, "-h", "--help"):
        argv.insert(0, "run")
    args = parser.parse_args(argv)
    args.argv = argv  # recorded on the study
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    interrupt_on_terminate()  # kill or a job scheduler stops a study as Ctrl-C does
    try:
        {"run": _run, "report": _report, "retrain": _retrain}[args.command](args)
    except (TuningError, SearchSpaceError, HyperparameterError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0
