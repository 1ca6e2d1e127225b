"""The model folders people download, opened safely: the RL Baselines3 Zoo's and the Hugging Face Hub's.

The Zoo saves ``<env>.zip`` (and ``best_model.zip``) with a folder ``<env>/`` beside it holding
``config.yml`` (its hyperparameters, written by PyYAML with Python tags for its ``OrderedDict``),
``args.yml``, ``env_kwargs.yml`` and ``vecnormalize.pkl``. A Hub repository (what
``huggingface_sb3.load_from_hub`` downloads) holds ``<algo>-<env>.zip``, ``config.yml``,
``env_kwargs.yml`` and ``vec_normalize.pkl`` side by side. The Zoo's ``enjoy`` reads them with
PyYAML's unsafe loader, ``eval`` and pickle; :func:`load_zoo_folder` reads them with a YAML loader
that knows only ``OrderedDict``'s tag, the model through the safe ``load`` and the statistics
through :func:`~sb3_ppo_variants.load_vec_normalize`. Nothing here needs ``rl_zoo3``.
"""

from __future__ import annotations

import ast
from collections import OrderedDict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sb3_ppo_variants.common.errors import ModelFileError

STATISTICS = ("vecnormalize.pkl", "vec_normalize.pkl")


def read_zoo_yaml(path: Path) -> Any:
    """A Zoo YAML file: PyYAML's safe loader, plus the ``OrderedDict`` tag the Zoo's files carry (built
    from its pairs, nothing called); any other Python tag is refused with its name."""
    import yaml

    class ZooLoader(yaml.SafeLoader):
        pass

    def ordered_dict(loader: yaml.SafeLoader, node: yaml.Node) -> OrderedDict:
        (pairs,) = loader.construct_sequence(node, deep=True)
        return OrderedDict((key, value) for key, value in pairs)

    ZooLoader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict", ordered_dict)
    try:
        return yaml.load(path.read_text(), Loader=ZooLoader)  # a safe loader with one known tag
    except yaml.YAMLError as error:
        raise ModelFileError(f"{path}: safe loading reads plain YAML and OrderedDict only: {error}") from error


def normalize_settings(value: Any) -> dict[str, Any] | None:
    """The Zoo's ``normalize`` hyperparameter as ``VecNormalize`` keyword arguments: ``True``, a dict,
    or the string ``"dict(norm_obs=True, norm_reward=False)"`` that the Zoo ``eval``s (parsed here as
    literal keyword values only)."""
    if value is True:
        return {}
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, str):
        try:
            call = ast.parse(value, mode="eval").body
            named_dict = isinstance(call, ast.Call) and isinstance(call.func, ast.Name) and call.func.id == "dict"
            if named_dict and not call.args:
                return {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg is not None}
        except (SyntaxError, ValueError):
            pass
        raise ModelFileError(f"normalize={value!r} is not a dict of literal values: safe loading evaluates nothing")
    return None


def load_zoo_folder(
    path: str | Path,
    algorithm: Any = None,
    env_id: str | None = None,
    device: str = "auto",
    allow: Iterable[str] = (),
    **kwargs: Any,
) -> Any:
    """A model from a Zoo run folder, a Hub repository folder, or a single zip, with its environment:
    ``env_kwargs`` applied and, where the folder has statistics, in ``VecNormalize`` with them (not
    updated, rewards not normalised, as the Zoo's ``enjoy``). ``model.get_env()`` is that environment.

    :param algorithm: The class to load with (default ``PPOVariant``; ``MaskablePPOVariant``,
        ``RecurrentPPOVariant``, or SB3's own classes: then SB3's unsafe loader runs).
    :param env_id: Default: the Zoo's ``args.yml``, else the zip's name (``ppo-CartPole-v1.zip``).
    """
    from stable_baselines3.common.env_util import make_vec_env

    from sb3_ppo_variants import PPOVariant, load_vec_normalize

    algorithm = algorithm or PPOVariant
    path = Path(path)
    if path.is_file():
        return algorithm.load(path, device=device, allow=allow, **kwargs)
    if not path.is_dir():
        raise ModelFileError(f"{path} cannot be loaded: no such file or folder")
    zips = sorted(path.glob("*.zip"))
    env_id = env_id or _env_id(path, zips)
    # The Zoo's enjoy loads <env>.zip (best_model.zip with --load-best); the Hub's is <algo>-<env>.zip.
    chosen = [z for z in zips if z.stem == env_id or z.stem.endswith(f"-{env_id}")] or zips
    if len(chosen) != 1:
        names = ", ".join(z.name for z in zips) or "none"
        raise ModelFileError(f"{path}: which model to load is unclear (zips: {names}); pass the zip's path")
    stats = path / env_id if (path / env_id).is_dir() else path
    config = read_zoo_yaml(stats / "config.yml") if (stats / "config.yml").is_file() else {}
    env_kwargs = read_zoo_yaml(stats / "env_kwargs.yml") if (stats / "env_kwargs.yml").is_file() else {}
    venv = make_vec_env(env_id, n_envs=1, env_kwargs=dict(env_kwargs or {}))
    statistics = next((stats / name for name in STATISTICS if (stats / name).is_file()), None)
    if statistics is not None:
        venv = load_vec_normalize(statistics, venv)
        venv.training, venv.norm_reward = False, False
    elif normalize_settings(dict(config or {}).get("normalize")) is not None:
        raise ModelFileError(f"{path}: its config normalises observations, but no statistics file is there")
    return algorithm.load(chosen[0], env=venv, device=device, allow=allow, **kwargs)


def _env_id(folder: Path, zips: list[Path]) -> str:
    for stats in [folder, *[p for p in folder.iterdir() if p.is_dir()]]:
        if (stats / "args.yml").is_file():
            arguments = read_zoo_yaml(stats / "args.yml")
            if isinstance(arguments, dict) and isinstance(arguments.get("env"), str):
                return arguments["env"]
    named = [z.stem.split("-", 1)[1] for z in zips if "-" in z.stem and z.stem.split("-", 1)[0].isalnum()]
    if len(named) == 1:
        return named[0]  # the Hub's <algo>-<env>.zip
    raise ModelFileError(f"{folder}: the environment is not named by args.yml or a zip: pass env_id")
