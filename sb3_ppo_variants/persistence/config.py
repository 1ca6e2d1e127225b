"""Hyperparameters as plain data: what a YAML file holds and ``from_config`` loads.

A configuration file is the RL Baselines3 Zoo's idea with plain values instead of Python
strings to ``eval``::

    policy: MlpPolicy
    hyperparameters:
      n_steps: 256
      batch_size: 512
      policy_kwargs: {net_arch: {pi: [64, 64], vf: [64, 64]}, activation_fn: torch.nn.Tanh}
      loss:
        - {name: clipped_surrogate, clip_range: 0.2}
        - {name: value, coef: 0.5}

Other top-level keys (the budget, a seed, where the file came from) are kept for the reader and
for ``python -m tuning retrain``. A ``task`` key (``python -m tuning report`` writes it) says how
the environment was built when the file was tuned: ``env_id``, ``n_envs``, ``normalize``
(``VecNormalize``), ``env_kwargs`` and ``gym_packages``; ``from_config`` builds the same (see
:func:`config_env`). Loss entries are component configs (:meth:`LossComponent.config`), which the
algorithms accept as they are.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from sb3_ppo_variants.common.errors import HyperparameterError
from sb3_ppo_variants.persistence.plain_objects import trusted

_CLASS_KEYS = ("activation_fn", "features_extractor_class", "optimizer_class")


def to_plain(hyperparameters: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments -> YAML-safe data: components become configs, classes dotted names.

    Raises ``TypeError`` naming the argument for values with no plain form (a Python schedule).
    """
    plain: dict[str, Any] = {}
    for key, value in hyperparameters.items():
        if key == "loss" and value is not None:
            value = [c.config() if hasattr(c, "config") else c for c in value]  # components -> plain data
        elif key == "policy_kwargs" and value:
            value = {k: _class_name(v) if k in _CLASS_KEYS else v for k, v in value.items()}
        _check_plain(key, value)
        plain[key] = value
    return plain


def from_plain(hyperparameters: Mapping[str, Any], allow: Iterable[str] | None = None) -> dict[str, Any]:
    """The inverse of :func:`to_plain`: dotted class names in ``policy_kwargs`` are imported.

    ``allow``: where the data comes from a file, import only from the trusted packages (torch,
    gymnasium, SB3, sb3-contrib, this package) and these modules; ``None``: anything (data this
    process wrote)."""
    arguments = dict(hyperparameters)
    if arguments.get("policy_kwargs"):
        arguments["policy_kwargs"] = {
            k: _import_class(k, v, allow) if k in _CLASS_KEYS and isinstance(v, str) else v
            for k, v in arguments["policy_kwargs"].items()
        }
    if allow is not None:
        for entry in arguments.get("loss") or []:
            module = entry.get("module") if isinstance(entry, Mapping) else None
            if module and not trusted(str(module), allow):
                raise HyperparameterError(
                    f"loss component {entry.get('name')!r} would be built by importing module {module!r}, which "
                    f"a configuration file may not import: pass allow=[{module!r}] if you trust it."
                )
    return arguments


def load_config(path: str | Path, allow: Iterable[str] = ()) -> tuple[str, dict[str, Any]]:
    """``(policy, keyword arguments)`` from a configuration file (see the module docstring). It imports
    classes from the trusted packages only, and from the modules ``allow`` names."""
    import yaml

    try:
        document = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as error:
        raise HyperparameterError(f"configuration file {path}: {error}") from error
    if not isinstance(document, Mapping) or not isinstance(document.get("hyperparameters"), Mapping):
        raise HyperparameterError(
            f"configuration file {path} is invalid: accepted files have a 'hyperparameters' mapping "
            "(and optionally 'policy')."
        )
    try:
        return str(document.get("policy", "MlpPolicy")), from_plain(document["hyperparameters"], allow)
    except HyperparameterError as error:
        raise HyperparameterError(f"configuration file {path}: {error}") from None


def load_task(path: str | Path) -> dict[str, Any] | None:
    """The file's ``task`` mapping (how its environment was built), ``None`` if it has none."""
    import yaml

    task = yaml.safe_load(Path(path).read_text()).get("task")
    return dict(task) if isinstance(task, Mapping) else None


def config_env(
    task: Mapping[str, Any] | None, env: Any, seed: int | None = None, gamma: float = 0.99, allow: Iterable[str] = ()
) -> Any:
    """The environment a configuration file was tuned on, for ``from_config``.

    Without a ``task``, ``env`` as given. With one: ``env=None`` builds the task's environment, an
    environment id builds that one the same way (``task.n_envs`` copies with ``env_kwargs``, in
    ``VecNormalize`` when ``task.normalize``: fresh statistics, as every trial started); an
    environment object is used when it has ``n_envs`` environments and is normalised exactly when
    the task was, and refused with the difference otherwise (it would train something else).
    """
    if task is None:
        if env is None:
            raise HyperparameterError(
                "env=None is invalid for a file without 'task': accepted values are an environment"
            )
        return env
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecNormalize, unwrap_vec_normalize

    n_envs, normalize = int(task.get("n_envs", 1)), bool(task.get("normalize", False))
    if env is None or isinstance(env, str):
        for package in task.get("gym_packages") or ():
            if not trusted(str(package), allow):
                raise HyperparameterError(
                    f"the file's task imports {package!r} to register its environments, which a configuration "
                    f"file may not import: pass allow=[{package!r}] if you trust it, or pass env yourself."
                )
            importlib.import_module(package)  # registers the package's environments
        env_id = env or task["env_id"]
        built = make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=dict(task.get("env_kwargs") or {}))
        return VecNormalize(built, gamma=gamma) if normalize else built
    found = getattr(env, "num_envs", 1)
    normalized = unwrap_vec_normalize(env) is not None if hasattr(env, "num_envs") else False
    if found != n_envs or normalized != normalize:
        said = f"{found} environment(s){', normalised' if normalized else ''}"
        tuned = f"n_envs={n_envs}{' in VecNormalize' if normalize else ''}"
        raise HyperparameterError(
            f"env has {said}, but the file was tuned with {tuned}: that would train something else. Accepted "
            f"values are env=None or an environment id (from_config builds {tuned}), or an environment built so."
        )
    return env


def save_config(path: str | Path, policy: str, hyperparameters: Mapping[str, Any], **extra: Any) -> Path:
    """Write a configuration file; ``extra`` top-level keys (env_id, n_timesteps, ...) come first."""
    import yaml

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    document = {**extra, "policy": policy, "hyperparameters": to_plain(hyperparameters)}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _class_name(value: Any) -> Any:
    if not isinstance(value, type):
        return value
    import torch as th

    if value.__module__.startswith("torch.nn.") and getattr(th.nn, value.__qualname__, None) is value:
        return f"torch.nn.{value.__qualname__}"  # the name users write
    return f"{value.__module__}.{value.__qualname__}"


def _import_class(key: str, name: str, allow: Iterable[str] | None = None) -> type:
    module, _, attribute = name.rpartition(".")
    if allow is not None and not trusted(module, allow):
        raise HyperparameterError(
            f"policy_kwargs {key}={name!r} would import module {module!r}, which a configuration file may not "
            f"import: pass allow=[{module!r}] if you trust it."
        )
    try:
        return getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError, ValueError) as error:
        raise HyperparameterError(
            f"policy_kwargs {key}={name!r} is invalid: accepted values are importable dotted class names "
            "such as torch.nn.ReLU."
        ) from error


def _check_plain(key: str, value: Any) -> None:
    if value is None or isinstance(value, bool | int | float | str):
        return
    if isinstance(value, list | tuple):
        for item in value:
            _check_plain(key, item)
        return
    if isinstance(value, Mapping):
        for item in value.values():
            _check_plain(key, item)
        return
    raise TypeError(f"hyperparameter {key} holds {value!r}, which has no plain (YAML) form")
