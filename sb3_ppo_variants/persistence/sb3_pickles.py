"""Reading SB3's pickled attributes without running what they carry, as ``torch.load(weights_only=True)``.

SB3's ``save`` cloudpickles the attributes JSON cannot hold (spaces, schedules, the policy class)
into the zip's ``data``. :func:`restricted_loads` reads such a pickle with an unpickler that finds
only an allow-list of names, and calls only those it may build:

- **built** (called or instantiated while unpickling): gymnasium's standard spaces (gym's too, as
  the same gymnasium classes: SB3 1.x files), NumPy's array, dtype and scalar reconstructors under
  ``numpy.core`` (NumPy 1) and ``numpy._core`` (NumPy 2), NumPy's random generator pickles
  (``numpy.random._pickle``, its bit generators, ``RandomState``), ``collections.OrderedDict`` and
  ``deque``, SB3's schedule classes, and the variants' ``Scaled``;
- **named only** (a value that is a class, never called): policy classes and feature extractors of
  SB3, sb3-contrib and this package, rollout buffer classes, torch's activation modules and
  optimizers.

Anything else (a function pickled by value, ``os.system``, ``builtins.eval``, a class defined in
``__main__`` or a notebook) is refused with :class:`UnsafePickle`, naming it; nothing named is
imported outside the trusted packages. Whether a value is of the kind its place expects (a policy
class for ``policy_class``) is checked by the caller.
"""

from __future__ import annotations

import io
import pickle
from typing import Any, ClassVar

from sb3_ppo_variants.persistence.plain_objects import TRUSTED_PACKAGES, find_name

GYM_SPACES = {
    f"gym.spaces.{module}": f"gymnasium.spaces.{module}"
    for module in ("box", "discrete", "multi_discrete", "multi_binary", "dict", "tuple", "space")
}
"""SB3 1.x files name gym's spaces: they are rebuilt as gymnasium's (as rl_zoo3's ``enjoy`` maps them)."""

_NUMPY_BUILT = {
    "multiarray": {"_reconstruct", "scalar"},
    "numeric": {"_frombuffer"},
}
BUILT: dict[str, set[str]] = {
    "collections": {"OrderedDict", "deque"},
    "numpy": {"ndarray", "dtype"},
    **{f"numpy.core.{module}": names for module, names in _NUMPY_BUILT.items()},
    **{f"numpy._core.{module}": names for module, names in _NUMPY_BUILT.items()},
    "numpy.random._pickle": {"__generator_ctor", "__bit_generator_ctor", "__randomstate_ctor"},
    "numpy.random._pcg64": {"PCG64", "PCG64DXSM"},
    "numpy.random._mt19937": {"MT19937"},
    "numpy.random._philox": {"Philox"},
    "numpy.random._sfc64": {"SFC64"},
    "numpy.random._generator": {"Generator"},
    "numpy.random.mtrand": {"RandomState"},
    "numpy.random.bit_generator": {"SeedSequence", "__pyx_unpickle_SeedSequence"},
    "gymnasium.spaces.box": {"Box"},
    "gymnasium.spaces.discrete": {"Discrete"},
    "gymnasium.spaces.multi_discrete": {"MultiDiscrete"},
    "gymnasium.spaces.multi_binary": {"MultiBinary"},
    "gymnasium.spaces.dict": {"Dict"},
    "gymnasium.spaces.tuple": {"Tuple"},
    "stable_baselines3.common.utils": {"ConstantSchedule", "FloatSchedule", "LinearSchedule"},
    "sb3_ppo_variants.common.validation": {"Scaled"},
}
"""``module -> names`` the unpickler may call or instantiate."""


class UnsafePickle(pickle.UnpicklingError):
    """A pickle that names or calls something safe loading does not rebuild."""


def _named_only_kinds() -> tuple[type, ...]:
    import torch as th
    from stable_baselines3.common.buffers import BaseBuffer
    from stable_baselines3.common.policies import BasePolicy
    from stable_baselines3.common.torch_layers import BaseFeaturesExtractor

    return BasePolicy, BaseFeaturesExtractor, BaseBuffer, th.nn.Module, th.optim.Optimizer


def _numpy_filled() -> tuple[type, ...]:
    """NumPy's objects that its allowed reconstructors create and the pickle then fills in."""
    import numpy as np

    random = np.random
    return np.dtype, np.ndarray, random.RandomState, random.Generator, random.BitGenerator, random.SeedSequence


class _Unpickler(pickle._Unpickler):  # the Python unpickler: its opcodes can be checked one by one
    dispatch: ClassVar[dict[int, Any]] = dict(pickle._Unpickler.dispatch)

    def __init__(self, data: bytes) -> None:
        super().__init__(io.BytesIO(data))
        self.built: set[int] = set()  # ids of the callables this pickle may call
        self.built_types: list[type] = []  # and the classes among them, whose instances it may fill in
        self.extra: dict[str, set[str]] = {}

    def find_class(self, module: str, name: str) -> Any:
        module = GYM_SPACES.get(module, module)
        shown = f"{module}.{name}"
        if module == "__main__" or module.startswith("cloudpickle") or module == "builtins":
            origin = (
                "a class or function defined in __main__ or a notebook is pickled by value and can never load safely"
                if module in ("__main__",) or module.startswith("cloudpickle")
                else "it can call arbitrary code"
            )
            raise UnsafePickle(f"the pickle names {shown}: {origin}")
        root = module.split(".")[0]
        if root not in (*TRUSTED_PACKAGES, "numpy", "collections"):
            raise UnsafePickle(f"the pickle names {shown}, outside the packages safe loading trusts")
        allowed = BUILT.get(module, set()) | self.extra.get(module, set())
        if root in ("numpy", "collections") and name not in allowed:
            raise UnsafePickle(f"the pickle names {shown}, which safe loading does not rebuild")
        try:
            value = find_name(module, name)
        except (ImportError, AttributeError) as error:
            raise UnsafePickle(f"the pickle names {shown}, which cannot be found here ({error})") from error
        if name in allowed:
            self.built.add(id(value))
            if isinstance(value, type):
                self.built_types.append(value)
            return value
        if isinstance(value, type) and issubclass(value, _named_only_kinds()):
            return value  # a value of the file (a policy class), never called
        raise UnsafePickle(f"the pickle names {shown}, which safe loading does not rebuild")

    def _callable(self, function: Any) -> None:
        if id(function) not in self.built:
            shown = getattr(function, "__qualname__", function)
            raise UnsafePickle(f"the pickle calls {shown!r}, which it may only name")

    def load_reduce(self) -> None:
        self._callable(self.stack[-2])
        super().load_reduce()

    def load_newobj(self) -> None:
        self._callable(self.stack[-2])
        super().load_newobj()

    def load_newobj_ex(self) -> None:
        self._callable(self.stack[-3])
        super().load_newobj_ex()

    def load_build(self) -> None:
        instance = self.stack[-2]  # its state is set through its own class's __setstate__
        if not isinstance(instance, (*self.built_types, *_numpy_filled())):
            raise UnsafePickle(f"the pickle fills in a {type(instance).__qualname__}, which it did not build")
        super().load_build()

    def load_inst(self) -> None:
        raise UnsafePickle("the pickle uses the INST opcode, which safe loading does not run")

    def load_obj(self) -> None:
        raise UnsafePickle("the pickle uses the OBJ opcode, which safe loading does not run")

    def persistent_load(self, pid: Any) -> Any:
        raise UnsafePickle("the pickle refers to a persistent object, which safe loading does not load")

    dispatch[pickle.REDUCE[0]] = load_reduce
    dispatch[pickle.NEWOBJ[0]] = load_newobj
    dispatch[pickle.NEWOBJ_EX[0]] = load_newobj_ex
    dispatch[pickle.BUILD[0]] = load_build
    dispatch[pickle.INST[0]] = load_inst
    dispatch[pickle.OBJ[0]] = load_obj


STATISTICS: dict[str, set[str]] = {
    "stable_baselines3.common.vec_env.vec_normalize": {"VecNormalize"},
    "stable_baselines3.common.running_mean_std": {"RunningMeanStd"},
}
"""What a ``VecNormalize`` statistics file (``vecnormalize.pkl``) adds to the allow-list."""


def restricted_loads(data: bytes, extra: dict[str, set[str]] | None = None) -> Any:
    """Unpickle ``data`` with only the allow-list above (and ``extra``, such as :data:`STATISTICS`);
    :class:`UnsafePickle` naming what it refused."""
    unpickler = _Unpickler(data)
    for module, names in (extra or {}).items():
        unpickler.extra[module] = names
    try:
        return unpickler.load()
    except UnsafePickle:
        raise
    except Exception as error:  # a truncated or malformed pickle, or a refused value's own error
        raise UnsafePickle(f"the pickle cannot be read safely: {type(error).__name__}: {error}") from error
