"""``timm:NAME``: any model of timm's registry (when timm is installed), random init or local weights.

Nothing is downloaded: models are always built with ``pretrained=False``;
pretrained weights come from a local ``.safetensors`` or ``.pt`` state dict
(read without pickle by :mod:`deepshrink.models.weights`), exactly as for
``torchvision:NAME``.

The constructor arguments are an allow-list (:data:`ALLOWED_KWARGS`): a
compressed file records them and :func:`deepshrink.load` passes them back,
so a file must not be able to reach timm's options that read files or fetch
weights (``pretrained``, ``pretrained_cfg_overlay``, ``checkpoint_path``).
A model that needs other arguments can be built with timm directly and
passed to ``deepshrink.load(path, model=skeleton)``.

Example:
    >>> m = create_timm("resnet10t", num_classes=10)
    >>> m.fc.out_features
    10
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..errors import SpecError

# Constructor arguments a timm spec may carry, with the types each accepts. Sizes (num_classes,
# img_size) are bounded by load()'s meta-device build, which checks every shape against the file.
ALLOWED_KWARGS: dict[str, tuple[type, ...]] = {
    "num_classes": (int,),
    "in_chans": (int,),
    "img_size": (int, list, tuple),
    "drop_rate": (float, int),
    "drop_path_rate": (float, int),
    "global_pool": (str,),
}


def timm_available() -> bool:
    """Whether timm can be imported here.

    Example:
        >>> isinstance(timm_available(), bool)
        True
    """
    try:
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


def timm_models(pattern: str = "*") -> list[str]:
    """Names in timm's registry matching a wildcard ``pattern`` (an empty list without timm).

    Example:
        >>> all(isinstance(n, str) for n in timm_models("resnet1*"))
        True
    """
    if not timm_available():
        return []
    import timm

    return sorted(timm.list_models(pattern))


def _check_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    for key, value in kwargs.items():
        if key not in ALLOWED_KWARGS:
            raise SpecError(
                f"timm model {name!r} does not take {key!r} through deepshrink (accepted: {', '.join(ALLOWED_KWARGS)});"
                " for other arguments build the model with timm.create_model yourself and pass it as the model"
                " (deepshrink.load(path, model=skeleton) to load a file of it)"
            )
        if isinstance(value, bool) or not isinstance(value, ALLOWED_KWARGS[key]):
            raise SpecError(f"timm argument {key}={value!r} has the wrong type; expected {' or '.join(t.__name__ for t in ALLOWED_KWARGS[key])}")
        if key == "img_size" and isinstance(value, (list, tuple)):
            if len(value) != 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
                raise SpecError(f"timm argument img_size={value!r} must be an int or two ints (height, width)")


def input_shape(model: nn.Module, kwargs: dict[str, Any]) -> tuple[int, ...]:
    """The (C, H, W) input a timm model expects: its pretrained config, with ``in_chans``/``img_size`` applied.

    Example:
        >>> from torch import nn
        >>> m = nn.Linear(2, 2); m.pretrained_cfg = {"input_size": (3, 224, 224)}
        >>> input_shape(m, {"img_size": 32})
        (3, 32, 32)
    """
    cfg = getattr(model, "pretrained_cfg", None) or {}
    c, h, w = tuple(cfg.get("input_size", (3, 224, 224)))
    if "in_chans" in kwargs:
        c = kwargs["in_chans"]
    size = kwargs.get("img_size")
    if isinstance(size, int):
        h = w = size
    elif isinstance(size, (list, tuple)):
        h, w = size
    return (int(c), int(h), int(w))


def create_timm(name: str, **kwargs: Any) -> nn.Module:
    """Build timm's model ``name`` with random init (``pretrained=False``: nothing is downloaded).

    ``kwargs`` go to ``timm.create_model`` and must be among :data:`ALLOWED_KWARGS`.
    An unknown name or argument raises :class:`SpecError` saying what to use instead.

    Example:
        >>> m = create_timm("resnet10t", num_classes=10)
        >>> m.example_input_shape  # timm's own test resolution for this model
        (3, 176, 176)
    """
    try:
        import timm
    except ImportError:
        raise SpecError(f"timm:{name} needs timm: pip install 'deepshrink[timm]' (or pip install timm)") from None
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.lower()}*")[:8] if name else []
        hint = f" (close: {', '.join(close)})" if close else ""
        raise SpecError(
            f"unknown timm model {name!r}{hint}; list the valid names with "
            "python -c \"import timm; print(timm.list_models())\""
        )
    _check_kwargs(name, kwargs)
    try:
        model = timm.create_model(name, pretrained=False, **kwargs)
    except (TypeError, ValueError, AssertionError, KeyError) as exc:
        raise SpecError(f"bad arguments for timm model {name!r}: {exc}") from None
    model.example_input_shape = input_shape(model, kwargs)
    return model
