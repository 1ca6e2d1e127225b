"""``load(path, safe=True)``: a model file opens with nothing unpickled and no module it names imported.

Malicious files carry real payloads (each would create a marker file); the tests check that a
safe load runs none of them and names what it refused, that every policy and space of the suite
round-trips safely, and that malformed files fail with the reason.
"""

from __future__ import annotations

import base64
import io
import json
import pickle
import sys
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from sb3_contrib.common.envs import InvalidActionEnvDiscrete
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.policies import ActorCriticPolicy

from sb3_ppo_variants import HyperparameterError, MaskablePPOVariant, ModelFileError, PPOVariant, RecurrentPPOVariant
from sb3_ppo_variants.persistence.plain_objects import describe
from sb3_ppo_variants.tuning.baselines import zoo_ppo_arguments
from sb3_ppo_variants.variants import variant_arguments, variant_policy
from tests.conftest import ACTION_SPACES, DictEnv, ImageEnv, SpaceEnv, parameters_equal, rewritten_model

SMALL = dict(n_steps=32, batch_size=32, n_epochs=1, seed=0, device="cpu")


def _zoo(env_id: str) -> dict:
    return {**zoo_ppo_arguments(env_id), **SMALL}


MODELS = {
    "cartpole-zoo-schedules": lambda: PPOVariant("MlpPolicy", "CartPole-v1", **_zoo("CartPole-v1")),
    **{
        f"action-{name}": (lambda space=space: PPOVariant("MlpPolicy", SpaceEnv(space), **SMALL))
        for name, space in ACTION_SPACES.items()
    },
    "images-cnn": lambda: PPOVariant("CnnPolicy", ImageEnv(), **SMALL),
    "dict-multi-input": lambda: PPOVariant("MultiInputPolicy", DictEnv(), **SMALL),
    "gsde-policy-kwargs": lambda: PPOVariant(
        "MlpPolicy",
        "Pendulum-v1",
        use_sde=True,
        policy_kwargs=dict(net_arch=dict(pi=[16], vf=[16]), activation_fn=th.nn.ReLU, optimizer_class=th.optim.RMSprop),
        **SMALL,
    ),
    "mujoco-zoo-policy": lambda: PPOVariant("MlpPolicy", "Pendulum-v1", **_zoo("HalfCheetah-v5")),
    "clip-higher-scaled-schedule": lambda: PPOVariant(
        "MlpPolicy", "CartPole-v1", **variant_arguments("clip-higher", _zoo("CartPole-v1"))
    ),
    "phasic-policy": lambda: PPOVariant(
        variant_policy("ppg", "MlpPolicy"), "CartPole-v1", **variant_arguments("ppg", SMALL)
    ),
    "masked": lambda: MaskablePPOVariant("MlpPolicy", InvalidActionEnvDiscrete(dim=4, n_invalid_actions=2), **SMALL),
    "recurrent": lambda: RecurrentPPOVariant("MlpLstmPolicy", "CartPole-v1", **SMALL),
}


@pytest.mark.parametrize("case", list(MODELS))
def test_every_policy_and_space_of_the_suite_round_trips_in_safe_mode(case, tmp_path):
    model = MODELS[case]()
    model.learn(64)
    model.save(tmp_path / "model.zip")
    loaded = type(model).load(tmp_path / "model.zip", safe=True, device="cpu")

    assert parameters_equal(loaded.policy, model.policy)
    assert type(loaded.policy) is type(model.policy) and loaded.policy_kwargs == model.policy_kwargs
    assert loaded.observation_space == model.observation_space and loaded.action_space == model.action_space
    assert describe(loaded.loss_config()) == describe(model.loss_config())  # SB3's schedules have no ==
    for progress in (1.0, 0.5, 0.0):  # schedules come back as the same functions
        assert loaded.lr_schedule(progress) == model.lr_schedule(progress)
        assert loaded.clip_range(progress) == model.clip_range(progress)
    model.observation_space.seed(0)
    observations = [model.observation_space.sample() for _ in range(4)]
    for observation in observations:
        expected, _ = model.predict(observation, deterministic=True)
        np.testing.assert_array_equal(loaded.predict(observation, deterministic=True)[0], expected)
    loaded.set_env(model.get_env())
    loaded.learn(32, reset_num_timesteps=False)  # it goes on training
    assert all(th.isfinite(p).all() for p in loaded.policy.parameters())


# --- malicious files -------------------------------------------------------------------------


class _CreatesAFile:
    """Unpickling this runs ``open(path, "w")``: a stand-in for any code a pickle can run."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _payload(marker: Path) -> dict:
    return {":type:": "<class 'gymnasium.spaces.box.Box'>", ":serialized:": base64.b64encode(
        pickle.dumps(_CreatesAFile(marker))).decode()}  # fmt: skip


@pytest.fixture
def saved(tmp_path) -> Path:
    model = PPOVariant("MlpPolicy", "CartPole-v1", **SMALL)
    model.save(tmp_path / "model.zip")
    return tmp_path / "model.zip"


def test_a_pickle_payload_in_a_described_attribute_is_never_unpickled(saved, tmp_path):
    marker = tmp_path / "ran"
    malicious = rewritten_model(saved, observation_space=_payload(marker))
    model = PPOVariant.load(malicious, safe=True, device="cpu")  # the plain description is used instead
    assert not marker.exists() and model.observation_space == gym.make("CartPole-v1").observation_space
    with pytest.raises(ValueError, match=r"The space is of type <class '_io\.TextIOWrapper'>"):
        PPOVariant.load(rewritten_model(saved, observation_space=_payload(marker)), safe=False, device="cpu")
    assert marker.exists()  # the threat is real: SB3's own loading (safe=False) ran it before failing


def test_a_pickle_payload_in_an_attribute_with_no_plain_form_is_refused_by_name(saved, tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(ModelFileError, match=r"runs no code a file carries, and cannot rebuild evil \(<class"):
        PPOVariant.load(rewritten_model(saved, evil=_payload(marker)), device="cpu")  # safe by default
    assert not marker.exists()


def _with_plain(path: Path, **described) -> io.BytesIO:
    with zipfile.ZipFile(path) as archive:
        plain = json.loads(archive.read("data"))["plain_attributes"]
    return rewritten_model(path, plain_attributes={**plain, **described})


@pytest.mark.parametrize(
    "key, description, refusal",
    [
        ("policy_class", {":class:": "os:system"}, r"would import module 'os' \(for system\).*allow=\['os'\]"),
        ("lr_schedule", {":object:": "builtins:eval", "fields": {}}, r"would import module 'builtins'"),
        ("lr_schedule", {":object:": "torch.nn:ReLU", "fields": {}}, r"torch.nn:ReLU is not a schedule"),
        ("policy_class", {":class:": "torch:load"}, r"torch.load is not a class"),
        ("policy_class", {":class:": "torch.nn:ReLU"}, r"policy_class is .*ReLU.*, not a subclass of BasePolicy"),
        ("observation_space", {":space:": {"type": "Sequence"}}, r"space type 'Sequence' is unknown"),
    ],
)
def test_a_description_that_names_code_is_refused_by_name(saved, key, description, refusal):
    with pytest.raises(ModelFileError, match=refusal):
        PPOVariant.load(_with_plain(saved, **{key: description}), safe=True, device="cpu")


SIDE_EFFECT_MODULE = """
from pathlib import Path
Path(__file__).with_name("imported").touch()  # what importing it does

from sb3_ppo_variants.components import ValueLoss

class SideEffectValue(ValueLoss):
    name = "side_effect_value"
"""


def test_a_loss_component_whose_module_would_be_imported_is_refused_unless_allowed(saved, tmp_path, monkeypatch):
    (tmp_path / "side_effect_components.py").write_text(SIDE_EFFECT_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    config = [{"name": "clipped_surrogate"}, {"name": "side_effect_value", "module": "side_effect_components"}]
    malicious = rewritten_model(saved, loss_config=config)
    with pytest.raises(ModelFileError, match=r"'side_effect_value' would be built by importing module 'side_eff"):
        PPOVariant.load(malicious, safe=True, device="cpu")
    assert not (tmp_path / "imported").exists()

    malicious.seek(0)
    model = PPOVariant.load(malicious, safe=True, allow=["side_effect_components"], device="cpu")
    assert (tmp_path / "imported").exists() and model.loss[1].name == "side_effect_value"
    sys.modules.pop("side_effect_components", None)


class CustomPolicy(ActorCriticPolicy):
    """A policy of the user's own: its module is code a safe load imports only when allowed."""


def test_a_custom_policy_class_loads_only_when_its_module_is_allowed(tmp_path):
    PPOVariant(CustomPolicy, "CartPole-v1", **SMALL).save(tmp_path / "custom.zip")
    with pytest.raises(ModelFileError, match=rf"would import module '{__name__}' \(for CustomPolicy\)"):
        PPOVariant.load(tmp_path / "custom.zip", safe=True, device="cpu")
    model = PPOVariant.load(tmp_path / "custom.zip", safe=True, allow=[__name__], device="cpu")
    assert type(model.policy) is CustomPolicy


def test_a_model_saved_by_sb3s_ppo_loads_safely_by_default_and_as_sb3_loads_it_with_safe_false(tmp_path):
    sb3 = PPO("MlpPolicy", "CartPole-v1", n_steps=32, batch_size=32).learn(32)
    sb3.save(tmp_path / "sb3.zip")
    safely = PPOVariant.load(tmp_path / "sb3.zip", device="cpu")  # its pickles read by the allow-list unpickler
    assert safely.observation_space == sb3.observation_space and safely.clip_range(1.0) == 0.2
    assert parameters_equal(safely.policy, sb3.policy)
    assert isinstance(PPOVariant.load(tmp_path / "sb3.zip", safe=False, device="cpu"), PPOVariant)


# --- malformed files -------------------------------------------------------------------------


def _zip(**entries: bytes) -> io.BytesIO:
    content = io.BytesIO()
    with zipfile.ZipFile(content, "w") as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    content.seek(0)
    return content


@pytest.mark.parametrize(
    "content, reason",
    [
        (io.BytesIO(b"not a zip at all"), "it is not a zip file"),
        (_zip(other=b"{}"), "the zip has no 'data' entry"),
        (_zip(data=b"\xff\xfe not json"), "its 'data' entry is not JSON"),
        (_zip(data=b"[1, 2]"), "its 'data' entry is not a JSON object"),
    ],
)
def test_a_malformed_file_says_why_it_cannot_be_loaded(content, reason):
    with pytest.raises(ModelFileError, match=reason):
        PPOVariant.load(content, safe=True)


def test_a_missing_file_says_so(tmp_path):
    with pytest.raises(ModelFileError, match=r"missing.zip cannot be loaded: No such file"):
        PPOVariant.load(tmp_path / "missing.zip", safe=True)


def test_allow_without_safe_is_refused():
    with pytest.raises(HyperparameterError, match=r"allow=\['x'\] needs safe=True"):
        PPOVariant.load("anything.zip", allow=["x"], safe=False)


def test_a_safe_load_onto_an_environment_checks_its_spaces(saved):
    env = make_vec_env("CartPole-v1", n_envs=2)
    model = PPOVariant.load(saved, env=env, safe=True, device="cpu")
    assert model.n_envs == 2
    with pytest.raises(ValueError, match="Observation spaces do not match"):
        PPOVariant.load(saved, env=make_vec_env("Pendulum-v1"), safe=True, device="cpu")
