"""Multiply-accumulates (MACs) of one forward pass, per layer.

Matrix products and convolutions are counted at the operator level with
PyTorch's own ``FlopCounterMode`` (MACs = FLOPs / 2), so functional calls
count too: attention's ``Q @ K^T`` and ``A @ V`` (eager or scaled-dot-product
attention) as well as ``nn.Linear``, ``nn.ConvNd`` with groups,
transposed convolutions and ``bmm``. Normalisation layers (batch, layer,
group and instance norm) are counted by forward hooks at one MAC per output
element, their scale-and-shift. Element-wise activations, pooling and additions
are not counted. Each operator is charged to the innermost module that ran it.

Example:
    >>> import torch
    >>> from torch import nn
    >>> count_macs(nn.Linear(4, 3), (torch.zeros(2, 4),))
    {'': 24}
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.modules.instancenorm._InstanceNorm,
)
# Operators whose MACs scale with the nonzero fraction of the layer's weight exactly.
WEIGHTED_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.modules.conv._ConvNd)


def _sdpa_cpu_flops(query_shape: Sequence[int], key_shape: Sequence[int], value_shape: Sequence[int], *args: Any, **kwargs: Any) -> int:
    """FLOPs of the CPU scaled-dot-product-attention kernel (PyTorch counts only the GPU ones)."""
    b, h, s_q, d = query_shape[-4:] if len(query_shape) == 4 else (1, *query_shape[-3:])
    s_k = key_shape[-2]
    d_v = value_shape[-1]
    return 2 * b * h * s_q * s_k * d + 2 * b * h * s_q * s_k * d_v


def _custom_mapping() -> dict[Any, Any]:
    op = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)
    return {op: _sdpa_cpu_flops} if op is not None else {}


def _as_tuple(example_inputs: Any) -> tuple[Any, ...]:
    return tuple(example_inputs) if isinstance(example_inputs, (tuple, list)) else (example_inputs,)


def count_macs(model: nn.Module, example_inputs: Any) -> dict[str, int]:
    """MACs of ``model(*example_inputs)`` charged to each module by qualified name (root: ``""``).

    Only modules with a nonzero count appear. MACs that the counter cannot tie
    to a module (a module called outside its parent's forward) go to the root.
    The model runs once in eval mode without gradients; its mode is restored.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(8, 1))
        >>> count_macs(m, (torch.zeros(1, 1, 4, 4),))
        {'0': 72, '2': 8}
    """
    inputs = _as_tuple(example_inputs)
    root = type(model).__name__
    names = {module: name for name, module in model.named_modules(remove_duplicate=False)}
    norm_macs: dict[str, int] = {}

    def norm_hook(module: nn.Module, _args: Any, output: Any) -> None:
        if isinstance(output, Tensor):
            key = names.get(module, "")
            norm_macs[key] = norm_macs.get(key, 0) + output.numel()

    handles = [m.register_forward_hook(norm_hook) for m in model.modules() if isinstance(m, NORM_LAYERS)]
    was_training = model.training
    model.eval()
    # nn.MultiheadAttention and nn.TransformerEncoderLayer take a fused "fast path" in eval
    # mode that the counter cannot see into; the regular path does the same arithmetic.
    mha = getattr(torch.backends, "mha", None)
    fastpath = mha.get_fastpath_enabled() if mha is not None else None
    try:
        if mha is not None:
            mha.set_fastpath_enabled(False)
        counter = FlopCounterMode(display=False, custom_mapping=_custom_mapping())
        with torch.no_grad(), counter:
            model(*inputs)
    finally:
        if mha is not None:
            mha.set_fastpath_enabled(fastpath)
        model.train(was_training)
        for h in handles:
            h.remove()
    # The counter charges every operator to all modules on the call stack, keyed
    # "RootClass.qualified.name"; a module's own MACs are its count minus its children's.
    inclusive: dict[str, int] = {}
    for key, per_op in counter.get_flop_counts().items():
        if key == "Global":
            continue
        if key == root:
            name = ""
        elif key.startswith(root + "."):
            name = key[len(root) + 1 :]
        else:
            continue
        inclusive[name] = sum(per_op.values()) // 2
    total = counter.get_total_flops() // 2
    own = dict(inclusive)
    for name, value in inclusive.items():
        if not name:
            continue
        parent = name
        while parent:  # nearest ancestor that the counter saw (the root "" at worst)
            parent = parent.rpartition(".")[0]
            if parent in inclusive:
                own[parent] -= value
                break
    own = {name: value for name, value in own.items() if value}
    unattributed = total - sum(own.values())
    if unattributed:
        own[""] = own.get("", 0) + unattributed
    for name, value in norm_macs.items():
        own[name] = own.get(name, 0) + value
    return {name: own[name] for name in _module_order(model, own)}


def _module_order(model: nn.Module, keys: dict[str, int]) -> list[str]:
    order = [name for name, _ in model.named_modules() if name in keys]
    return order + sorted(set(keys) - set(order))


def total_macs(model: nn.Module, example_inputs: Any) -> int:
    """Total MACs of one forward pass on ``example_inputs``.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> total_macs(nn.Conv2d(4, 8, 3, groups=2), (torch.zeros(1, 4, 5, 5),))
        1296
    """
    return sum(count_macs(model, example_inputs).values())
