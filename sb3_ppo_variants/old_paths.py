"""Module paths of earlier versions, resolved to where their code lives now.

Saved models and configuration files name classes by module path (PPG's policy class,
clip-higher's ``Scaled``, a custom component's module), and users import from documented paths;
both keep working after a module moves. An old module path imports as its new module (the same
object); an old package path imports as a module that looks each name up in the new modules
that hold its former contents. ``CHANGELOG.md`` lists the moves.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Mapping, Sequence
from typing import Any

# Relative to ``sb3_ppo_variants.``: old module -> new module.
MOVED_MODULES: dict[str, str] = {
    "losses.base": "components.protocol",
    "common.hooks": "components.hooks",
    "losses.value": "components.value",
    "losses.entropy": "components.entropy",
    "losses.kl": "components.kl",
    "losses.learning_rate": "components.learning_rate",
    "losses.value_normalization": "components.value_normalization",
    "losses.early_stop": "components.early_stop",
    "losses.vtrace": "components.vtrace",
    "losses.ewma": "components.ewma",
    "losses.outer": "components.outer",
    "phasic.auxiliary_phase": "components.phasic",
    "phasic.policies": "algorithms.policies",
    "ppo_variant.ppo_variant": "algorithms.ppo",
    "ppo_variant.policies": "algorithms.ppo",
    "ppo_mask.ppo_mask": "algorithms.maskable",
    "ppo_mask.policies": "algorithms.maskable",
    "ppo_recurrent.ppo_recurrent": "algorithms.recurrent",
    "ppo_recurrent.policies": "algorithms.recurrent",
    "training.algorithm": "algorithms.base",
    "training.arguments": "algorithms.arguments",
    "training.loop": "update.trainer",
    "training.scoring": "update.scoring",
    "training.compiled": "update.compiled",
    "training.optimizer_step": "update.optimizer_step",
    "training.minibatches": "update.minibatches",
    "training.advantages": "update.advantages",
    "training.distributions": "common.distributions",
    "training.collect": "rollout.collect",
    "training.inference": "rollout.inference",
    "training.rollout": "rollout.value_units",
    "training.safe_loading": "persistence.safe_loading",
    "training.sb3_pickles": "persistence.sb3_pickles",
    "common.plain_objects": "persistence.plain_objects",
    "common.config": "persistence.config",
}
# Old package -> the new modules its names now come from, in lookup order.
MOVED_PACKAGES: dict[str, tuple[str, ...]] = {
    "losses": ("components",),
    "losses.surrogate": ("components.surrogate", "components.trust_region"),
    "training": (
        "algorithms.base",
        "algorithms.arguments",
        "update.scoring",
    ),
    "phasic": (
        "components.phasic",
        "algorithms.policies",
    ),
    "ppo_variant": ("algorithms.ppo",),
    "ppo_mask": ("algorithms.maskable",),
    "ppo_recurrent": ("algorithms.recurrent",),
}

# The checkout's ``tuning`` package (not installed) before the library moved into this package;
# its ``__init__`` registers these, so no other package named ``tuning`` is ever shadowed.
MOVED_TUNING_MODULES: dict[str, str] = {
    **{
        f"tuning.{name}": f"sb3_ppo_variants.tuning.{name}"
        for name in (
            "errors",
            "models",
            "objective",
            "progress",
            "report",
            "retrain",
            "samplers",
            "space",
            "storage",
            "study",
            "workers",
        )
    },
    "tuning.zoo": "sb3_ppo_variants.tuning.baselines",
}


class OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """A finder (on ``sys.meta_path``) that imports each old path as its new module."""

    def __init__(self, modules: Mapping[str, str], packages: Mapping[str, Sequence[str]]) -> None:
        self.modules = dict(modules)
        self.packages = {old: tuple(new) for old, new in packages.items()}

    def add(self, modules: Mapping[str, str]) -> None:
        """Resolve more old module paths (``tuning.space`` in a checkout's ``tuning`` scripts)."""
        self.modules.update(modules)

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname in self.modules:
            return importlib.util.spec_from_loader(fullname, self)
        if fullname in self.packages:
            return importlib.util.spec_from_loader(fullname, self, is_package=True)
        return None

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        if spec.name in self.modules:
            module = importlib.import_module(self.modules[spec.name])
            spec.loader_state = module.__spec__  # the import system stamps the old spec on it next
            return module
        return _PackageOfMovedNames(spec.name, self.packages[spec.name])

    def exec_module(self, module: types.ModuleType) -> None:
        if isinstance(module, _PackageOfMovedNames):
            module.__path__ = []
        else:  # give the module its own spec back
            module.__spec__ = module.__spec__.loader_state


class _PackageOfMovedNames(types.ModuleType):
    def __init__(self, name: str, sources: Sequence[str]) -> None:
        super().__init__(name, f"Moved: its names now live in {', '.join(sources)}.")
        self.sources = sources

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        for source in self.sources:
            module = importlib.import_module(source)
            if hasattr(module, name):
                return getattr(module, name)
        raise AttributeError(f"module {self.__name__!r} (moved to {', '.join(self.sources)}) has no attribute {name!r}")


def _prefixed(modules: Mapping[str, str]) -> dict[str, str]:
    return {f"sb3_ppo_variants.{old}": f"sb3_ppo_variants.{new}" for old, new in modules.items()}


def install() -> OldPaths:
    """Put the finder of old paths on ``sys.meta_path`` once; return it (``add`` registers more)."""
    for finder in sys.meta_path:
        if isinstance(finder, OldPaths):
            return finder
    finder = OldPaths(
        _prefixed(MOVED_MODULES),
        {f"sb3_ppo_variants.{old}": tuple(f"sb3_ppo_variants.{n}" for n in new) for old, new in MOVED_PACKAGES.items()},
    )
    sys.meta_path.insert(0, finder)
    return finder
