"""Attention heads for structured pruning: which modules are attention layers, and their head counts.

Torch-Pruning removes whole heads when it is told each projection's head count
(``num_heads``, ``prune_num_heads=True``): the query, key and value rows of a head
and the matching input columns of the output projection go together. What it
does not do is update the attention module's own bookkeeping (its number of
heads), which some transformers versions read in ``forward``. This module finds
attention layers by their conventional attribute names, and records and replays
the new head count as a surgery entry ``{"op": "attention_heads", "module": ..., "num_heads": n}``.

Example:
    >>> from torch import nn
    >>> class SelfAttention(nn.Module):
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.num_attention_heads, self.attention_head_size, self.all_head_size = 4, 8, 32
    ...         self.query, self.key, self.value = nn.Linear(32, 32), nn.Linear(32, 32), nn.Linear(32, 32)
    >>> found = find_attention(nn.Sequential(SelfAttention()))
    >>> [(a.name, a.num_heads, a.head_dim) for a in found]
    [('0', 4, 8)]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn

from ..surgery import register_surgery

# (query, key, value, head-count attribute) as named by common transformer implementations:
# BERT/RoBERTa/MiniLM (transformers), DistilBERT, and the q_proj style of most newer models.
_LAYOUTS: tuple[tuple[str, str, str, str], ...] = (
    ("query", "key", "value", "num_attention_heads"),
    ("q_lin", "k_lin", "v_lin", "n_heads"),
    ("q_proj", "k_proj", "v_proj", "num_heads"),
)
_HEAD_SIZE_ATTRS = ("attention_head_size", "head_dim", "dim_per_head")
_TOTAL_ATTRS = ("all_head_size",)


@dataclass
class AttentionLayer:
    """One attention module: its name, projections, head count and head width."""

    name: str
    module: nn.Module
    projections: tuple[nn.Linear, nn.Linear, nn.Linear]
    heads_attr: str
    num_heads: int
    head_dim: int


def _layout(m: nn.Module) -> tuple[tuple[nn.Linear, nn.Linear, nn.Linear], str] | None:
    for q, k, v, heads in _LAYOUTS:
        projs = tuple(getattr(m, a, None) for a in (q, k, v))
        if all(isinstance(p, nn.Linear) for p in projs) and isinstance(getattr(m, heads, None), int):
            return projs, heads  # type: ignore[return-value]
    return None


def find_attention(model: nn.Module) -> list[AttentionLayer]:
    """Attention layers whose heads can be pruned: separate q/k/v Linears and a head count attribute.

    Grouped-query layouts (keys and values with fewer heads than queries) are left
    out: their heads are not one-to-one.

    Example:
        >>> find_attention(nn.Linear(2, 2))
        []
    """
    found: list[AttentionLayer] = []
    for name, m in model.named_modules():
        layout = _layout(m)
        if layout is None:
            continue
        projs, heads_attr = layout
        n = int(getattr(m, heads_attr))
        widths = {p.out_features for p in projs}
        if n < 1 or len(widths) != 1 or next(iter(widths)) % n:
            continue
        found.append(AttentionLayer(name, m, projs, heads_attr, n, next(iter(widths)) // n))
    return found


def set_head_count(module: nn.Module, num_heads: int) -> None:
    """Update an attention module's head bookkeeping to ``num_heads`` (head width unchanged).

    Example:
        >>> class A(nn.Module):
        ...     def __init__(self):
        ...         super().__init__(); self.query = self.key = self.value = nn.Linear(8, 4)  # sliced from 8 to 4
        ...         self.num_attention_heads, self.attention_head_size, self.all_head_size = 2, 4, 8
        >>> a = A(); set_head_count(a, 1); (a.num_attention_heads, a.all_head_size)
        (1, 4)
    """
    layout = _layout(module)
    if layout is None:
        raise ValueError(f"{type(module).__name__} is not an attention layer with separate query/key/value projections")
    projs, heads_attr = layout
    if isinstance(num_heads, bool) or not isinstance(num_heads, int) or num_heads < 1:
        raise ValueError(f"num_heads must be a positive integer, got {num_heads!r}")
    width = projs[0].out_features
    if any(p.out_features != width for p in projs) or width % num_heads:
        raise ValueError(f"projections of width {width} cannot hold {num_heads} heads")
    head_dim = width // num_heads
    for attr in _HEAD_SIZE_ATTRS:
        old = getattr(module, attr, None)
        if isinstance(old, int) and old != head_dim:
            raise ValueError(f"{num_heads} heads would change the head width from {old} to {head_dim}")
    setattr(module, heads_attr, num_heads)
    for attr in _TOTAL_ATTRS:
        if isinstance(getattr(module, attr, None), int):
            setattr(module, attr, width)


@register_surgery("attention_heads")
def replay_attention_heads(model: nn.Module, entry: dict[str, Any]) -> None:
    """Replay ``{"op": "attention_heads", "module": name, "num_heads": n}`` after the projections were sliced.

    Example:
        >>> class A(nn.Module):
        ...     def __init__(self):
        ...         super().__init__(); self.query = self.key = self.value = nn.Linear(8, 4)
        ...         self.num_attention_heads, self.attention_head_size, self.all_head_size = 2, 2, 4
        >>> m = nn.Sequential(A()); replay_attention_heads(m, {"op": "attention_heads", "module": "0", "num_heads": 2})
        >>> m[0].num_attention_heads
        2
    """
    extra = set(entry) - {"op", "module", "num_heads"}
    if extra:
        raise ValueError(f"unknown keys {sorted(extra)}")
    if not isinstance(entry.get("module"), str):
        raise ValueError("'module' must name a submodule")
    set_head_count(model.get_submodule(entry["module"]), entry.get("num_heads"))  # type: ignore[arg-type]


__all__ = ["AttentionLayer", "find_attention", "replay_attention_heads", "set_head_count"]
