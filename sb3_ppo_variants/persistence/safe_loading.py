"""Loading a model file with nothing unpickled: ``load(path, safe=True)``.

``save()`` writes, beside SB3's pickles, a plain-data description of each attribute it pickles
(``plain_attributes``; see :mod:`sb3_ppo_variants.persistence.plain_objects`). A safe load reads the
zip's ``data`` as JSON, rebuilds those attributes from their descriptions, and hands them to
SB3's ``load`` as ``custom_objects``, so SB3 unpickles none of them (its tensors already load
with ``torch.load(weights_only=True)``). What a safe load refuses, naming it and how to allow it:

- a pickled attribute with no description that the restricted unpickler of
  :mod:`~sb3_ppo_variants.persistence.sb3_pickles` cannot read (SB3's own files are read by it: their
  spaces, schedules and policy classes), except a training-only schedule pickled by value
  (``lr_schedule``, ``clip_range``, ``clip_range_vf``, ``learning_rate``, ``vf_learning_rate``),
  which is replaced by the constant 0.0 with a :class:`ModelFileWarning` saying how to pass the
  real one;
- a class outside :data:`~sb3_ppo_variants.persistence.plain_objects.TRUSTED_PACKAGES` and ``allow``
  (a custom policy), or a class of the wrong kind for its place;
- a loss component whose module it would have to import (a custom component), unless allowed.

SB3's pickles of the last rollout (``_last_obs``, the episode buffers) are read by the same
unpickler; what it cannot read there (an LSTM's tensors) is left out, and the next ``learn()``
starts from a reset, as it does after ``load(path, env=...)``.
"""

from __future__ import annotations

import base64
import io
import json
import pathlib
import warnings
import zipfile
from collections.abc import Iterable
from typing import Any

from stable_baselines3.common.utils import ConstantSchedule

from sb3_ppo_variants.common.errors import ModelFileError, ModelFileWarning
from sb3_ppo_variants.persistence.plain_objects import NotDescribable, describe, rebuild, trusted
from sb3_ppo_variants.persistence.sb3_pickles import STATISTICS, UnsafePickle, restricted_loads

RUNTIME_STATE = frozenset(
    {"_last_obs", "_last_episode_starts", "_last_original_obs", "_last_lstm_states"}
    | {"ep_info_buffer", "ep_success_buffer"}
)
"""What SB3 pickles of a model's last rollout; a safe load leaves it out."""


def plain_attributes(model: Any, exclude: Iterable[str] | None) -> dict[str, Any]:
    """For ``save()``: each attribute SB3 will pickle, described as plain data where it can be."""
    excluded = set(model._excluded_save_params()) | set(exclude or ()) | RUNTIME_STATE
    state_dicts, torch_variables = model._get_torch_save_params()
    excluded |= {name.split(".")[0] for name in [*state_dicts, *torch_variables]}
    described = {}
    for key, value in model.__dict__.items():
        if key in excluded or _json_value(value):
            continue
        try:
            described[key] = describe(value)
        except NotDescribable:
            continue  # a safe load names it and refuses; a normal load unpickles it as SB3 does
    return described


def _json_value(value: Any) -> bool:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


def read_model_file(path: str | pathlib.Path | io.BufferedIOBase) -> tuple[bytes, str]:
    """The file's bytes (read once: what is checked is what loads) and its name for messages."""
    if isinstance(path, str | pathlib.Path):
        path = pathlib.Path(path)
        if not path.exists() and path.suffix != ".zip" and path.with_name(path.name + ".zip").exists():
            path = path.with_name(path.name + ".zip")  # SB3's load adds the suffix too
        try:
            return path.read_bytes(), str(path)
        except OSError as error:
            raise ModelFileError(f"{path} cannot be loaded: {error.strerror or error}") from error
    return path.read(), "the model file"


def safe_custom_objects(
    content: bytes, shown: str, allow: Iterable[str], custom_objects: dict[str, Any], registered: Iterable[str]
) -> dict[str, Any]:
    """``custom_objects`` for SB3's ``load`` that leave it nothing to unpickle; or a ``ModelFileError``."""
    data = _data_of(content, shown)
    plain = data.get("plain_attributes")
    plain = plain if isinstance(plain, dict) else {}
    objects: dict[str, Any] = {"plain_attributes": None}
    refused = []
    replaced = []
    for key, item in data.items():
        if key in custom_objects or not (isinstance(item, dict) and ":serialized:" in item):
            continue
        if key in plain:
            objects[key] = _of_its_kind(key, rebuild(plain[key], allow, where=f"{shown}: {key}"), shown)
        elif key in RUNTIME_STATE:
            try:  # the last rollout's observations and episodes: plain arrays, read when they can be
                objects[key] = restricted_loads(base64.b64decode(item[":serialized:"]))
            except (UnsafePickle, ValueError, TypeError):
                objects[key] = None  # the next learn() starts from a reset
        else:
            try:
                objects[key] = _of_its_kind(key, restricted_loads(base64.b64decode(item[":serialized:"])), shown)
            except (UnsafePickle, ValueError, TypeError) as error:
                if key in TRAINING_ONLY:
                    objects[key] = TRAINING_ONLY[key]
                    replaced.append(key)
                else:
                    refused.append(f"{key} ({item.get(':type:', 'of unknown type')}: {error})")
    if refused:
        raise ModelFileError(
            f"{shown}: safe loading runs no code a file carries, and cannot rebuild {'; '.join(refused)}. "
            "Ways forward: allow=['module'] for a module you trust that defines one of them; "
            "custom_objects={name: value} to give a value yourself; or safe=False, only if you trust the file. "
            "Loading once with safe=False and saving again with sb3_ppo_variants writes a file that loads safely."
        )
    if replaced:
        what = "is a Python function" if len(replaced) == 1 else "are Python functions"
        wanted = ", ".join(f"{key!r}: ..." for key in replaced)
        warnings.warn(
            f"{shown}: {', '.join(replaced)} {what} pickled by value, which safe loading never runs: replaced by "
            f"the constant 0.0, enough to predict. To train further, pass the real values: "
            f"custom_objects={{{wanted}}}.",
            ModelFileWarning,
            stacklevel=3,
        )
    registered = set(registered)
    for entry in data.get("loss_config") or []:
        module = entry.get("module") if isinstance(entry, dict) else None
        if module and entry.get("name") not in registered and not trusted(str(module), allow):
            raise ModelFileError(
                f"{shown}: its loss component {entry.get('name')!r} would be built by importing module {module!r}, "
                f"which safe loading does not do: import it yourself or pass allow=[{module!r}] if you trust it"
            )
    return {**objects, **custom_objects}


TRAINING_ONLY: dict[str, Any] = {
    "learning_rate": 0.0,
    "lr_schedule": ConstantSchedule(0.0),
    "clip_range": ConstantSchedule(0.0),
    "clip_range_vf": None,
    "vf_learning_rate": 0.0,
}
"""Attributes only training reads, with what replaces them when a file pickled them by value (a
lambda or closure schedule: SB3 before 2.6 wrote its schedules so); rl_zoo3's ``enjoy`` does the same."""


def _data_of(content: bytes, shown: str) -> dict[str, Any]:
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            text = archive.read("data").decode()
        data = json.loads(text)
    except zipfile.BadZipFile as error:
        raise ModelFileError(f"{shown} cannot be loaded: it is not a zip file ({error})") from error
    except KeyError as error:
        raise ModelFileError(f"{shown} cannot be loaded: the zip has no 'data' entry (SB3 did not write it)") from error
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelFileError(f"{shown} cannot be loaded: its 'data' entry is not JSON ({error})") from error
    if not isinstance(data, dict):
        raise ModelFileError(f"{shown} cannot be loaded: its 'data' entry is not a JSON object")
    return data


def _of_its_kind(key: str, value: Any, shown: str) -> Any:
    """A rebuilt class must be what its place expects (a policy for ``policy_class``, ...)."""
    import torch as th
    from stable_baselines3.common.buffers import BaseBuffer
    from stable_baselines3.common.policies import BasePolicy
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    expected = {"policy_class": BasePolicy, "rollout_buffer_class": BaseBuffer}
    nested = {
        "activation_fn": th.nn.Module,
        "optimizer_class": th.optim.Optimizer,
        "features_extractor_class": BaseFeaturesExtractor,
    }
    checks = [(key, value, expected.get(key))]
    if key == "policy_kwargs" and isinstance(value, dict):
        checks += [(f"policy_kwargs[{k!r}]", v, nested.get(k)) for k, v in value.items()]
    for name, item, kind in checks:
        if kind is not None and item is not None and not (isinstance(item, type) and issubclass(item, kind)):
            raise ModelFileError(f"{shown}: {name} is {item!r}, not a subclass of {kind.__name__}")
    return value


def load_vec_normalize(path: str | pathlib.Path, venv: Any) -> Any:
    """``VecNormalize.load(path, venv)`` without unpickling anything but the statistics' allow-list
    (:data:`~sb3_ppo_variants.persistence.sb3_pickles.STATISTICS`): a ``ModelFileError`` names what a
    file carries beyond it."""
    from stable_baselines3.common.vec_env import VecNormalize

    content, shown = read_model_file(path)
    try:
        statistics = restricted_loads(content, extra=STATISTICS)
    except UnsafePickle as error:
        raise ModelFileError(
            f"{shown}: safe loading runs no code a file carries, and this VecNormalize file has more than its "
            f"statistics: {error}. Load it with VecNormalize.load only if you trust the file."
        ) from error
    if not isinstance(statistics, VecNormalize):
        raise ModelFileError(f"{shown} holds a {type(statistics).__name__}, not VecNormalize statistics")
    statistics.set_venv(venv)
    return statistics
