"""``python -m sb3_ppo_variants.tuning``: the tuning command line (see :mod:`~sb3_ppo_variants.tuning.cli`)."""

import sys

from sb3_ppo_variants.tuning.cli import main

if __name__ == "__main__":
    sys.exit(main())
