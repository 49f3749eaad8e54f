"""Errors users see. Every message names the file (and line or key) that is wrong."""


class FhvaeError(Exception):
    """Base class: CLIs print the message (no traceback) and exit 1."""


class DataError(FhvaeError):
    """Bad input data: data dirs, audio, features, trials. Message names file:line or key."""


class ConfigError(FhvaeError):
    """Bad config value, unknown key, or an exp dir trained with another config."""


class TrainingError(FhvaeError):
    """Training cannot go on (e.g. NaN/inf loss); message names the step and terms."""
