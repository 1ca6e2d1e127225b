"""Tuning studies: the objective, pruning, divergence, resume, parallel workers, retrain and report.

Budgets are tiny (a few thousand CartPole steps per trial): these tests check what a study
records and survives, not what it finds.
"""

from __future__ import annotations

import csv
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState
from stable_baselines3.common.env_util import make_vec_env

from sb3_ppo_variants import HyperparameterError, PPOVariant
from sb3_ppo_variants.components import ClippedSurrogate, EntropyBonus, LossComponent, LossTerm, ValueLoss
from sb3_ppo_variants.persistence.config import save_config
from sb3_ppo_variants.tuning import Objective, Task, TuningError, run_study
from sb3_ppo_variants.tuning.models import ModelStore, default_models_dir
from sb3_ppo_variants.tuning.objective import train_and_evaluate
from sb3_ppo_variants.tuning.progress import describe
from sb3_ppo_variants.tuning.report import write_report
from sb3_ppo_variants.tuning.retrain import (
    compare,
    comparison_table,
    difference_interval,
    difference_sentence,
    plot_comparison,
    reproduce,
    trial_arguments,
)
from sb3_ppo_variants.tuning.space import load_space
from sb3_ppo_variants.tuning.storage import open_storage, task_of
from tests.conftest import parameters_equal
from tuning.__main__ import main

optuna.logging.set_verbosity(optuna.logging.WARNING)

TINY = {"n_evaluations": 3, "n_eval_episodes": 2, "n_eval_envs": 2, "n_last_evaluations": 2}
ROOT = Path(__file__).resolve().parents[2]


def sqlite(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'study.db'}"


def tiny_study(storage: str, n_trials: int = 4, **kwargs) -> optuna.Study:
    settings = {"n_timesteps": 1_500, "pruner_startup_trials": 1, "progress": False, **TINY, **kwargs}
    return run_study("CartPole-v1", n_trials, storage=storage, **settings)


def test_a_trial_is_seeded_evaluated_often_and_scored_on_its_last_evaluations(tmp_path):
    study = tiny_study(sqlite(tmp_path), n_trials=3, pruner="none")
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 3
    assert len({t.user_attrs["seed"] for t in trials}) == 3
    for trial in trials:
        steps = sorted(trial.intermediate_values)
        assert len(steps) == 3 and steps[0] >= 500 and steps[-1] >= 1_500  # one report per evaluation
        last_two = [trial.intermediate_values[s] for s in steps[-2:]]
        assert trial.value == pytest.approx(sum(last_two) / 2)
        assert trial.user_attrs["hyperparameters"]["loss"][0]["name"]  # the exact configuration, as plain data


def test_several_training_seeds_average_their_scores(tmp_path):
    study = tiny_study(sqlite(tmp_path), n_trials=1, pruner="none", n_train_seeds=2)
    (trial,) = study.trials
    assert len(trial.intermediate_values) == 6  # the second seed reports after the first
    assert trial.value == pytest.approx(sum(trial.user_attrs["seed_scores"]) / 2)


def test_the_median_pruner_stops_bad_trials_early(tmp_path):
    study = tiny_study(sqlite(tmp_path), n_trials=8, n_startup_trials=2)
    pruned = study.get_trials(states=(TrialState.PRUNED,))
    assert pruned, "no trial was pruned"
    for trial in pruned:
        assert trial.user_attrs["pruned_reason"].startswith("pruned at step")
        assert len(trial.intermediate_values) < 3


@dataclass
class NaNLoss(LossComponent):
    """Makes the first update's loss NaN, as a diverging configuration would."""

    name = "test_nan_loss"

    def __call__(self, batch):
        return LossTerm(batch.mean(batch.values) * float("nan"))


@dataclass
class BrokenLoss(LossComponent):
    name = "test_broken_loss"

    def __call__(self, batch):
        raise RuntimeError("a component bug")


def every_other_trial_breaks(trial: optuna.Trial, n_envs: int) -> dict:
    extra = {0: [NaNLoss()], 1: [BrokenLoss()]}.get(trial.number, [])
    lr = trial.suggest_float("learning_rate", 1e-4, 1e-3, log=True)
    return {"n_steps": 64, "learning_rate": lr, "loss": [ClippedSurrogate(), ValueLoss(), EntropyBonus(), *extra]}


def test_a_diverging_or_crashing_trial_does_not_stop_the_study(tmp_path):
    study = tiny_study(sqlite(tmp_path), n_trials=3, space=every_other_trial_breaks, pruner="none")
    states = [t.state for t in study.trials]
    assert states == [TrialState.PRUNED, TrialState.FAIL, TrialState.COMPLETE]
    assert study.trials[0].user_attrs["pruned_reason"].startswith("diverged: ")
    assert study.trials[1].user_attrs["fail_reason"] == "RuntimeError: a component bug"


def test_running_the_same_study_again_resumes_it(tmp_path):
    storage = sqlite(tmp_path)
    tiny_study(storage, n_trials=2, pruner="none")
    study = tiny_study(storage, n_trials=3, pruner="none")
    assert [t.number for t in study.trials] == [0, 1, 2]
    with pytest.raises(TuningError, match="n_timesteps=1500 there, 3000 here"):
        tiny_study(storage, n_trials=4, n_timesteps=3_000)


def test_bad_input_is_refused_before_any_training(tmp_path, capsys):
    storage = sqlite(tmp_path)
    with pytest.raises(TuningError, match="unknown environment 'CartPole-v9'"):
        run_study("CartPole-v9", 1, storage=storage)
    with pytest.raises(TuningError, match=r"cannot open storage postgresql://user:\*\*\*@127.0.0.1:9/db"):
        run_study("CartPole-v1", 1, storage="postgresql://user:secret@127.0.0.1:9/db")
    optuna.create_study(storage=storage, study_name="minimising", direction="minimize")
    with pytest.raises(TuningError, match="direction"):
        run_study("CartPole-v1", 1, storage=storage, study_name="minimising")
    space = tmp_path / "space.yaml"
    space.write_text("parameters:\n  learning_rat: {low: 1.0e-4, high: 1.0e-3}\n")
    assert main(["--env", "CartPole-v1", "--storage", storage, "--space", str(space)]) == 2
    assert "unknown parameter 'learning_rat'" in capsys.readouterr().err
    assert len(optuna.get_all_study_summaries(storage)) == 1  # nothing but the minimising study was created


def test_two_worker_processes_share_a_sqlite_study(tmp_path):
    study = tiny_study(sqlite(tmp_path), n_trials=8, n_jobs=2, pruner="none", n_timesteps=3_000)
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert 8 <= len(trials) <= 9  # a worker may start one trial while the other finishes the last
    assert len({t.user_attrs["worker"] for t in trials}) == 2


def test_a_killed_workers_trial_fails_and_is_retried(tmp_path):
    storage = sqlite(tmp_path)
    space = tmp_path / "space.yaml"  # a trial of a few seconds, whatever is sampled
    space.write_text("fixed: {n_steps: 64, n_minibatches: 4, n_epochs: 10, net_arch: small}\n")
    settings = {"n_timesteps": 8_000, "n_evaluations": 4, "n_eval_episodes": 1, "n_last_evaluations": 1}
    command = [sys.executable, "-m", "tuning", "--env", "CartPole-v1", "--storage", storage, "--n-trials", "1",
               "--space", str(space), "--heartbeat-interval", "1", "--pruner", "none", "--quiet"]  # fmt: skip
    command += [f"--{k.replace('_', '-')}={v}" for k, v in settings.items()]
    worker = subprocess.Popen(command, cwd=ROOT)
    try:
        _wait_for_first_report(storage)
    finally:
        worker.send_signal(signal.SIGKILL)  # mid-trial: no chance to mark it
        worker.wait()
    # Past the grace period (2 heartbeats), with a margin: SQLite's clock, which Optuna compares
    # heartbeats with, counts whole seconds, so 2.5 s may read as exactly the grace period.
    time.sleep(4)
    study = run_study("CartPole-v1", 1, storage=storage, space=load_space(space), heartbeat_interval=1,
                      pruner="none", progress=False, **settings)  # fmt: skip
    lost, retry = study.trials
    assert lost.state == TrialState.FAIL and "fail_reason" not in lost.user_attrs
    assert retry.system_attrs["failed_trial"] == lost.number and retry.state == TrialState.COMPLETE
    assert retry.params == lost.params and retry.user_attrs["seed"] == lost.user_attrs["seed"]


def test_two_commands_started_together_on_a_new_sqlite_database_both_finish(tmp_path):
    storage = sqlite(tmp_path)
    space = tmp_path / "space.yaml"
    space.write_text("fixed: {n_steps: 64, n_minibatches: 2, n_epochs: 1, net_arch: tiny}\n")
    command = [sys.executable, "-m", "tuning", "--env", "CartPole-v1", "--storage", storage, "--n-trials", "2",
               "--space", str(space), "--n-timesteps", "500", "--n-evaluations", "1", "--n-last-evaluations", "1",
               "--n-eval-episodes", "1", "--pruner", "none", "--quiet"]  # fmt: skip
    # Both create the database's tables at once; the one that loses that race used to fail
    # with "table studies already exists".
    commands = [subprocess.Popen(command, cwd=ROOT, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outcomes = [(c.wait(timeout=300), c.stderr.read()) for c in commands]
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    study = optuna.load_study(study_name="CartPole-v1", storage=storage)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) >= 2


def test_a_worker_that_finds_the_study_just_created_waits_for_its_task():
    """Two commands started together: one creates the study and records its task a moment later;
    the other, finding the study in between, waits for the task instead of refusing the study."""
    import threading

    from sb3_ppo_variants.tuning.storage import open_study

    storage = optuna.storages.InMemoryStorage()
    task = Task.for_env("CartPole-v1", 1_000, **TINY)
    created = optuna.create_study(storage=storage, study_name="CartPole-v1", direction="maximize")
    recorder = threading.Timer(0.5, created.set_user_attr, ("task", task.as_dict()))
    recorder.start()
    try:
        assert task_of(open_study(storage, "CartPole-v1", task)) == task
    finally:
        recorder.join()


def test_opening_a_storage_retries_after_losing_the_race_to_create_its_tables(tmp_path, monkeypatch):
    import sqlalchemy

    import sb3_ppo_variants.tuning.storage
    from sb3_ppo_variants.tuning.storage import open_storage

    real, calls = sb3_ppo_variants.tuning.storage.ReconnectingStorage, []

    def loses_once(*arguments, **keywords):
        calls.append(1)
        if len(calls) == 1:  # what SQLite says when another process created the tables first
            raise sqlalchemy.exc.OperationalError("CREATE TABLE studies", {}, Exception("table studies already exists"))
        return real(*arguments, **keywords)

    monkeypatch.setattr(sb3_ppo_variants.tuning.storage, "ReconnectingStorage", loses_once)
    assert open_storage(sqlite(tmp_path)) is not None and len(calls) == 2


def test_opening_a_new_sqlite_storage_retries_when_sqlite_breaks_a_lock_deadlock(tmp_path, monkeypatch):
    import sqlite3

    from sb3_ppo_variants.tuning.storage import open_storage

    real, calls = sqlite3.connect, []

    def deadlocked_once(*arguments, **keywords):
        calls.append(1)
        if len(calls) == 1:  # what SQLite says at once to one of two processes switching a new file to WAL
            raise sqlite3.OperationalError("database is locked")
        return real(*arguments, **keywords)

    monkeypatch.setattr(sqlite3, "connect", deadlocked_once)
    assert open_storage(sqlite(tmp_path)) is not None and len(calls) == 2
    with real(tmp_path / "study.db") as connection:
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def _wait_for_first_report(storage: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            running = optuna.load_study(study_name="CartPole-v1", storage=storage).get_trials(
                states=(TrialState.RUNNING,)
            )
            if running and running[0].intermediate_values:
                return
        except KeyError:
            pass  # not created yet
        time.sleep(0.2)
    raise AssertionError("the worker never reported an evaluation")


def test_retrain_replays_a_trial_exactly_from_its_seed(tmp_path):
    study = tiny_study(sqlite(tmp_path), n_trials=6, n_startup_trials=2)
    for state in (TrialState.COMPLETE, TrialState.PRUNED):
        trials = study.get_trials(states=(state,))
        if trials:
            recorded, replayed = reproduce(study, trials[0].number)
            assert recorded and replayed == recorded


def test_retrain_compares_the_configuration_with_sb3_ppo(tmp_path):
    task = Task.for_env("CartPole-v1", 1_000, **TINY)
    arguments = {"n_steps": 64, "loss": [ClippedSurrogate(dual_clip=3.0), ValueLoss(), EntropyBonus()]}
    results = compare(task, arguments, seeds=2)
    assert set(results) == {"tuned", "sb3-ppo (zoo)"} and all(len(runs) == 2 for runs in results.values())
    table = comparison_table(task, results)
    assert "| sb3-ppo (zoo) |" in table and "Tuned less sb3-ppo (zoo): " in table and "bootstrap 95% interval" in table
    assert plot_comparison(task, results, tmp_path / "retrain.png").stat().st_size > 0


def test_the_retrained_difference_says_which_is_better_only_where_its_interval_excludes_0():
    apart, overlapping = np.array([10.0, 11.0, 12.0, 13.0]), np.array([9.0, 14.0, 11.0, 10.0])
    baseline = np.array([1.0, 2.0, 3.0, 2.0])
    difference, low, high = difference_interval(apart, baseline)
    assert difference == pytest.approx(9.5) and 0 < low < difference < high
    assert "the tuned configuration beats sb3-ppo (zoo)" in difference_sentence(apart, baseline, "sb3-ppo (zoo)")
    assert "sb3-ppo (zoo) beats the tuned configuration" in difference_sentence(baseline, apart, "sb3-ppo (zoo)")
    assert "cannot tell the two apart" in difference_sentence(overlapping, apart, "sb3-ppo (zoo)")


def test_report_writes_files_that_load_back(tmp_path):
    study = tiny_study(sqlite(tmp_path), n_trials=4, pruner="none")
    files = write_report(study, tmp_path / "report")
    for name in ("optimization_history", "param_importances", "parallel_coordinate", "intermediate_values"):
        assert files[f"{name}.png"].stat().st_size > 0 and files[f"{name}.html"].stat().st_size > 0
    with files["trials"].open() as handle:
        assert len(list(csv.DictReader(handle))) == 4
    env = make_vec_env("CartPole-v1", n_envs=8)
    model = PPOVariant.from_config(files["best"], env, seed=0)
    best = study.best_trial.user_attrs["hyperparameters"]
    assert model.n_steps == best["n_steps"] and model.batch_size == best["batch_size"]
    loaded = [{k: v(1.0) if callable(v) else v for k, v in c.config().items()} for c in model.loss]
    assert loaded == best["loss"]  # linked fields (clip ranges) are schedules inside a model
    activation = best["policy_kwargs"]["activation_fn"]
    assert activation in ("torch.nn.Tanh", "torch.nn.ReLU")
    assert type(model.policy.mlp_extractor.policy_net[1]).__name__ == activation.rpartition(".")[2]
    model.learn(model.n_steps * 8)


def test_from_config_builds_the_environment_the_file_was_tuned_on_and_refuses_another(tmp_path):
    path = tmp_path / "best.yaml"
    task = Task.for_env("Pendulum-v1", 1_000, n_envs=4, normalize=True)
    save_config(path, "MlpPolicy", {"n_steps": 64, "batch_size": 64, "gamma": 0.9}, task=task.as_dict())
    model = PPOVariant.from_config(path, seed=0)  # the file's environment, as tuned
    assert model.env.num_envs == 4 and model.get_vec_normalize_env() is not None
    assert model.get_vec_normalize_env().gamma == 0.9  # the tuned discount, as the trials normalised rewards
    assert PPOVariant.from_config(path, "Pendulum-v1").env.num_envs == 4
    with pytest.raises(HyperparameterError, match=r"env has 1 environment\(s\), but the file was tuned with n_envs=4"):
        PPOVariant.from_config(path, make_vec_env("Pendulum-v1", n_envs=1))
    with pytest.raises(HyperparameterError, match="in VecNormalize: that would train something else"):
        PPOVariant.from_config(path, make_vec_env("Pendulum-v1", n_envs=4))


def test_the_command_line_runs_reports_and_retrains(tmp_path, capsys):
    storage, out = sqlite(tmp_path), tmp_path / "out"
    settings = ["--n-timesteps", "1000", "--n-evaluations", "2", "--n-last-evaluations", "1", "--n-eval-episodes", "1"]
    assert main(["--env", "CartPole-v1", "--storage", storage, "--n-trials", "2", "--quiet", *settings]) == 0
    assert main(["report", "--storage", storage, "--study-name", "CartPole-v1", "--out", str(out)]) == 0
    assert (out / "best.yaml").exists()
    assert (
        main(["retrain", "--config", str(out / "best.yaml"), "--seeds", "1", "--no-baseline", "--out", str(out)]) == 0
    )
    assert "[1/1] tuned, seed 0: score" in capsys.readouterr().out  # a line per finished run
    assert (
        PPOVariant.load(out / "retrained" / "tuned-seed0.zip").n_steps == yaml_arguments(out / "best.yaml")["n_steps"]
    )
    assert main(["retrain", "--storage", storage, "--study-name", "CartPole-v1", "--trial", "1", "--reproduce"]) == 0
    assert "replayed exactly" in capsys.readouterr().out


def yaml_arguments(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())["hyperparameters"]


def test_the_readme_command_then_its_next_steps_end_with_the_best_trials_model(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the README's command, with its default storage here: sqlite:///tuning.db
    settings = ["--n-timesteps", "1000", "--n-evaluations", "2", "--n-last-evaluations", "1", "--n-eval-episodes", "1"]
    assert main(["--env", "Pendulum-v1", "--n-trials", "2", "--quiet", *settings]) == 0
    assert "Next, the best model and configuration: python -m tuning report" in capsys.readouterr().out
    assert main(["report", "--study-name", "Pendulum-v1"]) == 0
    printed = capsys.readouterr().out
    out = Path("tuning-results/Pendulum-v1")
    assert "PPOVariant.load('tuning-results/Pendulum-v1/best_model.zip')" in printed
    assert "optuna-dashboard sqlite:///tuning.db" in printed and "python -m tuning retrain" in printed
    assert sorted(p.name for p in Path("tuning-models").iterdir())  # kept beside the study, not in site-packages

    model = PPOVariant.load(out / "best_model.zip")
    action, _ = model.predict(np.zeros(3, dtype=np.float32), deterministic=True)
    assert action.shape == (1,)
    # The best trial again, from its recorded seed: its final parameters are the file's.
    study = optuna.load_study(study_name="Pendulum-v1", storage="sqlite:///tuning.db")
    best = study.best_trial
    replayed = []
    train_and_evaluate(
        task_of(study), trial_arguments(best), best.user_attrs["seed"], on_trained=lambda m, _: replayed.append(m)
    )
    assert parameters_equal(replayed[0].policy, model.policy)
    if task_of(study).normalize:
        assert (out / "best_model-vecnormalize.pkl").exists()


# --- a real PostgreSQL server (the postgresql_url fixture of conftest.py) ----------------------


def test_help_shows_how_to_run_a_study_and_every_run_option_with_its_default(capsys):
    assert main(["--help"]) == 0
    text = capsys.readouterr().out
    assert "python -m tuning --env Acrobot-v1 --n-trials 60" in text and "``" not in text
    for option, default in [("--n-trials", "40"), ("--sampler", "tpe"), ("--pruner", "median"), ("--seed", "0"),
                            ("--n-startup-trials", "10"), ("--storage", "sqlite:///tuning.db")]:  # fmt: skip
        shown = text[text.index(f"  {option} ") :].split("\n  --")[0]
        assert f"(default: {default})" in " ".join(shown.split()), option


def test_two_commands_share_a_postgresql_study(postgresql_url, tmp_path):
    """What users do on many machines: the same command, twice, against one database."""
    command = [sys.executable, "-m", "tuning", "--env", "CartPole-v1", "--storage", postgresql_url, "--study-name",
               "shared", "--n-trials", "6", "--n-timesteps", "3000", "--pruner", "none", "--quiet",
               "--n-evaluations", "3", "--n-eval-episodes", "2", "--n-last-evaluations", "2"]  # fmt: skip
    workers = [subprocess.Popen([*command, "--seed", str(i)], cwd=ROOT) for i in range(2)]
    assert [worker.wait(timeout=300) for worker in workers] == [0, 0]
    study = optuna.load_study(study_name="shared", storage=postgresql_url)
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert 6 <= len(complete) <= 7
    assert len({t.user_attrs["worker"] for t in complete}) == 2


def test_worker_processes_share_a_postgresql_study(postgresql_url):
    study = tiny_study(postgresql_url, n_trials=6, n_jobs=2, pruner="none", study_name="processes")
    assert len({t.user_attrs["worker"] for t in study.get_trials(states=(TrialState.COMPLETE,))}) == 2


def test_a_users_own_environment_is_tuned_as_with_the_zoos_optimize(tmp_path):
    """--gym-packages registers it (in every worker), --env-kwargs and --eval-env-kwargs reach the training
    and evaluation environments, the best model is kept, and a journal file works as storage."""
    storage, models, out = tmp_path / "study.log", tmp_path / "models", tmp_path / "report"
    command = [sys.executable, "-m", "tuning", "--env", "CountDown-v0", "--gym-packages", "tests.own_envs",
               "--env-kwargs", "length:5", "--eval-env-kwargs", "length:7", "reward:2.0", "--vec-env", "subproc",
               "--n-trials", "2", "--n-jobs", "2", "--n-timesteps", "256", "--n-envs", "2", "--n-evaluations", "2",
               "--n-last-evaluations", "1", "--n-eval-episodes", "2", "--pruner", "none", "--storage", str(storage),
               "--models-dir", str(models), "--quiet"]  # fmt: skip
    finished = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert finished.returncode == 0, finished.stderr
    assert "no heartbeats" in finished.stderr  # the journal's limit, said
    study = optuna.load_study(study_name="CountDown-v0", storage=open_storage(str(storage), heartbeat_interval=None))
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 2 and all(t.value == 14.0 for t in trials)  # 7 steps of 2.0: the evaluation's kwargs
    assert study.user_attrs["task"]["env_kwargs"] == {"length": 5}
    assert study.user_attrs["commands"][0].startswith("python -m tuning run --env CountDown-v0 --gym-packages")
    assert main(["report", "--storage", str(storage), "--study-name", "CountDown-v0", "--out", str(out)]) == 0
    model = PPOVariant.load(out / "best_model.zip")
    assert model.observation_space.shape == (1,) and all("model_artifacts" in t.user_attrs for t in trials)
    assert len([p for p in models.rglob("*") if p.is_file()]) == 2  # each finished trial's model, in the store


def test_env_kwargs_must_be_key_value_pairs(capsys):
    with pytest.raises(SystemExit):
        main(["--env", "CartPole-v1", "--env-kwargs", "novalue"])
    assert "KEY:VALUE" in capsys.readouterr().err


def test_a_device_is_read_as_sb3_reads_it():
    task = Task.for_env("CartPole-v1", 1_000)
    assert Objective(task, device="auto").device == "auto"
    with pytest.raises(TuningError, match="device='gpu0' is invalid"):
        Objective(task, device="gpu0")


def test_compile_trains_every_trial_on_the_fast_path(tmp_path):
    storage, models = sqlite(tmp_path), tmp_path / "models"
    settings = ["--n-timesteps", "1000", "--n-evaluations", "2", "--n-last-evaluations", "1", "--n-eval-episodes", "1"]
    command = ["--env", "CartPole-v1", "--storage", storage, "--n-trials", "1", "--quiet", "--compile"]
    assert main([*command, *settings, "--models-dir", str(models), "--pruner", "none"]) == 0
    (trial,) = optuna.load_study(study_name="CartPole-v1", storage=storage).get_trials()
    assert trial.state == TrialState.COMPLETE
    kept = ModelStore(models).fetch(trial, tmp_path / "kept")
    assert PPOVariant.load(kept["model"]).compile is True
    assert "--compile" in optuna.load_study(study_name="CartPole-v1", storage=storage).user_attrs["commands"][0]


def test_a_kept_model_and_its_normalisation_come_back_from_the_store_wherever_it_is_mounted(tmp_path):
    from stable_baselines3.common.vec_env import VecNormalize

    study = optuna.create_study(storage=sqlite(tmp_path), study_name="s")
    trial = study.ask()
    model = PPOVariant("MlpPolicy", VecNormalize(make_vec_env("Pendulum-v1", n_envs=2)), n_steps=64, batch_size=64)
    ModelStore(tmp_path / "store").keep(trial, model)
    study.tell(trial, 1.0)
    (tmp_path / "store").rename(tmp_path / "moved")  # another machine mounts the shared folder elsewhere
    files = ModelStore(tmp_path / "moved").fetch(study.best_trial, tmp_path / "out")
    assert parameters_equal(PPOVariant.load(files["model"]).policy, model.policy)
    statistics = VecNormalize.load(str(files["vecnormalize"]), make_vec_env("Pendulum-v1", n_envs=2)).obs_rms
    assert np.array_equal(statistics.mean, model.get_env().obs_rms.mean)
    assert statistics.count == model.get_env().obs_rms.count
    assert default_models_dir("sqlite:///runs/tuning.db") == Path("runs/tuning-models")
    assert default_models_dir("postgresql://user@host/db") is None  # no folder every machine shares by default


def test_the_summary_speaks_sb3s_names_says_when_trials_tie_and_ranks_only_parameters_every_trial_sampled(tmp_path):
    from sb3_ppo_variants.tuning.report import importance_note, ranked_parameters, summary

    study = optuna.create_study(storage=sqlite(tmp_path), study_name="tied", direction="maximize")
    study.set_user_attr("task", Task.for_env("CartPole-v1", 1_000).as_dict())
    uniform = optuna.distributions.FloatDistribution(0.0, 1.0)
    hyperparameters = {
        "learning_rate": 0.0003,
        "gamma": 0.99,
        "loss": [{"name": "clipped_surrogate"}, {"name": "value"}],
    }
    for number, value in enumerate([500.0, 500.0, 120.0]):
        params, distributions = (
            {"one_minus_gamma": 0.01, "lr": 0.1 * number},
            {"one_minus_gamma": uniform, "lr": uniform},
        )
        if number == 0:  # a conditional parameter, sampled by one trial
            params["cispo_clip_high"], distributions["cispo_clip_high"] = 0.2, uniform
        study.add_trial(
            optuna.trial.create_trial(
                value=value, params=params, distributions=distributions, user_attrs={"hyperparameters": hyperparameters}
            )
        )
    text = summary(study)
    assert "learning_rate=0.0003, gamma=0.99; loss: clipped_surrogate + value" in text and "one_minus_gamma" not in text
    assert "2 complete trials tie at the best value 500.00 (trials 0, 1)" in text
    assert "at or above the environment's reward threshold (475)" in text
    assert ranked_parameters(study) == ["one_minus_gamma", "lr"]
    assert "not ranked: cispo_clip_high (1 of 3)" in importance_note(study)


def test_a_configuration_file_imports_only_trusted_packages_unless_allowed(tmp_path, monkeypatch):
    (tmp_path / "file_side_effects.py").write_text(
        "from pathlib import Path\nPath(__file__).with_name('imported').touch()\nimport torch\nReLU = torch.nn.ReLU\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    path = tmp_path / "best.yaml"
    hyperparameters = {"n_steps": 64, "batch_size": 64, "policy_kwargs": {"activation_fn": "file_side_effects.ReLU"}}
    save_config(path, "MlpPolicy", hyperparameters)
    with pytest.raises(HyperparameterError, match=r"would import module 'file_side_effects'.*allow=\['file_side_eff"):
        PPOVariant.from_config(path, "CartPole-v1")
    assert not (tmp_path / "imported").exists()
    model = PPOVariant.from_config(path, "CartPole-v1", allow=["file_side_effects"])
    assert (tmp_path / "imported").exists() and model.policy_kwargs["activation_fn"].__name__ == "ReLU"

    task = Task.for_env("CartPole-v1", 1_000).as_dict()
    save_config(path, "MlpPolicy", {"n_steps": 64}, task={**task, "gym_packages": ["file_side_effects"]})
    with pytest.raises(HyperparameterError, match="the file's task imports 'file_side_effects'"):
        PPOVariant.from_config(path)
    loss = [{"name": "clipped_surrogate"}, {"name": "mine", "module": "file_side_effects"}]
    save_config(path, "MlpPolicy", {"n_steps": 64, "loss": loss})
    with pytest.raises(HyperparameterError, match="'mine' would be built by importing module 'file_side_effects'"):
        PPOVariant.from_config(path, "CartPole-v1")
    sys.modules.pop("file_side_effects", None)


def test_a_trials_line_shows_a_discount_near_1_by_its_nines_not_rounded_to_1():
    line = describe({"learning_rate": 0.000316, "gamma": 0.99987, "gae_lambda": 0.9})
    assert line == "learning_rate=0.000316, gamma=0.99987, gae_lambda=0.9"
