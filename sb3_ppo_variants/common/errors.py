"""Errors raised by sb3_ppo_variants."""


class HyperparameterError(ValueError, AssertionError):
    """An invalid hyperparameter, raised at construction.

    It is a ``ValueError`` (what a bad argument is in Python) and also an ``AssertionError``,
    because SB3 reports some of the same mistakes with ``assert`` (a non-positive
    ``clip_range_vf``, a one-step rollout buffer) and code written for SB3 catches that.
    """


class TrainingDivergedError(FloatingPointError):
    """A loss term or the gradient became non-finite; raised before the optimizer step,
    so the policy keeps the last finite weights."""


class RolloutDivergedError(TrainingDivergedError, ValueError):
    """The policy's action parameters became non-finite while collecting a rollout (NaN or inf
    observations, or parameters a callback changed); raised before the step is acted on.

    It is a ``ValueError`` too: that is what SB3 raises there (from torch's argument checks).
    """


class ModelFileError(ValueError):
    """A saved model that this version cannot load, and why (a newer format, a broken loss entry)."""


class NoValueLossWarning(UserWarning):
    """A loss with no component that trains the value function: the critic keeps its initial
    weights while GAE reads it. Silence it with
    ``warnings.filterwarnings("ignore", category=NoValueLossWarning)`` where that is meant."""


class ModelFileWarning(UserWarning):
    """A model file that loaded with something replaced (a training-only schedule safe loading would not run)."""
