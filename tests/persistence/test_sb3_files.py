"""SB3's own files, written by the SB3 / sb3-contrib versions users have, open safely by default.

The fixtures in ``tests/models/sb3-<version>/`` were written by SB3 itself in virtual environments
(``tests/models/make_sb3_models.py``): 1.8.0 (gym 0.21: its spaces are read as gymnasium's), 2.0.0
(the first on gymnasium, NumPy 1 pickles, closures as schedules), 2.3.2 (NumPy 1 pickles) and 2.9.2
(NumPy 2 pickles, schedule classes). Their pickles
are read by the allow-list unpickler; a payload put in any of them runs nothing.
"""

from __future__ import annotations

import base64
import json
import pickle
import warnings
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from sb3_contrib.common.envs import InvalidActionEnvDiscrete
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_ppo_variants import (
    MaskablePPOVariant,
    ModelFileError,
    ModelFileWarning,
    PPOVariant,
    RecurrentPPOVariant,
    load_vec_normalize,
)
from tests.conftest import rewritten_model

MODELS = Path(__file__).parents[1] / "models"
VERSIONS = ["1.8.0", "2.0.0", "2.3.2", "2.9.2"]
FILES = {
    "ppo-box.zip": (PPOVariant, lambda: gym.make("Pendulum-v1")),
    "ppo-discrete.zip": (PPOVariant, lambda: gym.make("CartPole-v1")),
    "maskable-ppo.zip": (MaskablePPOVariant, lambda: InvalidActionEnvDiscrete(dim=4, n_invalid_actions=2)),
    "recurrent-ppo.zip": (RecurrentPPOVariant, lambda: gym.make("CartPole-v1")),
}
CLOSURE_SCHEDULES = {"1.8.0", "2.0.0", "2.3.2"}
"""Versions whose schedules are functions pickled by value (SB3 wrote classes from 2.6 on)."""


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("name", list(FILES))
def test_an_sb3_file_loads_with_the_default_arguments_predicts_and_trains_further(version, name):
    cls, make_env = FILES[name]
    path = MODELS / f"sb3-{version}" / name
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = cls.load(path, device="cpu")  # safe by default: nothing the file carries runs
    replaced = [w for w in caught if issubclass(w.category, ModelFileWarning)]
    env = make_env()
    observation, _ = env.reset(seed=0)
    action, _ = model.predict(observation, deterministic=True)
    assert env.action_space.contains(np.asarray(action).reshape(env.action_space.shape))
    if version in CLOSURE_SCHEDULES or name == "ppo-discrete.zip":  # the latter was saved with a lambda clip_range
        assert replaced and "pickled by value" in str(replaced[0].message)
        assert "custom_objects=" in str(replaced[0].message)
        objects = {"clip_range": 0.2, "lr_schedule": lambda _: 3e-4, "learning_rate": 3e-4}
        model = cls.load(path, env=_as_saved(make_env(), model), device="cpu", custom_objects=objects)
    else:
        assert not replaced
        model = cls.load(path, env=_as_saved(make_env(), model), device="cpu")
    before = [p.clone() for p in model.policy.parameters()]
    model.learn(64)
    assert any(not (a == b).all() for a, b in zip(before, model.policy.parameters(), strict=True))


def _as_saved(env: gym.Env, model) -> gym.Env:
    """``env`` with the observation space the file was saved with: gymnasium 1.0 changed CartPole's
    bounds from float32's maximum to infinity, which SB3's own check refuses."""
    if env.observation_space == model.observation_space:
        return env
    return gym.wrappers.TransformObservation(env, lambda observation: observation, model.observation_space)


@pytest.mark.parametrize("version", VERSIONS)
def test_sb3s_vecnormalize_statistics_load_safely_and_equal_what_sb3_reads(version):
    path = MODELS / f"sb3-{version}" / "ppo-box-vecnormalize.pkl"
    safely = load_vec_normalize(path, make_vec_env("Pendulum-v1", n_envs=1))
    if version == "1.8.0":  # SB3's own loader cannot read it without gym installed: the statistics are there
        assert safely.obs_rms.mean.shape == (3,) and safely.obs_rms.count > 64
        return
    as_sb3 = VecNormalize.load(str(path), make_vec_env("Pendulum-v1", n_envs=1))
    assert np.array_equal(safely.obs_rms.mean, as_sb3.obs_rms.mean) and safely.ret_rms.var == as_sb3.ret_rms.var
    assert safely.observation_space == as_sb3.observation_space


class _CreatesAFile:
    """Unpickling this runs ``open(path, "w")``: a stand-in for any code a pickle can run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _serialized_keys(path: Path) -> list[str]:
    with zipfile.ZipFile(path) as archive:
        data = json.loads(archive.read("data"))
    return [key for key, value in data.items() if isinstance(value, dict) and ":serialized:" in value]


HOSTILE = [(version, name, key) for version in VERSIONS for name in FILES for key in _serialized_keys(
    MODELS / f"sb3-{version}" / name
)]  # fmt: skip


@pytest.mark.parametrize("version, name, key", HOSTILE)
def test_a_payload_in_any_pickled_attribute_of_an_sb3_file_runs_nothing(version, name, key, tmp_path):
    cls, _ = FILES[name]
    marker = tmp_path / "ran"
    payload = {
        ":type:": "<class 'object'>",
        ":serialized:": base64.b64encode(pickle.dumps(_CreatesAFile(marker))).decode(),
    }
    hostile = rewritten_model(MODELS / f"sb3-{version}" / name, **{key: payload})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModelFileWarning)
        try:
            cls.load(hostile, device="cpu")  # a training-only schedule is replaced, with a warning
        except ModelFileError as error:
            assert key in str(error) and "io.open" in str(error)
    assert not marker.exists()


def test_a_payload_in_a_vecnormalize_file_runs_nothing(tmp_path):
    marker, path = tmp_path / "ran", tmp_path / "vecnormalize.pkl"
    path.write_bytes(pickle.dumps(_CreatesAFile(marker)))
    with pytest.raises(ModelFileError, match=r"more than its statistics: the pickle names io\.open"):
        load_vec_normalize(path, make_vec_env("Pendulum-v1", n_envs=1))
    assert not marker.exists()


def test_set_parameters_reads_no_pickle(tmp_path):
    marker = tmp_path / "ran"
    model = PPOVariant("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32)
    model.save(tmp_path / "model.zip")
    hostile = tmp_path / "hostile.zip"
    with zipfile.ZipFile(tmp_path / "model.zip") as source, zipfile.ZipFile(hostile, "w") as target:
        for item in source.infolist():
            content = source.read(item.filename)
            if item.filename == "policy.pth":  # SB3 reads it with torch.load(weights_only=True)
                content = pickle.dumps(_CreatesAFile(marker))
            target.writestr(item, content)
    with pytest.raises(Exception, match=r"Weights only load failed|weights_only"):
        model.set_parameters(str(hostile))
    assert not marker.exists()


def _zoo_yaml(path: Path, value) -> None:
    """As the Zoo writes it: PyYAML's default dumper, with the OrderedDict's Python tag."""
    import yaml

    path.write_text(yaml.dump(value))


def test_a_zoo_run_folder_loads_safely_with_its_environment_and_statistics(tmp_path):
    from collections import OrderedDict

    from sb3_ppo_variants import load_zoo_folder

    run, source = tmp_path / "Pendulum-v1_1", MODELS / "sb3-2.9.2"
    (run / "Pendulum-v1").mkdir(parents=True)
    (run / "Pendulum-v1.zip").write_bytes((source / "ppo-box.zip").read_bytes())
    (run / "Pendulum-v1" / "vecnormalize.pkl").write_bytes((source / "ppo-box-vecnormalize.pkl").read_bytes())
    config = OrderedDict([("n_envs", 1), ("normalize", "dict(norm_obs=True, norm_reward=False)"), ("n_steps", 32)])
    _zoo_yaml(run / "Pendulum-v1" / "config.yml", config)
    _zoo_yaml(run / "Pendulum-v1" / "args.yml", OrderedDict([("algo", "ppo"), ("env", "Pendulum-v1")]))
    _zoo_yaml(run / "Pendulum-v1" / "env_kwargs.yml", {"g": 9.81})
    assert "!!python/object/apply:collections.OrderedDict" in (run / "Pendulum-v1" / "config.yml").read_text()
    model = load_zoo_folder(run)
    env = model.get_env()
    assert isinstance(env, VecNormalize) and not env.training and not env.norm_reward
    expected = load_vec_normalize(source / "ppo-box-vecnormalize.pkl", make_vec_env("Pendulum-v1"))
    assert np.array_equal(env.obs_rms.mean, expected.obs_rms.mean)
    assert env.get_attr("g")[0] == 9.81  # env_kwargs applied
    action, _ = model.predict(env.reset(), deterministic=True)
    assert action.shape == (1, 1)


def test_a_hub_folder_loads_safely_and_a_python_tag_in_its_yaml_runs_nothing(tmp_path):
    from sb3_ppo_variants import load_zoo_folder

    source = MODELS / "sb3-2.9.2"
    (tmp_path / "ppo-Pendulum-v1.zip").write_bytes((source / "ppo-box.zip").read_bytes())
    (tmp_path / "vec_normalize.pkl").write_bytes((source / "ppo-box-vecnormalize.pkl").read_bytes())
    _zoo_yaml(tmp_path / "config.yml", {"normalize": True})
    assert isinstance(load_zoo_folder(tmp_path).get_env(), VecNormalize)  # the env from the zip's name

    marker = tmp_path / "ran"
    (tmp_path / "config.yml").write_text(f"normalize: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(ModelFileError, match="safe loading reads plain YAML and OrderedDict only"):
        load_zoo_folder(tmp_path)
    _zoo_yaml(tmp_path / "config.yml", {"normalize": "__import__('os').system('touch x')"})
    (tmp_path / "vec_normalize.pkl").unlink()
    with pytest.raises(ModelFileError, match="is not a dict of literal values: safe loading evaluates nothing"):
        load_zoo_folder(tmp_path)
    assert not marker.exists()
