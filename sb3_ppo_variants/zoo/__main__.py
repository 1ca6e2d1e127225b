"""``python -m sb3_ppo_variants.zoo train|enjoy|record_video [the Zoo's arguments]``.

Registers ``ppo_variant`` and ``ppo_lstm_variant`` (see :mod:`sb3_ppo_variants.zoo`), then runs
the Zoo's script with the rest of the command line. Two additions:

- without ``-conf``/``--conf-file``, ``train`` reads the Zoo's own ``ppo.yml`` (``ppo_lstm.yml``),
  so every environment the Zoo tuned PPO for works at once;
- ``--search-space FILE``: the search space ``-optimize`` samples (a ``python -m tuning``
  search-space file); the default space otherwise.
"""

from __future__ import annotations

import runpy
import sys

from sb3_ppo_variants.zoo import ALGORITHMS, register, zoo_hyperparameters_file

SCRIPTS = ("train", "enjoy", "record_video")
USAGE = f"usage: python -m sb3_ppo_variants.zoo {{{','.join(SCRIPTS)}}} [the Zoo's arguments]"


def _take_option(arguments: list[str], *names: str) -> str | None:
    """Remove ``--name VALUE`` (or ``--name=VALUE``) from ``arguments`` and return the value."""
    for index, argument in enumerate(arguments):
        for name in names:
            if argument == name and index + 1 < len(arguments):
                value = arguments[index + 1]
                del arguments[index : index + 2]
                return value
            if argument.startswith(name + "="):
                del arguments[index]
                return argument.split("=", 1)[1]
    return None


def _option(arguments: list[str], *names: str) -> str | None:
    return _take_option(list(arguments), *names)


def main(argv: list[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if not arguments or arguments[0] not in SCRIPTS:
        print(USAGE, file=sys.stderr)
        return 2
    script, arguments = arguments[0], arguments[1:]
    register(search_space=_take_option(arguments, "--search-space"))
    algorithm = _option(arguments, "--algo")
    if script == "train" and algorithm in ALGORITHMS and _option(arguments, "-conf", "--conf-file") is None:
        arguments += ["--conf-file", str(zoo_hyperparameters_file(algorithm))]
    sys.argv = [f"sb3_ppo_variants.zoo {script}", *arguments]
    runpy.run_module(f"rl_zoo3.{script}", run_name="__main__", alter_sys=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
