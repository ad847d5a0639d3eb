"""Replaying factorization surgery: rebuild a factored layer's structure from the base layer and the log entry.

``deepshrink.load`` builds the base model (on the meta device first, to check
every shape against the file), then replays the log; the weights come from the
file afterwards. Every field of an entry is checked here: a hostile entry
(wrong keys or types, ranks out of range, a module of the wrong kind) raises
ValueError, which the surgery replay reports as a FormatError.

Example:
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Linear(8, 4))
    >>> replay_svd_linear(m, {"op": "svd_linear", "module": "0", "rank": 2})
    >>> type(m[0]).__name__, tuple(m[0][0].weight.shape)
    ('FactoredLinear', (2, 8))
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..surgery import register_surgery, set_module
from .compact import full_multiplier
from .cp import full_cp_rank
from .layers import (
    FACTORED_TYPES,
    CPConv2d,
    DepthwiseSeparableConv2d,
    FactoredEmbedding,
    FactoredLinear,
    FireConv2d,
    SeparableConv2d,
    TuckerConv2d,
)
from .method import conv2d_reason
from .separable import full_separable_rank


def _keys(entry: dict[str, Any], allowed: set[str]) -> None:
    extra = set(entry) - allowed - {"op"}
    missing = allowed - set(entry)
    if extra or missing:
        raise ValueError(f"entry keys must be {sorted(allowed | {'op'})}; unknown {sorted(extra)}, missing {sorted(missing)}")


_FROM_ENTRY = object()


def _int(entry: dict[str, Any], key: str, lo: int, hi: int, value: Any = _FROM_ENTRY) -> int:
    v = entry[key] if value is _FROM_ENTRY else value
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ValueError(f"{key!r} must be an integer in [{lo}, {hi}], got {v!r}")
    return v


def _module(model: nn.Module, entry: dict[str, Any], kind: type[nn.Module]) -> nn.Module:
    name = entry["module"]
    if not isinstance(name, str) or not name:
        raise ValueError("'module' must name a submodule")
    m = model.get_submodule(name)
    if type(m) in FACTORED_TYPES or not isinstance(m, kind):
        raise ValueError(f"module {name!r} is a {type(m).__name__}, not a {kind.__name__} to factor")
    return m


def _conv(model: nn.Module, entry: dict[str, Any]) -> nn.Conv2d:
    m = _module(model, entry, nn.Conv2d)
    why = conv2d_reason(m)
    if why:
        raise ValueError(f"module {entry['module']!r} cannot be factored: {why}")
    return m  # type: ignore[return-value]


@register_surgery("svd_linear")
def replay_svd_linear(model: nn.Module, entry: dict[str, Any]) -> None:
    """``{"op": "svd_linear", "module": NAME, "rank": R}``: a Linear becomes two.

    Example:
        >>> m = nn.Sequential(nn.Linear(8, 4))
        >>> replay_svd_linear(m, {"op": "svd_linear", "module": "0", "rank": 9})
        Traceback (most recent call last):
        ...
        ValueError: 'rank' must be an integer in [1, 4], got 9
    """
    _keys(entry, {"module", "rank"})
    m = _module(model, entry, nn.Linear)
    rank = _int(entry, "rank", 1, min(m.in_features, m.out_features))
    set_module(model, entry["module"], FactoredLinear.like(m, rank))


@register_surgery("svd_embedding")
def replay_svd_embedding(model: nn.Module, entry: dict[str, Any]) -> None:
    """``{"op": "svd_embedding", "module": NAME, "rank": R}``: an Embedding becomes a narrow one and a Linear.

    Example:
        >>> m = nn.Sequential(nn.Embedding(10, 4))
        >>> replay_svd_embedding(m, {"op": "svd_embedding", "module": "0", "rank": 2})
        >>> tuple(m[0][0].weight.shape)
        (10, 2)
    """
    _keys(entry, {"module", "rank"})
    m = _module(model, entry, nn.Embedding)
    if m.max_norm is not None:
        raise ValueError("an Embedding with max_norm cannot be factored")
    rank = _int(entry, "rank", 1, min(m.num_embeddings, m.embedding_dim))
    set_module(model, entry["module"], FactoredEmbedding.like(m, rank))


@register_surgery("tucker2_conv")
def replay_tucker2(model: nn.Module, entry: dict[str, Any]) -> None:
    """``{"op": "tucker2_conv", "module": NAME, "ranks": [R_IN, R_OUT]}``.

    Example:
        >>> m = nn.Sequential(nn.Conv2d(4, 8, 3))
        >>> replay_tucker2(m, {"op": "tucker2_conv", "module": "0", "ranks": [2, 3]})
        >>> tuple(m[0][1].weight.shape)
        (3, 2, 3, 3)
    """
    _keys(entry, {"module", "ranks"})
    m = _conv(model, entry)
    ranks = entry["ranks"]
    if not isinstance(ranks, list) or len(ranks) != 2:
        raise ValueError(f"'ranks' must be a list [r_in, r_out], got {ranks!r}")
    r_in = _int(entry, "ranks[0]", 1, m.in_channels, ranks[0])
    r_out = _int(entry, "ranks[1]", 1, m.out_channels, ranks[1])
    set_module(model, entry["module"], TuckerConv2d.like(m, (r_in, r_out)))


@register_surgery("cp_conv")
def replay_cp(model: nn.Module, entry: dict[str, Any]) -> None:
    """``{"op": "cp_conv", "module": NAME, "rank": R}``: four convolutions.

    Example:
        >>> m = nn.Sequential(nn.Conv2d(4, 8, 3))
        >>> replay_cp(m, {"op": "cp_conv", "module": "0", "rank": 5})
        >>> len(m[0])
        4
    """
    _keys(entry, {"module", "rank"})
    m = _conv(model, entry)
    rank = _int(entry, "rank", 1, full_cp_rank(m))
    set_module(model, entry["module"], CPConv2d.like(m, rank))


@register_surgery("separable_conv")
def replay_separable(model: nn.Module, entry: dict[str, Any]) -> None:
    """``{"op": "separable_conv", "module": NAME, "rank": R}``: Kx1 then 1xK.

    Example:
        >>> m = nn.Sequential(nn.Conv2d(4, 8, 3))
        >>> replay_separable(m, {"op": "separable_conv", "module": "0", "rank": 5})
        >>> tuple(m[0][0].weight.shape)
        (5, 4, 3, 1)
    """
    _keys(entry, {"module", "rank"})
    m = _conv(model, entry)
    rank = _int(entry, "rank", 1, full_separable_rank(m))
    set_module(model, entry["module"], SeparableConv2d.like(m, rank))


@register_surgery("depthwise_separable_conv")
def replay_depthwise_separable(model: nn.Module, entry: dict[str, Any]) -> None:
    """``{"op": "depthwise_separable_conv", "module": NAME, "multiplier": M}``.

    Example:
        >>> m = nn.Sequential(nn.Conv2d(4, 8, 3))
        >>> replay_depthwise_separable(m, {"op": "depthwise_separable_conv", "module": "0", "multiplier": 2})
        >>> m[0][0].groups
        4
    """
    _keys(entry, {"module", "multiplier"})
    m = _conv(model, entry)
    mult = _int(entry, "multiplier", 1, full_multiplier(m))
    set_module(model, entry["module"], DepthwiseSeparableConv2d.like(m, mult))


@register_surgery("fire_conv")
def replay_fire(model: nn.Module, entry: dict[str, Any]) -> None:
    """``{"op": "fire_conv", "module": NAME, "squeeze": S, "expand1x1": E, "order": [...]}``.

    Example:
        >>> m = nn.Sequential(nn.Conv2d(4, 3, 3))
        >>> replay_fire(m, {"op": "fire_conv", "module": "0", "squeeze": 2, "expand1x1": 1, "order": [2, 0, 1]})
        >>> m[0].expand.out_channels
        2
    """
    _keys(entry, {"module", "squeeze", "expand1x1", "order"})
    m = _conv(model, entry)
    if m.padding_mode != "zeros":
        raise ValueError("a Fire replacement needs a zero-padded convolution")
    n = m.out_channels
    squeeze = _int(entry, "squeeze", 1, m.in_channels)
    e1 = _int(entry, "expand1x1", 0, n - 1)
    order = entry["order"]
    if not isinstance(order, list) or len(order) != n or any(isinstance(i, bool) or not isinstance(i, int) for i in order) \
            or sorted(order) != list(range(n)):
        raise ValueError(f"'order' must be a permutation of the {n} output channels")
    set_module(model, entry["module"], FireConv2d.like(m, squeeze, order, e1))


__all__ = [
    "replay_cp",
    "replay_depthwise_separable",
    "replay_fire",
    "replay_svd_embedding",
    "replay_svd_linear",
    "replay_separable",
    "replay_tucker2",
]
