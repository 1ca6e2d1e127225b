"""``python -m tuning``: the tuning command line, from a checkout."""

import sys

from sb3_ppo_variants.tuning.cli import main

if __name__ == "__main__":
    sys.exit(main())
