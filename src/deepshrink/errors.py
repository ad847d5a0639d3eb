"""Exception types of deepshrink.

Every error a user can cause names the problem and the fix. Three families:

- ``ConfigError`` (a ``ValueError``): a config field or recipe entry is invalid.
- ``SpecError`` (a ``ValueError``): an unknown model, data or recipe spec.
- ``FormatError``: a compressed file (.dsz) or checkpoint is malformed or hostile.
- ``UnsupportedModelError`` (a ``ValueError``): a method cannot handle this model's structure.
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


class UnsupportedModelError(DeepshrinkError, ValueError):
    """A method cannot handle the structure of this model (the message names the part and a way around it).

    Example:
        >>> raise UnsupportedModelError("channel pruning cannot trace the channel shuffle; use ignored=[...]")
        Traceback (most recent call last):
        ...
        deepshrink.errors.UnsupportedModelError: channel pruning cannot trace the channel shuffle; use ignored=[...]
    """
