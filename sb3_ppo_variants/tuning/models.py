"""Where a study keeps its trials' models, so that ``report`` can hand the best one to the user.

Each finished (not pruned) trial's model is uploaded to an Optuna artifact store
(``optuna.artifacts.FileSystemArtifactStore``): the zip, and for a normalised task the
``VecNormalize`` statistics beside it. The trial records the artifacts' ids in its user attribute
``model_artifacts``, not a path, so every worker and ``report`` find them through the same store
wherever it is mounted. By default the store is a folder beside a SQLite (or journal-file) study,
``<database>-models/``; a PostgreSQL study run on several machines needs ``--models-dir`` on a file
system they all share (without it, no models are kept, and the run says so).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import optuna
from optuna.artifacts import FileSystemArtifactStore, download_artifact, upload_artifact

MODEL_ARTIFACTS = "model_artifacts"
"""The trial attribute naming its artifacts: ``{"model": id, "vecnormalize": id}``."""


def default_models_dir(storage_url: str) -> Path | None:
    """The folder beside a file-based study (``sqlite:///tuning.db`` -> ``tuning-models``); ``None``
    for a server's storage, where no folder is shared by default."""
    if storage_url.startswith("sqlite:///"):
        database = Path(storage_url[len("sqlite:///") :])
    elif storage_url.endswith(".log") and "://" not in storage_url:  # a journal file
        database = Path(storage_url)
    else:
        return None
    if str(database) in ("", ":memory:"):
        return None
    return database.with_name(f"{database.stem}-models")


class ModelStore:
    """A study's trial models in an artifact store at ``base``."""

    def __init__(self, base: str | os.PathLike) -> None:
        self.base = Path(base)

    def _store(self) -> FileSystemArtifactStore:
        self.base.mkdir(parents=True, exist_ok=True)
        return FileSystemArtifactStore(self.base)

    def keep(self, trial: optuna.Trial, model: Any) -> None:
        """Upload a trial's model (and its ``VecNormalize`` statistics) and record their ids on it."""
        from stable_baselines3.common.vec_env import VecNormalize

        store, ids = self._store(), {}
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / f"trial-{trial.number}.zip"
            model.save(path)
            ids["model"] = upload_artifact(artifact_store=store, file_path=str(path), study_or_trial=trial)
            env = model.get_env()
            if isinstance(env, VecNormalize):
                statistics = Path(folder) / f"trial-{trial.number}-vecnormalize.pkl"
                env.save(str(statistics))
                ids["vecnormalize"] = upload_artifact(
                    artifact_store=store, file_path=str(statistics), study_or_trial=trial
                )
        trial.set_user_attr(MODEL_ARTIFACTS, ids)

    def fetch(self, trial: optuna.trial.FrozenTrial, out: Path, name: str = "best_model") -> dict[str, Path]:
        """Write a trial's model to ``out/<name>.zip`` (and ``<name>-vecnormalize.pkl``); ``{}`` if the
        trial kept none."""
        ids = trial.user_attrs.get(MODEL_ARTIFACTS)
        if not ids:
            return {}
        store, files = self._store(), {}
        out.mkdir(parents=True, exist_ok=True)
        suffixes = {"model": ".zip", "vecnormalize": "-vecnormalize.pkl"}
        for kind, artifact_id in ids.items():
            path = out / f"{name}{suffixes[kind]}"
            path.unlink(missing_ok=True)  # download_artifact refuses to overwrite
            download_artifact(artifact_store=store, artifact_id=artifact_id, file_path=str(path))
            files[kind] = path
        return files


def model_size(path: Path) -> int:
    """Bytes of a kept model and its statistics (what a trial costs on disk)."""
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file())
