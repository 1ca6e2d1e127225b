"""The repository's tuning scripts: ``python -m tuning`` from a checkout.

The library lives in :mod:`sb3_ppo_variants.tuning` (installed with the package, whose console
script ``sb3-ppo-tuning`` is the same command). This folder is not installed; it keeps the
checkout's command and the import paths of earlier versions (``tuning.space``, ``tuning.zoo``...)
working, as the same modules.
"""

from sb3_ppo_variants import old_paths
from sb3_ppo_variants.tuning import *  # noqa: F403  (the names ``tuning`` exported before)
from sb3_ppo_variants.tuning import __all__ as __all__

old_paths.install().add(old_paths.MOVED_TUNING_MODULES)
