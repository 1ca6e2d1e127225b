"""The error a study cannot start with; every module of the package imports it from here."""


class TuningError(Exception):
    """A study cannot start: bad settings, an unknown environment, an unusable storage."""
