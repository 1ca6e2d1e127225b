"""Cells written by the earlier, file-based grid runner, imported into a grid study.

That runner wrote one JSON file per cell (``env``, ``variant``, ``seed``, ``timesteps``,
``seconds``, ``evaluations`` as ``[timesteps, mean return]`` pairs, and ``error`` for a cell
that raised) and evaluated 10 episodes (5 on LunarLander and MuJoCo) on one environment. Each
file becomes a finished trial with the same learning curve, score, duration and error, and the
study records the protocol the files were made with, so the report reads them like any grid.
"""

from __future__ import annotations

import json
from pathlib import Path

import optuna
from optuna.trial import TrialState

from benchmarks.grid.cells import ENVS, Cell, EnvProtocol, cell_task
from benchmarks.grid.queue import LEGACY_ROW_IDS, GridError, cell_of, legacy_key
from benchmarks.grid.rows import row_id

EARLIER_EVAL_EPISODES = {"LunarLander-v3": 5, "HalfCheetah-v5": 5, "Hopper-v5": 5}
"""Episodes per evaluation of the earlier runner, where not 10."""


def migrate(cells: Path, study: optuna.Study) -> int:
    """Import every ``cells/*.json`` not yet in ``study``; return how many were imported."""
    records = [json.loads(path.read_text()) for path in sorted(cells.glob("*.json"))]
    if not records:
        raise GridError(f"no cell files (*.json) in {cells}")
    protocols = dict(study.user_attrs.get("protocols", {}))
    for record in records:
        env_id = record["env"]
        protocol = EnvProtocol(
            timesteps=int(record["timesteps"]),
            n_evaluations=max(len(r["evaluations"]) for r in records if r["env"] == env_id),
            zoo_ppo_score=ENVS[env_id].zoo_ppo_score,
            eval_episodes=EARLIER_EVAL_EPISODES.get(env_id, 10),
            eval_envs=1,
        ).as_dict()
        if protocols.setdefault(env_id, protocol) != protocol:
            raise GridError(f"{cells}: cells of {env_id} differ in protocol from {protocols[env_id]}")
    study.set_user_attr("protocols", protocols)
    present = {cell_of(trial) for trial in study.get_trials(deepcopy=False)}
    imported = 0
    for record in records:
        cell = Cell(record["env"], record["variant"], int(record["seed"]))
        if cell in present:
            continue
        evaluations = {int(t): float(r) for t, r in record["evaluations"]}
        attrs = {**cell.as_attrs(), "seconds": record["seconds"], "migrated_from": str(cells)}
        failed = "error" in record or not evaluations
        if failed:
            attrs["fail_reason"] = record.get("error", "no evaluation")
        trial = optuna.trial.create_trial(
            state=TrialState.FAIL if failed else TrialState.COMPLETE,
            value=None
            if failed
            else cell_task(cell, EnvProtocol(**protocols[cell.env])).score(sorted(evaluations.items())),
            user_attrs=attrs,
            intermediate_values=evaluations,
        )
        study.add_trial(trial)
        imported += 1
    return imported


LEGACY_COMMIT = "1907d325515e1eefaf80c3e7a25199094fd16c83"
"""The last commit whose grid cells recorded no row identity."""

CHANGED_SINCE_LEGACY = {
    "ppo-ewma": "the average now starts with the initial policy's weight, as the authors' EwmaModel",
    "trgppo": "the authors' rule (trust-region bounds alone, annealed for Discrete) and Box actions",
    "kl-adaptive-lr": "its cells now record the learning rate of every call",
}
"""Rows whose cells from before identities are superseded, and why; every other row trains today
what it trained then (same components, same settings)."""


def adopt_legacy_cells(study: optuna.Study) -> int:
    """Give the cells from before row identities (no ``row_id`` recorded) the identity their row had
    then, stored once on the study (``legacy_row_ids``): today's identity for the rows that have not
    changed since :data:`LEGACY_COMMIT`, none (superseded) for :data:`CHANGED_SINCE_LEGACY`. Stored
    rather than recomputed, so a row that changes later supersedes these cells too. Returns how many
    ``env|row`` pairs were adopted (0 once done)."""

    adopted = dict(study.user_attrs.get(LEGACY_ROW_IDS, {}))
    new = {}
    for trial in study.get_trials(deepcopy=False):
        cell = cell_of(trial)
        key = None if cell is None else legacy_key(cell)
        if key is None or "row_id" in trial.user_attrs or key in adopted or key in new:
            continue
        if cell.variant not in CHANGED_SINCE_LEGACY:
            try:
                new[key] = row_id(cell.variant, cell.env)
            except ValueError:  # a row no longer defined
                continue
    if new:
        study.set_user_attr(LEGACY_ROW_IDS, {**adopted, **new})
    return len(new)
