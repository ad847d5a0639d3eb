"""The technique verbs (prune_, share_, quantize_, factorize_, add_exits_) and their reports.

A verb dispatches on the *type* of its config, never on a string. A method
plugs in by registering a handler for its config class:

    @prune_.register(MagnitudePruning)
    def _magnitude(model, config, **kwargs) -> Report: ...

Example:
    >>> from dataclasses import dataclass
    >>> from torch import nn
    >>> from deepshrink.config import Config
    >>> @dataclass(frozen=True)
    ... class Noop(Config):
    ...     pass
    >>> verb = Verb("noop_")
    >>> @verb.register(Noop)
    ... def _noop(model, config, **kwargs):
    ...     return Report(method="noop")
    >>> verb(nn.Linear(2, 2), Noop()).method
    'noop'
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .config import Config
from .data.bundle import DataBundle
from .errors import ConfigError, UnsupportedModelError
from .models.inputs import check_data_fits


@dataclass
class Report:
    """What a verb did: the layers it changed, those it skipped and why, and figures.

    Example:
        >>> r = Report(method="magnitude", changed=["fc1"], skipped={"fc3": "excluded"})
        >>> r.to_dict()["changed"]
        ['fc1']
    """

    method: str
    changed: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    figures: dict[str, Any] = field(default_factory=dict)
    per_layer: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=str)

    def __str__(self) -> str:
        lines = [f"{self.method}: changed {len(self.changed)} layer(s), skipped {len(self.skipped)}"]
        for key, value in self.figures.items():
            lines.append(f"  {key}: {value}")
        for name, why in self.skipped.items():
            lines.append(f"  skipped {name}: {why}")
        return "\n".join(lines)


Handler = Callable[..., Report]


class Verb:
    """A technique family's entry point, dispatching on the config's type.

    Example:
        >>> Verb("prune_").name
        'prune_'
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self._handlers: dict[type, Handler] = {}

    def register(self, config_type: type[Config]) -> Callable[[Handler], Handler]:
        """Decorator: ``handler(model, config, **kwargs) -> Report`` for ``config_type``."""

        def decorate(handler: Handler) -> Handler:
            self._handlers[config_type] = handler
            return handler

        return decorate

    def supported(self) -> list[str]:
        return sorted(t.__name__ for t in self._handlers)

    def __call__(self, model: nn.Module, config: Config, **kwargs: Any) -> Report:
        if not isinstance(model, nn.Module):
            raise TypeError(f"{self.name} needs an nn.Module as its first argument, got {type(model).__name__}")
        for klass in type(config).__mro__:
            handler = self._handlers.get(klass)
            if handler is not None:
                _refuse_non_finite(model, self.name)
                data = kwargs.get("data")
                if isinstance(data, DataBundle):
                    check_data_fits(model, data, self.name)
                return handler(model, config, **kwargs)
        raise ConfigError(
            "config",
            type(config).__name__,
            f"a config that {self.name} supports: " + (", ".join(self.supported()) or "none registered yet"),
        )


def non_finite_parameters(model: nn.Module) -> list[str]:
    """Names of the floating-point parameters of ``model`` that hold a NaN or an infinity.

    Example:
        >>> m = nn.Linear(2, 2)
        >>> with torch.no_grad(): _ = m.bias.fill_(float("nan"))
        >>> non_finite_parameters(m)
        ['bias']
    """
    with torch.no_grad():
        return [name for name, p in model.named_parameters()
                if p.is_floating_point() and p.device.type != "meta" and not bool(torch.isfinite(p).all())]


def _refuse_non_finite(model: nn.Module, verb: str) -> None:
    # NaN/inf weights make every method fail deep inside a kernel (LAPACK, k-means) or, worse, silently produce
    # a model of NaNs (an int8 scale of NaN, a magnitude ranking of NaN); refuse before anything is touched.
    bad = non_finite_parameters(model)
    if bad:
        shown = ", ".join(repr(n) for n in bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise UnsupportedModelError(
            f"{verb} cannot compress a model with non-finite weights (NaN or inf) in {shown}: an earlier training "
            "step diverged; reload a good checkpoint, lower the learning rate or set grad_clip")


prune_ = Verb("prune_")
share_ = Verb("share_")
quantize_ = Verb("quantize_")
factorize_ = Verb("factorize_")
add_exits_ = Verb("add_exits_")

VERBS: dict[str, Verb] = {v.name: v for v in (prune_, share_, quantize_, factorize_, add_exits_)}


def verb_for(config: Config) -> Verb:
    """The verb that has a handler for this config (used by recipes).

    Example:
        >>> from deepshrink import TrainConfig
        >>> verb_for(TrainConfig())
        Traceback (most recent call last):
        ...
        deepshrink.errors.ConfigError: config='TrainConfig' is invalid: expected a compression config (a registered config with a handler)
    """
    for verb in VERBS.values():
        for klass in type(config).__mro__:
            if klass in verb._handlers:
                return verb
    raise ConfigError("config", type(config).__name__, "a compression config (a registered config with a handler)")
