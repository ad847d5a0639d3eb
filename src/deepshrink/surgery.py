"""Structural changes as data: the surgery log.

Methods that change a model's architecture (channel pruning, factorized
layers, early exits, quantized modules) record each change as a JSON-safe
entry ``{"op": NAME, ...}``. A compressed file stores the base architecture
(an allow-listed factory spec) plus this log and rebuilds the model by
replaying it, never by unpickling a module.

A method registers how to replay its op:

    @register_surgery("svd_linear")
    def _replay(model: nn.Module, entry: dict) -> None: ...

Example:
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Linear(2, 2))
    >>> record_surgery(m, {"op": "noop_example"})
    >>> surgery_log(m)
    [{'op': 'noop_example'}]
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from torch import nn

from .errors import FormatError

_LOG_ATTR = "_deepshrink_surgery"
_SPEC_ATTR = "_deepshrink_spec"

SurgeryReplay = Callable[[nn.Module, dict[str, Any]], None]
_REPLAYS: dict[str, SurgeryReplay] = {}


def register_surgery(op: str) -> Callable[[SurgeryReplay], SurgeryReplay]:
    """Register the function that replays surgery entries of kind ``op``.

    Example:
        >>> @register_surgery("doc_identity")
        ... def _replay(model, entry):
        ...     pass
    """

    def decorate(fn: SurgeryReplay) -> SurgeryReplay:
        _REPLAYS[op] = fn
        return fn

    return decorate


def record_surgery(model: nn.Module, entry: dict[str, Any]) -> None:
    """Append one structural change to the model's surgery log.

    The entry must be JSON-serialisable and carry an ``op`` key.

    Example:
        >>> m = nn.Linear(2, 2)
        >>> record_surgery(m, {"op": "x", "module": ""})
        >>> len(surgery_log(m))
        1
    """
    if "op" not in entry:
        raise ValueError("a surgery entry needs an 'op' key naming the change")
    json.dumps(entry)  # fail now, not at save time, if it is not JSON-safe
    log = getattr(model, _LOG_ATTR, None)
    if log is None:
        log = []
        object.__setattr__(model, _LOG_ATTR, log)
    log.append(copy.deepcopy(entry))


def surgery_log(model: nn.Module) -> list[dict[str, Any]]:
    """A copy of the model's surgery log (empty for an unchanged model).

    Example:
        >>> surgery_log(nn.Linear(2, 2))
        []
    """
    return copy.deepcopy(getattr(model, _LOG_ATTR, []))


def replay_surgery(model: nn.Module, log: list[dict[str, Any]]) -> nn.Module:
    """Apply a surgery log to a freshly built base model (used by ``deepshrink.load``).

    Unknown ops raise :class:`FormatError`: a file cannot ask for code we do not have.

    Example:
        >>> replay_surgery(nn.Linear(2, 2), []).in_features
        2
    """
    if not isinstance(log, list):
        raise FormatError("surgery log must be a list of entries")
    for i, entry in enumerate(log):
        if not isinstance(entry, dict) or not isinstance(entry.get("op"), str):
            raise FormatError(f"surgery entry {i} must be an object with a string 'op'")
        replay = _REPLAYS.get(entry["op"])
        if replay is None:
            known = ", ".join(sorted(_REPLAYS)) or "none"
            raise FormatError(f"surgery entry {i} has unknown op {entry['op']!r} (known: {known})")
        try:
            replay(model, entry)
        except FormatError:
            raise
        except (KeyError, ValueError, TypeError, IndexError, AttributeError, RuntimeError) as exc:
            raise FormatError(f"surgery entry {i} ({entry['op']}) cannot be applied: {exc}") from None
        record_surgery(model, entry)
    return model


def set_model_spec(model: nn.Module, spec: str, kwargs: dict[str, Any] | None = None) -> None:
    """Remember the factory spec that built ``model`` (so a .dsz can rebuild it).

    Example:
        >>> m = nn.Linear(2, 2)
        >>> set_model_spec(m, "lenet300", {})
        >>> model_spec(m)
        {'spec': 'lenet300', 'kwargs': {}}
    """
    payload = {"spec": spec, "kwargs": dict(kwargs or {})}
    json.dumps(payload)
    object.__setattr__(model, _SPEC_ATTR, payload)


def model_spec(model: nn.Module) -> dict[str, Any] | None:
    """The factory spec recorded by :func:`set_model_spec`, or None for a user's own model.

    Example:
        >>> model_spec(nn.Linear(2, 2)) is None
        True
    """
    spec = getattr(model, _SPEC_ATTR, None)
    return copy.deepcopy(spec)


def set_module(model: nn.Module, name: str, module: nn.Module) -> None:
    """Put ``module`` in place of the submodule called ``name`` (dotted path) of ``model``.

    Every surgery that swaps a layer (factorization, int8, binary, sparse) goes through here.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 2))
        >>> set_module(m, "0", nn.Identity())
        >>> type(m[0]).__name__
        'Identity'
    """
    parent, _, leaf = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, leaf, module)
