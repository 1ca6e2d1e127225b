"""The package as it installs: one top-level package, a console script, no reach into private names,
and the module paths of earlier versions still importable."""

from __future__ import annotations

import ast
import importlib
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import optuna
import pytest

import sb3_ppo_variants
from sb3_ppo_variants.old_paths import MOVED_MODULES, MOVED_TUNING_MODULES
from sb3_ppo_variants.tuning.storage import RETRIED_RDB_CALLS, RETRIED_STORAGE_API

ROOT = Path(__file__).resolve().parents[1]


def test_the_wheel_installs_only_the_package_and_the_tuning_command(tmp_path):
    source = tmp_path / "source"  # a copy, so the build leaves nothing in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "sb3_ppo_variants", "tuning", "tests", "benchmarks"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(
            ROOT / name,
            source / name,
            **({"ignore": shutil.ignore_patterns("*.db", "*.png")} if (ROOT / name).is_dir() else {}),
        )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            str(source),
            "-w",
            str(tmp_path),
        ],
        check=True,
    )
    (wheel,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        (entry_points,) = [name for name in names if name.endswith("entry_points.txt")]
        scripts = archive.read(entry_points).decode()
    top_level = {name.split("/")[0] for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert top_level == {"sb3_ppo_variants"}
    assert "sb3-ppo-tuning = sb3_ppo_variants.tuning.cli:main" in scripts


def _project_modules() -> list[Path]:
    return [path for folder in ("sb3_ppo_variants", "tuning", "benchmarks") for path in (ROOT / folder).rglob("*.py")]


def test_no_module_imports_a_private_name():
    imported = []
    for path in _project_modules():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module != "__future__":
                private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
                parts = (node.module or "").split(".")
                if private or any(p.startswith("_") and not p.startswith("__") for p in parts):
                    imported.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module} {private}")
    assert imported == []


def test_no_package_module_is_over_about_400_lines():
    long = {
        str(path.relative_to(ROOT)): n
        for path in (ROOT / "sb3_ppo_variants").rglob("*.py")
        if (n := len(path.read_text().splitlines())) > 420
    }
    assert long == {}


@pytest.mark.parametrize("old", sorted(MOVED_MODULES))
def test_an_old_module_path_imports_as_the_module_it_moved_to(old):
    moved = importlib.import_module(f"sb3_ppo_variants.{old}")
    assert moved is importlib.import_module(f"sb3_ppo_variants.{MOVED_MODULES[old]}")
    assert moved.__spec__.name == f"sb3_ppo_variants.{MOVED_MODULES[old]}"  # its own spec, not the alias's


def test_old_packages_give_the_names_they_exported():
    from sb3_ppo_variants.losses import ClippedSurrogate, LossComponent
    from sb3_ppo_variants.phasic import PhasicActorCriticPolicy, PhasicAuxiliaryPhase
    from sb3_ppo_variants.ppo_mask import MaskablePPOVariant, MlpPolicy
    from sb3_ppo_variants.ppo_recurrent import MlpLstmPolicy, RecurrentPPOVariant
    from sb3_ppo_variants.ppo_variant import PPOVariant
    from sb3_ppo_variants.training import LINKED_DEFAULTS, LossComponentsMixin, MinibatchScorer

    assert PPOVariant is sb3_ppo_variants.PPOVariant and MaskablePPOVariant is sb3_ppo_variants.MaskablePPOVariant
    assert RecurrentPPOVariant is sb3_ppo_variants.RecurrentPPOVariant
    assert MlpPolicy.__name__ == "MaskableActorCriticPolicy" and MlpLstmPolicy.__name__ == "RecurrentActorCriticPolicy"
    assert issubclass(ClippedSurrogate, LossComponent) and PhasicAuxiliaryPhase.name == "phasic_auxiliary_phase"
    assert PhasicActorCriticPolicy.__module__ == "sb3_ppo_variants.algorithms.policies"
    assert issubclass(PPOVariant, LossComponentsMixin) and "clip_range" in LINKED_DEFAULTS and MinibatchScorer
    from sb3_ppo_variants.losses.surrogate import ClippedSurrogate as Clipped
    from sb3_ppo_variants.losses.surrogate import TrustRegionGuidedSurrogate

    assert Clipped is ClippedSurrogate and TrustRegionGuidedSurrogate.name == "trust_region_guided_surrogate"
    with pytest.raises(AttributeError, match="moved to"):
        _ = sb3_ppo_variants.training.NoSuchName  # type: ignore[attr-defined]


def test_the_checkouts_tuning_scripts_keep_the_old_import_paths():
    import tuning

    for old, new in MOVED_TUNING_MODULES.items():
        assert importlib.import_module(old) is importlib.import_module(new)
    assert tuning.run_study is sb3_ppo_variants.tuning.run_study


def test_the_storage_retries_every_method_of_optunas_storage_api():
    from optuna.storages import BaseStorage, RDBStorage
    from optuna.storages._heartbeat import BaseHeartbeat  # Optuna exports it from a private module only

    public = {
        name
        for base in (BaseStorage, BaseHeartbeat)
        for name in dir(base)
        if not name.startswith("_") and callable(getattr(base, name))
    }
    # set_trial_state_values and create_new_trial's private half retry with checks of their own.
    assert set(RETRIED_STORAGE_API) | {"set_trial_state_values", "remove_session"} == public
    assert all(callable(getattr(RDBStorage, name, None)) for name in RETRIED_RDB_CALLS), optuna.__version__


LAYERS = {  # each room and the rooms it may import from (besides itself)
    "common": set(),
    "components": {"common"},
    "update": {"common", "components"},
    "rollout": {"common", "components"},
    "persistence": {"common", "components"},
    "variants": {"common", "components"},
    "algorithms": {"common", "components", "update", "rollout", "persistence", "variants"},
}


def test_data_flows_one_way_through_the_rooms():
    crossings = []
    for room, allowed in LAYERS.items():
        paths = [ROOT / "sb3_ppo_variants" / f"{room}.py"] if room == "variants" else []
        paths += list((ROOT / "sb3_ppo_variants" / room).glob("*.py")) if room != "variants" else []
        for path in paths:
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("sb3_ppo_variants."):
                    target = node.module.split(".")[1]
                    if target != room and target not in allowed:
                        crossings.append(f"{path.relative_to(ROOT)} imports {node.module}")
    assert crossings == []
