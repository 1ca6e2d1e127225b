"""The objects a saved model holds, written as plain data, so a model loads without unpickling.

SB3's ``save`` cloudpickles every attribute JSON cannot hold (the spaces, the schedules, the
policy class, ``policy_kwargs`` with a class in it), and its ``load`` unpickles them, which can
run any code the file carries (SB3 issues #1831 and #2281). :func:`describe` writes, beside
those pickles, what can be rebuilt from data alone:

- gymnasium's standard spaces (``Box``, ``Discrete``, ``MultiDiscrete``, ``MultiBinary``,
  ``Dict``, ``Tuple``);
- SB3's schedules (``ConstantSchedule``, ``FloatSchedule``, ``LinearSchedule``) and the
  variants' ``Scaled``, by their fields;
- classes, by module and name (``torch.nn.ReLU``, a policy class, a rollout buffer class);
- lists, tuples and string-keyed dicts of those and of JSON's values.

:func:`rebuild` turns that data back into the objects. It unpickles nothing and imports only the
modules of :data:`TRUSTED_PACKAGES` and those the caller allows, and a rebuilt class must be of
the kind its place expects (``activation_fn`` a ``torch.nn.Module``, ``policy_class`` a policy).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from sb3_ppo_variants.common.errors import ModelFileError

TRUSTED_PACKAGES = ("torch", "gymnasium", "stable_baselines3", "sb3_contrib", "sb3_ppo_variants")
"""Packages whose modules a safe load may import to find a class a file names."""


class NotDescribable(TypeError):
    """A value with no plain-data form (a lambda schedule, a custom space, an arbitrary object)."""


def _schedule_classes() -> tuple[type, ...]:
    from stable_baselines3.common.utils import ConstantSchedule, FloatSchedule, LinearSchedule

    from sb3_ppo_variants.common.validation import Scaled

    return ConstantSchedule, FloatSchedule, LinearSchedule, Scaled


def describe(value: Any) -> Any:
    """``value`` as JSON-able data that :func:`rebuild` turns back into it; ``NotDescribable`` if none."""
    import gymnasium as gym

    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [describe(item) for item in value]
    if isinstance(value, tuple):
        return {":tuple:": [describe(item) for item in value]}
    if isinstance(value, dict):
        if not all(isinstance(key, str) and not key.startswith(":") for key in value):
            raise NotDescribable(f"a dict with keys {list(value)!r}")
        return {key: describe(item) for key, item in value.items()}
    if isinstance(value, type):
        return {":class:": f"{value.__module__}:{value.__qualname__}"}
    if isinstance(value, gym.spaces.Space):
        return {":space:": _describe_space(value)}
    if isinstance(value, _schedule_classes()):
        fields = {name: describe(field) for name, field in vars(value).items()}
        return {":object:": f"{type(value).__module__}:{type(value).__qualname__}", "fields": fields}
    raise NotDescribable(f"{type(value).__module__}.{type(value).__qualname__}")


def _describe_space(space: Any) -> dict[str, Any]:
    import gymnasium as gym

    kind = type(space)
    if kind is gym.spaces.Box:
        return {"type": "Box", "low": space.low.tolist(), "high": space.high.tolist(), "dtype": str(space.dtype)}
    if kind is gym.spaces.Discrete:
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start)}
    if kind is gym.spaces.MultiDiscrete:
        return {
            "type": "MultiDiscrete",
            "nvec": space.nvec.tolist(),
            "start": space.start.tolist(),
            "dtype": str(space.dtype),
        }
    if kind is gym.spaces.MultiBinary:
        return {"type": "MultiBinary", "n": np.asarray(space.n).tolist()}
    if kind is gym.spaces.Dict:
        return {"type": "Dict", "spaces": {key: _describe_space(s) for key, s in space.spaces.items()}}
    if kind is gym.spaces.Tuple:
        return {"type": "Tuple", "spaces": [_describe_space(s) for s in space.spaces]}
    raise NotDescribable(f"space {kind.__module__}.{kind.__qualname__}")


def rebuild(data: Any, allow: Iterable[str] = (), where: str = "") -> Any:
    """The object :func:`describe` wrote as ``data``, with nothing unpickled.

    :param allow: Modules (or packages) beyond :data:`TRUSTED_PACKAGES` whose classes may be imported.
    :param where: What is being rebuilt, for the error message (an attribute's name).
    """
    allow = tuple(allow)
    if isinstance(data, list):
        return [rebuild(item, allow, where) for item in data]
    if not isinstance(data, dict):
        return data
    if ":tuple:" in data:
        return tuple(rebuild(item, allow, where) for item in data[":tuple:"])
    if ":class:" in data:
        return import_class(data[":class:"], allow, where)
    if ":space:" in data:
        return _rebuild_space(data[":space:"], where)
    if ":object:" in data:
        cls = import_class(data[":object:"], allow, where)
        if cls not in _schedule_classes():
            raise ModelFileError(f"{where}: {data[':object:']} is not a schedule a file may describe")
        return cls(**{name: rebuild(field, allow, where) for name, field in data["fields"].items()})
    return {key: rebuild(item, allow, where) for key, item in data.items()}


def import_class(name: str, allow: Iterable[str] = (), where: str = "") -> type:
    """The class ``module:qualname``, importing its module only if it is trusted or allowed."""
    module, _, qualname = str(name).partition(":")
    if not trusted(module, allow):
        raise ModelFileError(
            f"{where}: loading it would import module {module!r} (for {qualname}), which safe loading does not "
            f"do: pass allow=[{module!r}] if you trust that module, or safe=False if you trust the whole file"
        )
    try:
        value = find_name(module, qualname)
    except (ImportError, AttributeError) as error:
        raise ModelFileError(f"{where}: the file names {module}.{qualname}, which cannot be found: {error}") from error
    if not isinstance(value, type):
        raise ModelFileError(f"{where}: {module}.{qualname} is not a class")
    return value


def find_name(module: str, qualname: str) -> Any:
    """``module.qualname`` (``Outer.Inner`` included), importing ``module``: the caller decides first
    whether it may be imported. Raises ``ImportError`` or ``AttributeError``."""
    value: Any = importlib.import_module(module)
    for part in qualname.split("."):
        value = getattr(value, part)
    return value


def trusted(module: str, allow: Iterable[str] = ()) -> bool:
    """Whether ``module`` is in a trusted package or one of ``allow`` (a module or a package)."""
    return any(module == name or module.startswith(f"{name}.") for name in (*TRUSTED_PACKAGES, *allow))


def _rebuild_space(data: dict[str, Any], where: str) -> Any:
    import gymnasium as gym

    kind = data.get("type")
    if kind == "Box":
        dtype = np.dtype(data["dtype"])
        return gym.spaces.Box(
            low=np.array(data["low"], dtype=dtype), high=np.array(data["high"], dtype=dtype), dtype=dtype
        )
    if kind == "Discrete":
        return gym.spaces.Discrete(int(data["n"]), start=int(data["start"]))
    if kind == "MultiDiscrete":
        return gym.spaces.MultiDiscrete(
            np.array(data["nvec"]), dtype=np.dtype(data["dtype"]), start=np.array(data["start"])
        )
    if kind == "MultiBinary":
        return gym.spaces.MultiBinary(data["n"])
    if kind == "Dict":
        return gym.spaces.Dict({key: _rebuild_space(s, where) for key, s in data["spaces"].items()})
    if kind == "Tuple":
        return gym.spaces.Tuple([_rebuild_space(s, where) for s in data["spaces"]])
    raise ModelFileError(f"{where}: space type {kind!r} is unknown: accepted are Box, Discrete, MultiDiscrete, "
                         "MultiBinary, Dict and Tuple")  # fmt: skip
