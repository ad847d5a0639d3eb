"""Exception types of deepshrink.

Every error a user can cause names the problem and the fix. Three families:

- ``ConfigError`` (a ``ValueError``): a config field or recipe entry is invalid.
- ``SpecError`` (a ``ValueError``): an unknown model, data or recipe spec.
- ``FormatError``: a compressed file (.dsz) or checkpoint is malformed or hostile.
"""

from __future__ import annotations


class DeepshrinkError(Exception):
    """Base class of every error raised on purpose by deepshrink."""


class ConfigError(DeepshrinkError, ValueError):
    """A config field has a value outside what is allowed.

    Example:
        >>> raise ConfigError("sparsity", 1.5, "a float in [0, 1)")
        Traceback (most recent call last):
        ...
        deepshrink.errors.ConfigError: sparsity=1.5 is invalid: expected a float in [0, 1)
    """

    def __init__(self, field: str, value: object, allowed: str, owner: str | None = None) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        where = f"{owner}.{field}" if owner else field
        super().__init__(f"{where}={value!r} is invalid: expected {allowed}")


class SpecError(DeepshrinkError, ValueError):
    """An unknown or malformed model, data or recipe spec (or a missing file it names)."""


class FormatError(DeepshrinkError):
    """A file that deepshrink reads (a .dsz, a checkpoint) is malformed, truncated or hostile."""
