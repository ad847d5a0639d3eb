"""Which layers produce a model output: their output channels must stay, so that outputs keep their shape.

Found on Torch-Pruning's dependency graph: walk back from the graph's sinks through
weight-free operations (reshape, add, activation) to the first layers with weights.
"""

from __future__ import annotations

from typing import Any

import torch
import torch_pruning as tp
from torch import Tensor, nn

from .bridges import LinearBridge


def traced_outputs(out: Any) -> list[Tensor]:
    """The tensors of a model's output that the dependency graph should end at (``output_transform``).

    Nested tuples, lists and dicts (Hugging Face ``ModelOutput`` is a dict) are
    searched; anything else is dropped, such as a key/value cache object, which is
    an inference convenience rather than an output whose shape must stay (and which
    Torch-Pruning cannot trace).

    Example:
        >>> x = torch.ones(2, requires_grad=True) * 2
        >>> len(traced_outputs({"last": x, "cache": object(), "all": (x, [x])}))
        3
    """
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in traced_outputs(v)]
    if isinstance(out, (tuple, list)):
        return [t for v in out for t in traced_outputs(v)]
    return []


def graph_output_layers(dg: tp.DependencyGraph, candidates: set[nn.Module]) -> set[nn.Module]:
    """Layers of ``candidates`` whose output reaches a sink of ``dg`` through weight-free operations only.

    Layers before such a layer are not included: they may shrink.

    Example:
        >>> import deepshrink as ds
        >>> m = ds.models.create("lenet300")
        >>> dg = tp.DependencyGraph().build_dependency(m, example_inputs=torch.zeros(1, 1, 28, 28))
        >>> graph_output_layers(dg, set(m.modules())) == {m.fc3}
        True
    """
    stack = [node for node in dg.module2node.values() if not node.outputs]
    seen: set[int] = set()
    found: set[nn.Module] = set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        module = node.module
        if isinstance(module, nn.Module) and module in candidates and any(True for _ in module.parameters(recurse=False)):
            found.add(module)
            continue
        stack.extend(node.inputs)
    return found


def bridge_input_layers(dg: tp.DependencyGraph, model: nn.Module) -> set[nn.Module]:
    """Layers whose output channels feed a linear bridge (:mod:`.bridges`): their width stays.

    A bridge stands in for removed blocks that kept the features' width; the features it
    maps from keep theirs too, as when the blocks were there and tied them to the rest of
    the stack (otherwise MiniLM's embeddings and first layer would lose a quarter of the
    hidden width to a pruning meant for heads and FFN neurons).

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 6), LinearBridge(6), nn.Linear(6, 2))
        >>> dg = tp.DependencyGraph().build_dependency(m, example_inputs=torch.zeros(1, 4))
        >>> bridge_input_layers(dg, m) == {m[0]}
        True
    """
    found: set[nn.Module] = set()
    for bridge in (m for m in model.modules() if isinstance(m, LinearBridge)):
        proj = bridge.proj
        fn = tp.prune_linear_in_channels if isinstance(proj, nn.Linear) else tp.prune_conv_in_channels
        for dep, _ in dg.get_pruning_group(proj, fn, idxs=[0]):
            target = dep.target.module
            # Layers with weights only: the traced operations (add, reshape) hold no channels of their own.
            if isinstance(target, nn.Module) and target is not proj and dg.is_out_channel_pruning_fn(dep.handler) \
                    and any(True for _ in target.parameters(recurse=False)):
                found.add(target)
    return found


def output_layers(model: nn.Module, inputs: tuple[Any, ...]) -> set[nn.Module]:
    """Layers with weights whose output reaches a model output through weight-free operations only.

    Example:
        >>> import deepshrink as ds
        >>> m = ds.models.create("lenet5")
        >>> output_layers(m, (torch.zeros(1, 1, 28, 28),)) == {m.fc2}
        True
    """
    with torch.enable_grad():  # Torch-Pruning traces through autograd
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=inputs, output_transform=traced_outputs)
    return graph_output_layers(dg, set(model.modules()))
