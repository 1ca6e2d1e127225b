"""Running a study: ``run_study`` is the Python API behind ``python -m tuning``.

Every check (the environment, the space, the storage, an existing study's direction and task)
happens before any training. The pieces: ``storage.py`` (where the study lives),
``samplers.py``, ``workers.py`` (worker processes) and ``progress.py`` (what it prints).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna

from sb3_ppo_variants.tuning.errors import TuningError
from sb3_ppo_variants.tuning.models import default_models_dir
from sb3_ppo_variants.tuning.objective import Objective, Task
from sb3_ppo_variants.tuning.progress import Progress
from sb3_ppo_variants.tuning.samplers import make_pruner, make_sampler
from sb3_ppo_variants.tuning.space import SearchSpace, Space
from sb3_ppo_variants.tuning.storage import DEFAULT_STORAGE, HEARTBEAT_INTERVAL, open_storage, open_study
from sb3_ppo_variants.tuning.workers import WorkerSettings, optimize_until, run_workers


def run_study(
    env_id: str,
    n_trials: int = 40,
    n_timesteps: int = 50_000,
    *,
    storage: str | None = None,
    study_name: str | None = None,
    space: SearchSpace | Space | Callable[[optuna.Trial, int], dict[str, Any]] | None = None,
    sampler: str = "tpe",
    pruner: str = "median",
    n_jobs: int = 1,
    seed: int = 0,
    n_startup_trials: int = 10,
    pruner_startup_trials: int = 5,
    timeout: float | None = None,
    heartbeat_interval: int | None = HEARTBEAT_INTERVAL,
    progress: bool = True,
    device: str = "cpu",
    vec_env: str = "dummy",
    models_dir: str | os.PathLike | None = None,
    keep_models: bool = True,
    compile: bool = False,
    command: str | None = None,
    **task_settings: Any,
) -> optuna.Study:
    """Tune ``PPOVariant`` on ``env_id``; create the study or resume it; return it.

    :param n_trials: Trials to reach in the study (finished ones from earlier runs count), across
        all workers and machines sharing it.
    :param storage: A SQLAlchemy URL; default :data:`DEFAULT_STORAGE`, a SQLite file here.
    :param study_name: Default: ``env_id``. Running again with the same name resumes.
    :param space: The search space (default :class:`~sb3_ppo_variants.tuning.space.SearchSpace`), or a function
        ``(trial, n_envs) -> PPOVariant keyword arguments``; with ``n_jobs > 1`` it must pickle.
    :param sampler: One of :data:`SAMPLERS`; ``seed`` seeds it (worker ``i`` uses ``seed + i``)
        and the trials (see :func:`~sb3_ppo_variants.tuning.objective.trial_seed`).
    :param pruner: One of :data:`PRUNERS`.
    :param n_jobs: Worker processes, one torch thread each. ``1`` runs in this process.
    :param timeout: Seconds after which no new trial starts.
    :param heartbeat_interval: Seconds; ``None`` turns heartbeats (and retries of lost trials) off.
    :param device, vec_env, compile: How trials run (see :class:`~sb3_ppo_variants.tuning.objective.Objective`).
    :param models_dir: Where each finished trial's model is kept (an artifact store every worker can
        write, see :mod:`sb3_ppo_variants.tuning.models`); default: beside a SQLite or journal-file study
        (``tuning-models/`` for ``tuning.db``); a server's storage keeps none unless it is given.
    :param keep_models: ``False`` keeps no models.
    :param command: The command line that runs the study, appended to ``user_attrs["commands"]``.
    :param task_settings: :class:`~sb3_ppo_variants.tuning.objective.Task` fields (``n_envs``, ``n_evaluations``,
        ``n_eval_episodes``, ``n_last_evaluations``, ``n_train_seeds``, ...).
    """
    for name, value in (("n_trials", n_trials), ("n_jobs", n_jobs)):
        if not isinstance(value, int) or value < 1:
            raise TuningError(f"{name}={value!r} is invalid: accepted values are integers >= 1")
    task = Task.for_env(env_id, n_timesteps, **task_settings)
    if keep_models and models_dir is None:
        models_dir = default_models_dir(storage or DEFAULT_STORAGE)
    models_dir = models_dir if keep_models else None
    objective = Objective(task, space, seed, device=device, vec_env=vec_env, models_dir=models_dir, compile=compile)
    settings = WorkerSettings(
        storage_url=storage or DEFAULT_STORAGE,
        study_name=study_name or env_id,
        sampler=sampler,
        seed=seed,
        n_startup_trials=n_startup_trials,
        pruner=pruner,
        pruner_startup_trials=pruner_startup_trials,
        n_trials=n_trials,
        timeout=math.inf if timeout is None else timeout,
        heartbeat_interval=heartbeat_interval,
    )
    study = open_study(
        open_storage(settings.storage_url, heartbeat_interval),
        settings.study_name,
        task,
        make_sampler(sampler, seed, n_startup_trials),
        make_pruner(pruner, task, pruner_startup_trials),
    )
    if command is not None:
        study.set_user_attr("commands", [*study.user_attrs.get("commands", []), command])
    if models_dir is not None:
        study.set_user_attr("models_dir", str(Path(models_dir).resolve()))  # where report looks first
    progress_bar = Progress(study, n_trials, enabled=progress)
    try:
        if n_jobs == 1:
            deadline = time.monotonic() + settings.timeout
            optimize_until(study, objective, n_trials, deadline, after_trial=progress_bar.update)
        else:
            run_workers(settings, n_jobs, objective, progress_bar)
    except KeyboardInterrupt:
        progress_bar.close()
        print(f"interrupted: the finished trials are kept in {settings.study_name!r}; run the same command to resume")
        return study
    progress_bar.close()
    return study
