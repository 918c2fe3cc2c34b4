"""frad's exception hierarchy: every error a user can cause is a :class:`FradError`.

The command line prints a ``FradError`` as one line (``frad: error: ...``) without a
traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from sklearn.exceptions import NotFittedError as _SkNotFittedError

__all__ = ["FradError", "ConfigError", "DataError", "WeightsError", "NotFittedError"]


class FradError(Exception):
    """A problem with the user's input, files or settings, described in one line."""


class ConfigError(FradError, ValueError):
    """A bad setting: the message names the field and what was expected."""


class DataError(FradError, ValueError):
    """A bad or missing data file: the message names the file."""


class WeightsError(FradError, ValueError):
    """A weight file that is missing, damaged, foreign or unsafe: the message names it."""


class NotFittedError(FradError, _SkNotFittedError):
    """An estimator was used before ``fit`` (or ``load``); also scikit-learn's NotFittedError."""
