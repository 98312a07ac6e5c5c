"""Errors that pandiff raises for bad input; the CLI prints their message without a traceback."""


class PandiffError(Exception):
    """Base class: a problem with the user's input that the message explains and says how to fix."""


class DataError(PandiffError):
    """A dataset, annotation, map or image is missing, corrupt or inconsistent."""


class WeightsError(PandiffError):
    """A weight folder or hub id is absent, unreadable, or does not match the expected model."""


class ConfigError(PandiffError):
    """A configuration value or command-line option is invalid."""
