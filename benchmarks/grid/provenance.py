"""What a grid cell ran with: the code's commit and the versions of the packages that decide its numbers."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = (
    "sb3_ppo_variants",
    "stable_baselines3",
    "sb3_contrib",
    "torch",
    "gymnasium",
    "numpy",
    "mujoco",
    "box2d",
    "optuna",
)
"""The packages whose version a cell records (those installed)."""

_CHECKOUT = Path(__file__).resolve().parents[2]


def commit() -> str:
    """The checkout's commit, with ``+changes`` when its tracked files (results aside) differ from it;
    ``unknown`` outside a git checkout."""
    try:
        head = subprocess.run(
            ["git", "-C", str(_CHECKOUT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        changed = subprocess.run(
            # the results folder holds the study itself, which changes as cells finish
            [
                "git",
                "-C",
                str(_CHECKOUT),
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ".",
                ":!benchmarks/results",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+changes" if changed else "")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def provenance() -> dict[str, Any]:
    """``{"commit": ..., "versions": {...}}`` of this process."""
    return {"commit": commit(), "versions": versions()}
