"""Config base class, allow-list registry and YAML/JSON round trip.

Every technique in deepshrink is driven by a frozen dataclass that subclasses
:class:`Config`. Configs validate themselves on construction (a
:class:`~deepshrink.errors.ConfigError`, which is a ``ValueError``, names the
field, the value and what is allowed) and serialise to plain dicts that carry
their registered ``type`` and ``version``. Only registered config types can be
read back: a file cannot name an arbitrary class.

Example:
    >>> from dataclasses import dataclass
    >>> @register_config("example_cfg")
    ... @dataclass(frozen=True)
    ... class ExampleCfg(Config):
    ...     ratio: float = 0.5
    ...     def validate(self) -> None:
    ...         check_range(self, "ratio", 0.0, 1.0)
    >>> cfg = config_from_dict({"type": "example_cfg", "version": 1, "ratio": 0.25})
    >>> config_from_json(config_to_json(cfg)) == cfg
    True
"""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from collections.abc import Iterable, Mapping
from typing import Any, ClassVar, TypeVar

import yaml

from .errors import ConfigError

C = TypeVar("C", bound="Config")

# The allow-list of config types that may be read from a file. Filled by
# @register_config as modules define their configs; never read from a file.
_CONFIG_TYPES: dict[str, type[Config]] = {}


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every deepshrink config: frozen, validated, serialisable.

    Subclasses are frozen dataclasses decorated with :func:`register_config`
    and override :meth:`validate`.

    Example:
        >>> from deepshrink import TrainConfig
        >>> TrainConfig(epochs=2).epochs
        2
    """

    type_name: ClassVar[str] = ""
    version: ClassVar[int] = 1

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` for any invalid field. Override in subclasses."""

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed (validated again).

        Example:
            >>> from deepshrink import TrainConfig
            >>> TrainConfig(epochs=2).replace(epochs=3).epochs
            3
        """
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain, JSON-safe dict with ``type`` and ``version`` keys.

        Example:
            >>> from deepshrink import TrainConfig
            >>> TrainConfig(epochs=2).to_dict()["type"]
            'train'
        """
        return config_to_dict(self)


def register_config(name: str) -> typing.Callable[[type[C]], type[C]]:
    """Class decorator that adds a config type to the allow-list under ``name``.

    Example:
        >>> @register_config("doc_example")
        ... @dataclasses.dataclass(frozen=True)
        ... class DocExample(Config):
        ...     x: int = 1
        >>> config_from_dict({"type": "doc_example", "x": 2}).x
        2
    """

    def decorate(cls: type[C]) -> type[C]:
        if not (isinstance(cls, type) and issubclass(cls, Config) and dataclasses.is_dataclass(cls)):
            raise TypeError(f"@register_config({name!r}) needs a dataclass subclass of Config")
        existing = _CONFIG_TYPES.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise TypeError(f"config type {name!r} is already registered to {existing.__qualname__}")
        cls.type_name = name
        _CONFIG_TYPES[name] = cls
        return cls

    return decorate


def registered_config_types() -> dict[str, type[Config]]:
    """A copy of the allow-list: registered name -> config class.

    Example:
        >>> "train" in registered_config_types()
        True
    """
    _ensure_builtin_configs()
    return dict(_CONFIG_TYPES)


def _ensure_builtin_configs() -> None:
    # Importing the public package registers every built-in config type.
    import deepshrink  # noqa: F401


# --------------------------------------------------------------------------- validation helpers


def _owner(cfg: object) -> str:
    return type(cfg).__name__


def check_range(
    cfg: object,
    field: str,
    lo: float | None = None,
    hi: float | None = None,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    integer: bool = False,
) -> None:
    """Check that ``cfg.field`` is a number in [lo, hi] (open ends as asked).

    Example:
        >>> from deepshrink import TrainConfig
        >>> TrainConfig(lr=-1.0)
        Traceback (most recent call last):
        ...
        deepshrink.errors.ConfigError: TrainConfig.lr=-1.0 is invalid: expected a number in (0, inf)
    """
    value = getattr(cfg, field)
    left = "(" if lo_open or lo is None else "["
    right = ")" if hi_open or hi is None else "]"
    kind = "an integer" if integer else "a number"
    allowed = f"{kind} in {left}{'-inf' if lo is None else _fmt(lo)}, {'inf' if hi is None else _fmt(hi)}{right}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(field, value, allowed, _owner(cfg))
    if integer and not isinstance(value, int):
        raise ConfigError(field, value, allowed, _owner(cfg))
    if isinstance(value, float) and math.isnan(value):
        raise ConfigError(field, value, allowed, _owner(cfg))
    if lo is not None and (value < lo or (lo_open and value == lo)):
        raise ConfigError(field, value, allowed, _owner(cfg))
    if hi is not None and (value > hi or (hi_open and value == hi)):
        raise ConfigError(field, value, allowed, _owner(cfg))


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


def check_choice(cfg: object, field: str, choices: Iterable[Any]) -> None:
    """Check that ``cfg.field`` is one of ``choices``.

    Example:
        >>> from deepshrink import TrainConfig
        >>> TrainConfig(optimizer="adamw").optimizer
        'adamw'
    """
    value = getattr(cfg, field)
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(field, value, "one of " + ", ".join(repr(c) for c in choices), _owner(cfg))


def check_type(cfg: object, field: str, types: type | tuple[type, ...], allowed: str) -> None:
    """Check that ``cfg.field`` is an instance of ``types``.

    Example:
        >>> from deepshrink import TrainConfig
        >>> TrainConfig(seed=3).seed
        3
    """
    value = getattr(cfg, field)
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise ConfigError(field, value, allowed, _owner(cfg))
    if not isinstance(value, types):
        raise ConfigError(field, value, allowed, _owner(cfg))


# --------------------------------------------------------------------------- serialisation


def _to_plain(value: Any) -> Any:
    if isinstance(value, Config):
        return config_to_dict(value)
    if isinstance(value, Mapping):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"config value {value!r} of type {type(value).__name__} is not serialisable")


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Serialise a config to a plain dict with ``type`` and ``version``.

    Example:
        >>> from deepshrink import TrainConfig
        >>> config_to_dict(TrainConfig())["version"]
        1
    """
    if not type(cfg).type_name:
        raise TypeError(f"{type(cfg).__name__} is not registered; decorate it with @register_config")
    out: dict[str, Any] = {"type": type(cfg).type_name, "version": type(cfg).version}
    for f in dataclasses.fields(cfg):
        out[f.name] = _to_plain(getattr(cfg, f.name))
    return out


def _coerce(annotation: Any, value: Any) -> Any:
    """Turn JSON/YAML values back into what the field expects (lists -> tuples, nested configs)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        for arg in args:
            if arg is type(None) and value is None:
                return None
        for arg in args:
            if arg is type(None):
                continue
            if _matches(arg, value):
                return _coerce(arg, value)
        return value
    if origin is tuple and isinstance(value, list):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v) for v in value)
        return tuple(value)
    if origin in (dict, Mapping) and isinstance(value, Mapping):
        vt = args[1] if len(args) == 2 else Any
        return {k: _coerce(vt, v) for k, v in value.items()}
    if isinstance(annotation, type) and issubclass(annotation, Config) and isinstance(value, Mapping):
        return config_from_dict(value)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


def _matches(annotation: Any, value: Any) -> bool:
    origin = typing.get_origin(annotation) or annotation
    if origin is tuple:
        return isinstance(value, (list, tuple))
    if origin in (dict, Mapping):
        return isinstance(value, Mapping)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if isinstance(origin, type):
        if isinstance(value, bool) and origin is not bool:
            return False
        if issubclass(origin, Config):
            return isinstance(value, Mapping)
        return isinstance(value, origin)
    return True


def config_from_dict(data: Mapping[str, Any]) -> Config:
    """Build a registered config from a dict; unknown types and fields are refused.

    Example:
        >>> config_from_dict({"type": "train", "epochs": 4}).epochs
        4
    """
    if not isinstance(data, Mapping):
        raise ConfigError("config", data, "a mapping with a 'type' key")
    types = registered_config_types()
    name = data.get("type")
    if name not in types:
        raise ConfigError("type", name, "one of " + ", ".join(sorted(types)))
    cls = types[name]
    version = data.get("version", cls.version)
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= cls.version:
        raise ConfigError("version", version, f"an integer from 1 to {cls.version} for config type {name!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key in ("type", "version"):
            continue
        if key not in fields:
            raise ConfigError(key, value, f"a field of {cls.__name__}: " + ", ".join(fields), cls.__name__)
        kwargs[key] = _coerce(hints.get(key, Any), value)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a missing required field
        raise ConfigError("config", dict(data), f"all required fields of {cls.__name__} ({exc})") from None


def config_to_json(cfg: Config) -> str:
    """JSON text of a config.

    Example:
        >>> from deepshrink import TrainConfig
        >>> '"type": "train"' in config_to_json(TrainConfig())
        True
    """
    return json.dumps(config_to_dict(cfg), indent=2, sort_keys=False)


def config_from_json(text: str) -> Config:
    """Parse JSON text into a registered config.

    Example:
        >>> config_from_json('{"type": "train", "epochs": 1}').epochs
        1
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError("json", text[:40], f"valid JSON ({exc})") from None
    return config_from_dict(data)


def config_to_yaml(cfg: Config) -> str:
    """YAML text of a config.

    Example:
        >>> from deepshrink import TrainConfig
        >>> config_to_yaml(TrainConfig()).startswith("type: train")
        True
    """
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False)


def config_from_yaml(text: str) -> Config:
    """Parse YAML text (safe loader only) into a registered config.

    Example:
        >>> config_from_yaml("type: train\\nepochs: 2\\n").epochs
        2
    """
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError("yaml", text[:40], f"valid YAML ({exc})") from None
    return config_from_dict(data)
