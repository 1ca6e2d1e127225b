"""Build the SB3 / sb3-contrib model files that safe loading is tested on, with the versions users have.

    python tests/models/make_sb3_models.py                 # every version below that is missing
    python tests/models/make_sb3_models.py --versions 2.0.0

SB3 1.8 (gym 0.21) is built too, with the old build tools its gym needs. Each version is installed
from PyPI into a temporary virtual environment (a CPU torch first, and
NumPy < 2 where the version needs it); there a small script saves tiny PPO models (Box and Discrete
actions), a MaskablePPO and a RecurrentPPO, and a VecNormalize statistics file beside the Box model,
into ``tests/models/sb3-<version>/``. The networks are tiny (one hidden layer of 8), so the zips
are small enough to commit. The files are what SB3 itself writes: their pickles are loaded by
``tests/persistence/test_sb3_files.py`` without being executed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

HERE = Path(__file__).resolve().parent

VERSIONS = {
    # SB3 1.8: the last on gym (0.21), whose setup.py current setuptools refuse: it is built with
    # setuptools < 66 and no build isolation (see OLD_BUILD_TOOLS); NumPy < 1.24 for gym 0.21.
    "1.8.0": ["stable-baselines3==1.8.0", "sb3-contrib==1.8.0", "gym==0.21.0", "numpy<1.24"],
    # SB3 2.0: the first on gymnasium (0.28), NumPy 1 pickles.
    "2.0.0": ["stable-baselines3==2.0.0", "sb3-contrib==2.0.0", "gymnasium==0.28.1", "numpy<2"],
    # SB3 2.3: the last NumPy 1 pickles before 2.5's NumPy 2 support, gymnasium 0.29.
    "2.3.2": ["stable-baselines3==2.3.2", "sb3-contrib==2.3.0", "gymnasium==0.29.1", "numpy<2"],
    # Today's, NumPy 2 pickles (numpy._core).
    "2.9.2": ["stable-baselines3==2.9.2", "sb3-contrib==2.9.2", "numpy>=2"],
}
TORCH = "torch==2.13.0"
OLD_BUILD_TOOLS = {"1.8.0": ["setuptools<66", "wheel<0.40"]}
"""Build tools a version's dependencies need, installed first and used without build isolation."""

MAKE = """
import sys
from pathlib import Path

from sb3_contrib import MaskablePPO, RecurrentPPO
from sb3_contrib.common.envs import InvalidActionEnvDiscrete
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

out = Path(sys.argv[1])
out.mkdir(parents=True, exist_ok=True)
tiny = dict(policy_kwargs=dict(net_arch=[8]), n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")

env = VecNormalize(make_vec_env("Pendulum-v1", n_envs=1, seed=0))
PPO("MlpPolicy", env, learning_rate=3e-4, **tiny).learn(64).save(out / "ppo-box.zip")
env.save(str(out / "ppo-box-vecnormalize.pkl"))
PPO("MlpPolicy", "CartPole-v1", clip_range=lambda progress: 0.2 * progress, **tiny).learn(64).save(
    out / "ppo-discrete.zip"
)  # a schedule users write as a lambda: pickled by value
MaskablePPO("MlpPolicy", InvalidActionEnvDiscrete(dim=4, n_invalid_actions=2), **tiny).learn(64).save(
    out / "maskable-ppo.zip"
)
lstm = dict(tiny, policy_kwargs=dict(net_arch=[8], lstm_hidden_size=8))
RecurrentPPO("MlpLstmPolicy", "CartPole-v1", **lstm).learn(64).save(out / "recurrent-ppo.zip")
print("wrote", sorted(p.name for p in out.iterdir()))
"""


def build(version: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as folder:
        environment = Path(folder) / "venv"
        venv.create(environment, with_pip=True)
        python = str(environment / "bin" / "python")
        pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, TORCH], check=True)  # the CPU build here; an unpinned torch pulls CUDA
        isolation = []
        if version in OLD_BUILD_TOOLS:
            subprocess.run([*pip, *OLD_BUILD_TOOLS[version]], check=True)
            isolation = ["--no-build-isolation"]
        subprocess.run([*pip, *isolation, *VERSIONS[version]], check=True)
        subprocess.run([python, "-c", MAKE, str(out)], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--versions", nargs="+", default=list(VERSIONS), choices=list(VERSIONS))
    args = parser.parse_args()
    for version in args.versions:
        out = HERE / f"sb3-{version}"
        if out.exists():
            print(f"{out} exists: skipped")
            continue
        print(f"SB3 {version}: {', '.join(VERSIONS[version])}", flush=True)
        build(version, out)
    sys.exit(0)


if __name__ == "__main__":
    main()
