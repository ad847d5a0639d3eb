"""Linear bridges: a run of removed blocks replaced by one linear map fitted by least squares.

Removing consecutive residual blocks (``BlockPruning``) leaves a gap: the next
block receives the features the first removed block received, not those the
last one produced. Most of what a run of transformer layers adds to its input
is close to a linear function of that input, so one ``d x d`` map fitted by
least squares from the run's input to its output on real data closes most of
the gap, at the cost of one matmul per token (ReplaceMe, Shopkhoev et al.
2025). On all-MiniLM-L6-v2 with layers 1-3 of 6 removed, the cosine of
sentence embeddings to the original's rose from 0.70 to 0.87 on pydoc's
validation split and from 0.71 / 0.80 to 0.82 / 0.86 on licence text and
everyday English, before any fine-tuning (BENCHMARKS.md, minilm-frontier).

A bridge sits in the stack in place of the run (a :class:`LinearBridge`, which
takes the block's call signature and returns its features), and is recorded
in the surgery log as ``{"op": "insert_bridge", "container": ..., "index": i,
"features": d, "kind": "linear"}`` so that a saved model rebuilds from its
base factory; its weights travel in the state dict.

Example:
    >>> import torch
    >>> x = torch.randn(200, 6)
    >>> y = x @ torch.randn(6, 6) + 1.0
    >>> bridge = LinearBridge(6, "linear")
    >>> stats = BridgeStats(6)
    >>> stats.add(x, y)
    >>> _ = stats.fit_into(bridge)
    >>> torch.allclose(bridge(x), y, atol=1e-3)
    True
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from ..data.token_rows import batch_mask, real_rows
from ..surgery import register_surgery

# Ridge, relative to the mean diagonal of the inputs' Gram matrix: enough to keep the solve well posed when
# some feature is constant on the calibration data (a zero-initialised channel), too small to bias the fit
# (on MiniLM 1e-4 and 1e-2 gave the same cosine; an exactly linear run is reproduced to 1e-5).
RIDGE = 1e-6
BRIDGE_KINDS = ("linear", "conv1d", "conv2d", "conv3d")
_CONVS = {"conv1d": nn.Conv1d, "conv2d": nn.Conv2d, "conv3d": nn.Conv3d}


class LinearBridge(nn.Module):
    """A linear map of a block's features standing in for removed blocks.

    ``kind="linear"`` maps the last axis (transformer tokens ``(batch, tokens, d)``);
    ``"conv1d"``/``"conv2d"``/``"conv3d"`` map the channel axis of feature maps with
    a 1x1 convolution. Extra arguments that a block of the stack takes (attention
    masks, caches) are accepted and ignored.

    Example:
        >>> b = LinearBridge(8, "conv2d")
        >>> tuple(b(torch.zeros(2, 8, 5, 5)).shape)
        (2, 8, 5, 5)
    """

    def __init__(self, features: int, kind: str = "linear") -> None:
        super().__init__()
        if kind not in BRIDGE_KINDS:
            raise ValueError(f"kind must be one of {BRIDGE_KINDS}, got {kind!r}")
        self.kind = kind
        self.proj = nn.Linear(features, features) if kind == "linear" else _CONVS[kind](features, features, 1)
        with torch.no_grad():  # identity until fitted: a bridge that is never fitted changes nothing
            self.proj.weight.zero_()
            self.proj.weight.view(features, features).fill_diagonal_(1.0)
            self.proj.bias.zero_()

    @property
    def features(self) -> int:
        return int(self.proj.weight.shape[0])

    def forward(self, hidden_states: Tensor, *args: Any, **kwargs: Any) -> Tensor:  # noqa: ARG002 - a block's signature
        return self.proj(hidden_states)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}"


def merge_bridges(first: LinearBridge, second: LinearBridge) -> LinearBridge:
    """One bridge computing ``second(first(x))``: two linear maps compose to one.

    A later pruning that removes the blocks next to a bridge leaves two bridges side by side;
    they become one, so that a stack never holds adjacent bridges.

    Example:
        >>> a, b = LinearBridge(3), LinearBridge(3)
        >>> _ = [nn.init.normal_(p) for p in (*a.parameters(), *b.parameters())]
        >>> x = torch.randn(5, 3)
        >>> torch.allclose(merge_bridges(a, b)(x), b(a(x)), atol=1e-5)
        True
    """
    if first.kind != second.kind or first.features != second.features:
        raise ValueError(f"cannot merge a {first.kind} bridge of {first.features} features with a {second.kind} one of {second.features}")
    d = first.features
    w1, w2 = first.proj.weight.detach().reshape(d, d).double(), second.proj.weight.detach().reshape(d, d).double()
    merged = copy.deepcopy(second)
    with torch.no_grad():
        merged.proj.weight.copy_((w2 @ w1).reshape(merged.proj.weight.shape).to(merged.proj.weight.dtype))
        merged.proj.bias.copy_((w2 @ first.proj.bias.detach().double() + second.proj.bias.detach().double()).to(merged.proj.bias.dtype))
    return merged


def bridge_kind(x: Tensor, block: nn.Module) -> str | None:
    """The bridge that maps features shaped like ``x`` (a block's input), or None when there is none.

    The feature axis is the one the block's own layers read: channels first when a convolution
    of the block takes ``x.shape[1]`` channels (ResNet, ConvNeXt, MobileNet feature maps: a 1x1
    convolution), the last axis when a Linear or LayerNorm of the block has that width
    (transformer tokens, Swin's channels-last maps: a Linear). Without such evidence, 4-D and
    5-D tensors are taken as channels first and others as features last.

    Example:
        >>> bridge_kind(torch.zeros(1, 4, 3, 3), nn.Conv2d(4, 4, 3))
        'conv2d'
        >>> bridge_kind(torch.zeros(1, 7, 7, 16), nn.Linear(16, 16))  # channels last
        'linear'
    """
    if x.dim() < 2:
        return None
    conv = x.dim() in (3, 4, 5) and any(
        isinstance(m, nn.modules.conv._ConvNd) and x.shape[1] in (m.in_channels, m.out_channels) for m in block.modules())
    last = any((isinstance(m, nn.Linear) and x.shape[-1] in (m.in_features, m.out_features))
               or (isinstance(m, nn.LayerNorm) and x.shape[-1] == m.normalized_shape[-1]) for m in block.modules())
    if conv and not (last and x.dim() == 3):
        return f"conv{x.dim() - 2}d"
    if last or x.dim() in (2, 3):
        return "linear"
    return f"conv{x.dim() - 2}d" if x.dim() in (4, 5) else "linear"


def feature_rows(t: Tensor, kind: str, mask: Tensor | None = None) -> Tensor:
    """Features as ``(rows, d)``: channels last for feature maps; for tokens only the real ones (``mask``).

    Example:
        >>> feature_rows(torch.zeros(2, 3, 4, 4), "conv2d").shape
        torch.Size([32, 3])
    """
    if kind != "linear":
        return t.movedim(1, -1).reshape(-1, t.shape[1])
    return real_rows(t, mask)


class BridgeStats:
    """Running sums for the least-squares fit ``[x, 1] @ T ~= y`` (float64, so that long runs do not lose digits).

    Example:
        >>> s = BridgeStats(3); s.add(torch.ones(4, 3), torch.ones(4, 3)); s.rows
        4
    """

    def __init__(self, features: int) -> None:
        self.xx = torch.zeros(features + 1, features + 1, dtype=torch.float64)
        self.xy = torch.zeros(features + 1, features, dtype=torch.float64)
        self.yy = 0.0
        self.rows = 0

    def add(self, x: Tensor, y: Tensor) -> None:
        xb = torch.cat([x.detach().double().cpu(), x.new_ones(x.shape[0], 1, dtype=torch.float64, device="cpu")], 1)
        yd = y.detach().double().cpu()
        self.xx += xb.T @ xb
        self.xy += xb.T @ yd
        self.yy += float(yd.pow(2).sum())
        self.rows += x.shape[0]

    def solve(self) -> tuple[Tensor, float]:
        """The map ``T`` (``(d + 1) x d``, bias last) and the fit's relative error on the rows it saw."""
        d = self.xx.shape[0]
        gram = self.xx + RIDGE * float(torch.trace(self.xx)) / d * torch.eye(d, dtype=torch.float64)
        t = torch.linalg.solve(gram, self.xy)
        # ||XT - Y||^2 = tr(T'X'XT) - 2 tr(T'X'Y) + ||Y||^2, from the sums alone.
        err2 = float((t * (self.xx @ t)).sum() - 2 * (t * self.xy).sum()) + self.yy
        return t, max(err2, 0.0) ** 0.5 / max(self.yy, 1e-300) ** 0.5

    def fit_into(self, bridge: LinearBridge) -> float:
        """Set ``bridge``'s weights to the least-squares map; returns the relative error of the fit."""
        t, err = self.solve()
        w = bridge.proj.weight
        with torch.no_grad():
            w.copy_(t[:-1].T.reshape(w.shape).to(w.dtype))
            bridge.proj.bias.copy_(t[-1].to(w.dtype))
        return err


@register_surgery("insert_bridge")
def replay_insert_bridge(model: nn.Module, entry: dict[str, Any]) -> None:
    """Replay ``{"op": "insert_bridge", "container", "index", "features", "kind"}``: an unfitted bridge at ``index``.

    Its weights come with the state dict. Works on the meta device too.

    Example:
        >>> m = nn.Sequential(nn.Sequential(nn.Linear(4, 4)), nn.Sequential(nn.Linear(4, 4)))
        >>> replay_insert_bridge(m, {"op": "insert_bridge", "container": "", "index": 1, "features": 4, "kind": "linear"})
        >>> [type(b).__name__ for b in m]
        ['Sequential', 'LinearBridge', 'Sequential']
    """
    if set(entry) != {"op", "container", "index", "features", "kind"}:
        raise ValueError(f"expected the keys op, container, index, features and kind, got {sorted(entry)}")
    container, index, features, kind = entry["container"], entry["index"], entry["features"], entry["kind"]
    if not isinstance(container, str):
        raise ValueError("'container' must be the name of a stack of blocks")
    stack = model.get_submodule(container)
    if not isinstance(stack, (nn.ModuleList, nn.Sequential)):
        raise ValueError(f"{container!r} is a {type(stack).__name__}, not a stack of blocks")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index <= len(stack):
        raise ValueError(f"'index' must be a position in [0, {len(stack)}]")
    # A bridge is no larger than a few times the blocks it stands among (its width is their features' width, which
    # may be a concatenation of their outputs: SqueezeNet's Fire, ShuffleNet's split): a file cannot make the
    # rebuild allocate more than that.
    params = sum(p.numel() for p in stack.parameters())
    widest = max((max(p.shape) for p in stack.parameters() if p.dim()), default=0)
    limit = int((4 * max(params, widest * widest)) ** 0.5)
    if not isinstance(features, int) or isinstance(features, bool) or not 1 <= features <= limit:
        raise ValueError(f"'features' must be a feature count in [1, {limit}] (a bridge at most 4x the size of the stack's blocks)")
    if kind not in BRIDGE_KINDS:
        raise ValueError(f"'kind' must be one of {list(BRIDGE_KINDS)}")
    # Bridges stand between kept blocks, one per run of removed ones: never two side by side.
    neighbours = [stack[i] for i in (index - 1, index) if 0 <= i < len(stack)]
    if any(isinstance(m, LinearBridge) for m in neighbours) or not any(True for _ in stack.children()):
        raise ValueError("a bridge must stand between blocks, not next to another bridge")
    ref = next(stack.parameters())
    with torch.device(ref.device):  # on the meta device when load checks shapes first: nothing is allocated
        bridge = LinearBridge(features, kind).to(dtype=ref.dtype)
    insert_into_stack(model, container, index, bridge)


def insert_into_stack(model: nn.Module, container: str, index: int, module: nn.Module) -> None:
    """Put ``module`` at position ``index`` of the stack ``container`` (numbered stacks renumbered; counts synced).

    Example:
        >>> m = nn.ModuleList([nn.Linear(2, 2)])
        >>> insert_into_stack(m, "", 0, nn.Identity()); [type(x).__name__ for x in m]
        ['Identity', 'Linear']
    """
    from .blocks import _sync_layer_counts  # the same rule as removal: configs count what the stack runs

    stack = model.get_submodule(container)
    children = list(stack._modules.items())
    old = len(children)
    numbered = isinstance(stack, nn.ModuleList) or [k for k, _ in children] == [str(i) for i in range(old)]
    if not numbered:
        taken = {k for k, _ in children}
        key = next(f"bridge{i}" for i in range(old + 1) if f"bridge{i}" not in taken)
    items = children[:index] + [(str(index) if numbered else key, module)] + children[index:]
    for k in list(stack._modules):
        del stack._modules[k]
    for i, (k, m) in enumerate(items):
        stack._modules[str(i) if numbered else k] = m
    _sync_layer_counts(model, old, old + 1)




Run = tuple[str, int, int]  # (stack, first removed position, last removed position), positions in the unpruned stack


def runs_of(removed: dict[str, list[int]]) -> list[Run]:
    """Runs of consecutive removed positions per stack, in stack order.

    Example:
        >>> runs_of({"layer": [1, 2, 4]})
        [('layer', 1, 2), ('layer', 4, 4)]
    """
    out: list[Run] = []
    for container in sorted(removed):
        positions = sorted(removed[container])
        start = prev = positions[0] if positions else None
        for p in positions[1:]:
            if p != prev + 1:  # type: ignore[operator]
                out.append((container, start, prev))  # type: ignore[arg-type]
                start = p
            prev = p
        if start is not None:
            out.append((container, start, prev))  # type: ignore[arg-type]
    return out


@torch.no_grad()
def fit_bridges(reference: nn.Module, runs: list[Run], batches: list[tuple[Any, ...]],
                max_bytes: int = 1 << 30) -> dict[Run, tuple[LinearBridge, float]]:
    """A bridge per run, fitted from the run's input to its output in ``reference`` (the unpruned model) on ``batches``.

    Returns ``{run: (bridge, relative error of the fit)}``; runs whose features no bridge maps
    (a block without a tensor input or output) are left out. Sums for at most ``max_bytes`` of
    runs are held at once (one pass over the batches per such chunk).

    Example:
        >>> class Block(nn.Module):
        ...     def __init__(self): super().__init__(); self.fc = nn.Linear(4, 4)
        ...     def forward(self, x): return x + self.fc(x)
        >>> m = nn.Sequential(*[Block() for _ in range(3)])
        >>> fits = fit_bridges(m, [("", 0, 1)], [(torch.randn(64, 4),)])
        >>> err = fits[("", 0, 1)][1]; err < 1e-4  # two linear blocks compose to a linear map
        True
    """
    from .blocks import _block_input, _first_tensor

    fits: dict[Run, tuple[LinearBridge, float]] = {}
    was_training = reference.training
    reference.eval()
    pending = list(runs)
    try:
        while pending:
            chunk: list[Run] = []
            used = 0
            for run in list(pending):
                block = reference.get_submodule(run[0])[run[1]]
                d = next((p.shape[1] for p in block.parameters() if p.dim() >= 2), 1024)  # a size estimate only
                cost = 2 * (d + 1) * (d + 1) * 8
                if chunk and used + cost > max_bytes:
                    break
                chunk.append(run)
                pending.remove(run)
                used += cost
            seen: dict[tuple[str, int, str], Tensor] = {}
            handles = []
            for container, first, last in chunk:
                stack = reference.get_submodule(container)

                def grab_in(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], key: tuple[str, int, str] = (container, first, "in")) -> None:
                    x = _block_input(args, kwargs)
                    if x is not None:
                        seen[key] = x

                def grab_out(_m: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], out: Any, key: tuple[str, int, str] = (container, last, "out")) -> None:
                    y = _first_tensor(out)
                    if y is not None:
                        seen[key] = y

                handles.append(stack[first].register_forward_pre_hook(grab_in, with_kwargs=True))
                handles.append(stack[last].register_forward_hook(grab_out, with_kwargs=True))
            stats: dict[Run, BridgeStats] = {}
            kinds: dict[Run, str] = {}
            try:
                for batch in batches:
                    seen.clear()
                    reference(*batch)
                    mask = batch_mask(batch)
                    for run in chunk:
                        x, y = seen.get((run[0], run[1], "in")), seen.get((run[0], run[2], "out"))
                        if x is None or y is None or x.shape != y.shape:
                            continue
                        kind = kinds.get(run) or bridge_kind(x, reference.get_submodule(run[0])[run[1]])
                        if kind is None:
                            continue
                        kinds[run] = kind
                        rows_x, rows_y = feature_rows(x, kind, mask), feature_rows(y, kind, mask)
                        stats.setdefault(run, BridgeStats(rows_x.shape[1])).add(rows_x, rows_y)
            finally:
                for h in handles:
                    h.remove()
            for run, s in stats.items():
                bridge = LinearBridge(s.xy.shape[1], kinds[run])
                ref = next(reference.get_submodule(run[0])[run[1]].parameters(), None)
                if ref is not None:
                    bridge = bridge.to(device=ref.device, dtype=ref.dtype)
                fits[run] = (bridge, s.fit_into(bridge))
    finally:
        reference.train(was_training)
    return fits


__all__ = ["BRIDGE_KINDS", "BridgeStats", "LinearBridge", "RIDGE", "Run", "bridge_kind", "feature_rows", "fit_bridges",
           "insert_into_stack", "merge_bridges", "replay_insert_bridge", "runs_of"]
