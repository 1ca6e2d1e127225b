"""Models saved by earlier versions stay loadable; a file from a newer version says so."""

import json
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from sb3_contrib.common.envs import InvalidActionEnvDiscrete

from sb3_ppo_variants import MaskablePPOVariant, ModelFileError, PPOVariant, RecurrentPPOVariant
from tests.conftest import rewritten_model

MODELS = Path(__file__).parents[1] / "models"
ALGORITHMS = {
    "ppo_default": (PPOVariant, "CartPole-v1"),
    "ppo_with_state": (PPOVariant, "Pendulum-v1"),
    "masked_default": (MaskablePPOVariant, lambda: InvalidActionEnvDiscrete(dim=4, n_invalid_actions=2)),
    "recurrent_default": (RecurrentPPOVariant, "CartPole-v1"),
    "ppg": (PPOVariant, "CartPole-v1"),
    "clip_higher": (PPOVariant, "CartPole-v1"),
}
FILES = sorted(MODELS.glob("*.zip"))


def _env(spec):
    return spec() if callable(spec) else gym.make(spec)


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_a_committed_model_loads_and_goes_on_training(path):
    cls, env = ALGORITHMS[path.stem.rsplit("-", 1)[0]]
    model = cls.load(path, env=_env(env), device="cpu")
    weights = {key: value.clone() for key, value in model.policy.state_dict().items()}
    model.learn(64, reset_num_timesteps=False)
    assert model.num_timesteps == 128
    assert any(not th.equal(weights[key], value) for key, value in model.policy.state_dict().items())
    assert all(th.isfinite(value).all() for value in model.policy.state_dict().values())


def test_the_committed_state_comes_back_with_its_components():
    (path,) = MODELS.glob("ppo_with_state-*.zip")
    model = PPOVariant.load(path, device="cpu")
    names = [component.name for component in model.loss]
    assert names == ["clipped_surrogate", "value", "kl_penalty", "value_normalization", "outer_update"]
    assert model.loss[2].coef != 0.5  # adapted once, after the one call it was trained for
    assert model.loss[3].debiasing_term.item() > 0 and np.isfinite(model.loss[3].running_mean.item())
    assert model.loss[4].momentum_buffer  # outer momentum, one buffer per parameter


def test_files_that_name_the_packages_module_paths_load_by_those_names():
    # PPG's policy class and clip-higher's Scaled schedule are pickled by module path: these files
    # carry the paths of 0.1.0, which keep resolving wherever the classes live now.
    (ppg,) = MODELS.glob("ppg-*.zip")
    model = PPOVariant.load(ppg, device="cpu")
    assert type(model.policy).__name__ == "PhasicActorCriticPolicy"
    assert [component.name for component in model.loss][-1] == "phasic_auxiliary_phase"
    (clip_higher,) = MODELS.glob("clip_higher-*.zip")
    model = PPOVariant.load(clip_higher, device="cpu")
    (surrogate,) = [component for component in model.loss if component.name == "clipped_surrogate"]
    assert type(surrogate.clip_range_high).__name__ == "Scaled"
    assert surrogate.clip_range_high(1.0) == pytest.approx(0.28)


def test_a_file_from_a_newer_format_fails_with_the_reason():
    (path,) = MODELS.glob("ppo_default-*.zip")
    with pytest.raises(ModelFileError, match="loss format version 99, newer than this version"):
        PPOVariant.load(rewritten_model(path, loss_format_version=99), device="cpu")
    with pytest.raises(ModelFileError, match="loss_format_version='one' is invalid"):
        PPOVariant.load(rewritten_model(path, loss_format_version="one"), device="cpu")


def test_a_file_without_a_version_is_the_first_format(tmp_path):
    model = PPOVariant("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32, n_epochs=1, seed=0)
    model.save(tmp_path / "model.zip")
    with zipfile.ZipFile(tmp_path / "model.zip") as saved:
        assert json.loads(saved.read("data"))["loss_format_version"] == 1
    unversioned = rewritten_model(tmp_path / "model.zip", drop=("loss_format_version",))
    assert PPOVariant.load(unversioned, device="cpu").loss_config() == model.loss_config()
