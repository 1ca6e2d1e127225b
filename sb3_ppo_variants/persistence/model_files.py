"""What a model file holds beyond SB3's: the loss as plain data, its tensor state, and the safe load.

:class:`LossFilesMixin` is mixed into every algorithm (through
:class:`~sb3_ppo_variants.algorithms.base.LossComponentsMixin`): it saves ``loss_config`` (the
components as plain data, in the format :data:`LOSS_FORMAT_VERSION`) and ``loss_state`` (their
tensors, with the parameters), and loads files safely by default
(:mod:`~sb3_ppo_variants.persistence.safe_loading`).
"""

from __future__ import annotations

import io
import pathlib
from collections.abc import Iterable
from typing import Any

import torch as th
from stable_baselines3.common.save_util import load_from_zip_file

from sb3_ppo_variants.common.errors import HyperparameterError, ModelFileError
from sb3_ppo_variants.components.protocol import LossComponent, LossSpec, build_loss, registered_components
from sb3_ppo_variants.persistence.safe_loading import plain_attributes, read_model_file, safe_custom_objects


class LossFilesMixin:
    """Saving and loading an algorithm whose loss is a list of components (``self.loss``)."""

    loss: list[LossComponent]

    def loss_config(self) -> list[dict[str, Any]]:
        """The loss as plain data; linked fields are left out (they live on the algorithm)."""
        return [
            {key: value for key, value in component.config().items() if key not in component.linked}
            for component in self.loss
        ]

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_loss", "_old_policy", "_compiled", "_announced_env_stack"]  # type: ignore[misc]

    def save(
        self,
        path: str | pathlib.Path | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """Save as SB3 does; the loss goes in as plain data, its tensor state with the parameters,
        and what SB3 pickles is also described as plain data, for ``load(path, safe=True)``."""
        self.__dict__["loss_config"] = self.loss_config()
        self.__dict__["loss_format_version"] = LOSS_FORMAT_VERSION
        self.__dict__["plain_attributes"] = plain_attributes(self, exclude)
        try:
            super().save(path, exclude=exclude, include=include)  # type: ignore[misc]
        finally:
            for key in ("loss_config", "loss_format_version", "plain_attributes"):
                del self.__dict__[key]

    def get_parameters(self) -> dict[str, dict]:
        """SB3's parameters, and ``"loss_state"``: the components' tensor state, if any."""
        parameters = super().get_parameters()  # type: ignore[misc]
        state = {
            f"{index}.{key}": tensor
            for index, component in enumerate(self.loss)
            for key, tensor in component.state_dict().items()
        }
        if state:
            parameters["loss_state"] = state
        return parameters

    def set_parameters(
        self, load_path_or_dict: str | pathlib.Path | dict[str, Any], exact_match: bool = True, device: Any = "auto"
    ) -> None:
        """SB3's ``set_parameters``; ``"loss_state"`` goes back into the components."""
        if isinstance(load_path_or_dict, dict):
            parameters = dict(load_path_or_dict)
        else:
            _, parameters, _ = load_from_zip_file(load_path_or_dict, device=device, load_data=False)
        state = parameters.pop("loss_state", None)
        super().set_parameters(parameters, exact_match=exact_match, device=device)  # type: ignore[misc]
        for index, component in enumerate(self.loss):
            prefix = f"{index}."
            own = {key[len(prefix) :]: t for key, t in (state or {}).items() if key.startswith(prefix)}
            if own:
                component.load_state_dict(own)

    @classmethod
    def load(  # type: ignore[override]
        cls,
        path: str | pathlib.Path | io.BufferedIOBase,
        env: Any = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        loss: Iterable[LossSpec] | None = None,
        safe: bool = True,
        allow: Iterable[str] = (),
        **kwargs: Any,
    ) -> Any:
        """SB3's ``load``; with ``loss``, the model goes on with that loss instead of the saved one.

        This also loads SB3's own ``PPO`` (``MaskablePPO``, ``RecurrentPPO``) zips. The new loss is
        validated as the constructor validates it (before anything is loaded), and the SB3
        attributes it mirrors follow it. ``custom_objects={"loss": ...}`` means the same.

        :param safe: Run no code the file carries (the default): this package's files load from
            their plain-data descriptions, SB3's own pickles through an allow-list unpickler (spaces,
            schedules, policy classes; see :mod:`sb3_ppo_variants.persistence.safe_loading`), and
            nothing outside the trusted packages and ``allow`` is imported. A file that needs code
            to load is refused with a ``ModelFileError`` naming it and the ways forward. ``False``
            loads as SB3 does, unpickling everything: only for files you trust.
        :param allow: With ``safe=True``, modules (or packages) whose classes and components the
            file may import: a custom policy's module, a custom component's.
        """
        allow = tuple(allow)
        if allow and not safe:
            raise HyperparameterError(f"allow={list(allow)!r} needs safe=True: accepted values are allow=() otherwise.")
        custom_objects = dict(custom_objects or {})
        if "loss" in custom_objects:
            if loss is not None:
                raise HyperparameterError(
                    "loss= and custom_objects={'loss': ...} are both given: accepted values are one of them."
                )
            loss = custom_objects.pop("loss")
        components = None if loss is None else build_loss(loss)
        if safe:
            content, shown = read_model_file(path)
            custom_objects = safe_custom_objects(content, shown, allow, custom_objects, registered_components())
            path = io.BytesIO(content)  # what was checked is what loads
        model = super().load(  # type: ignore[misc]
            path,
            env=env,
            device=device,
            custom_objects=custom_objects,
            print_system_info=print_system_info,
            force_reset=force_reset,
            **kwargs,
        )
        if components is not None:
            model.loss = components
        return model


LOSS_FORMAT_VERSION = 1
"""The version of what this package adds to a saved model: ``loss_config`` (the components as
plain data) and ``loss_state`` (their tensors, with the parameters). Files from before versions
were written carry none and are version 1's format. A change of either layout raises it, and
:func:`migrated_loss_config` learns to read the older one."""


def migrated_loss_config(config: Any, version: Any) -> Any:
    """A saved ``loss_config`` in this version's format, or a clear error for a newer file."""
    version = 1 if version is None else version
    if not isinstance(version, int) or version < 1:
        raise ModelFileError(
            f"the saved model's loss_format_version={version!r} is invalid: accepted values are integers from 1 "
            f"to {LOSS_FORMAT_VERSION}."
        )
    if version > LOSS_FORMAT_VERSION:
        raise ModelFileError(
            f"the saved model was written with loss format version {version}, newer than this version of "
            f"sb3_ppo_variants reads (up to {LOSS_FORMAT_VERSION}): upgrade sb3_ppo_variants to load it."
        )
    return config  # version 1 is the only format so far
