"""A model's per-layer summary: parameters, nonzeros, fp32 bytes and MACs, as a table and as JSON.

Example:
    >>> import torch
    >>> from torch import nn
    >>> s = summarize(nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2)), (torch.zeros(1, 4),))
    >>> s.params, s.macs, [r.name for r in s.layers]
    (23, 18, ['0', '2'])
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from rich.table import Table
from torch import Tensor, nn

from .macs import WEIGHTED_LAYERS, _as_tuple, count_macs
from .stats import layer_stats


@dataclass(frozen=True)
class LayerRow:
    """One layer of a :class:`ModelSummary`: its own tensors and the MACs charged to it.

    ``nonzero_macs`` scales the MACs of a Linear or ConvNd layer by the nonzero
    fraction of its weight (exact: every weight is used once per output
    position); other layers keep their dense MACs.

    Example:
        >>> LayerRow("fc", "Linear", 6, 3, 24, 12, 6).sparsity
        0.5
    """

    name: str
    kind: str
    params: int
    nonzeros: int
    dense_bytes: int
    macs: int
    nonzero_macs: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzeros / self.params if self.params else 0.0


@dataclass(frozen=True)
class ModelSummary:
    """Per-layer rows and totals; ``to_dict()`` is JSON-safe, ``table()`` is a rich Table.

    Example:
        >>> import torch, json
        >>> from torch import nn
        >>> s = summarize(nn.Linear(2, 2), (torch.zeros(1, 2),))
        >>> json.loads(json.dumps(s.to_dict()))["totals"]["params"]
        6
    """

    layers: tuple[LayerRow, ...]
    input_shapes: tuple[tuple[int, ...], ...] = field(default=())

    @property
    def params(self) -> int:
        return sum(r.params for r in self.layers)

    @property
    def nonzeros(self) -> int:
        return sum(r.nonzeros for r in self.layers)

    @property
    def dense_bytes(self) -> int:
        return sum(r.dense_bytes for r in self.layers)

    @property
    def macs(self) -> int:
        return sum(r.macs for r in self.layers)

    @property
    def nonzero_macs(self) -> int:
        return sum(r.nonzero_macs for r in self.layers)

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzeros / self.params if self.params else 0.0

    def totals(self) -> dict[str, Any]:
        """The whole model's figures.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> summarize(nn.Linear(2, 2), (torch.zeros(1, 2),)).totals()["dense_bytes"]
            24
        """
        return {
            "params": self.params,
            "nonzeros": self.nonzeros,
            "sparsity": self.sparsity,
            "dense_bytes": self.dense_bytes,
            "macs": self.macs,
            "nonzero_macs": self.nonzero_macs,
        }

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: ``{"inputs": [...shapes], "layers": [...], "totals": {...}}``.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> summarize(nn.Linear(2, 2), (torch.zeros(1, 2),)).to_dict()["inputs"]
            [[1, 2]]
        """
        layers = [dict(asdict(r), sparsity=r.sparsity) for r in self.layers]
        return {"inputs": [list(s) for s in self.input_shapes], "layers": layers, "totals": self.totals()}

    def table(self, title: str | None = "Model summary") -> Table:
        """A rich Table with one row per layer and a total row.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> summarize(nn.Linear(2, 2), (torch.zeros(1, 2),)).table().row_count
            2
        """
        table = Table(title=title, show_footer=False)
        for header, justify in (
            ("layer", "left"),
            ("type", "left"),
            ("params", "right"),
            ("nonzeros", "right"),
            ("sparsity", "right"),
            ("fp32 bytes", "right"),
            ("MACs", "right"),
        ):
            # Layer names fold rather than being cut: the name is what a reader looks for.
            overflow = "fold" if header == "layer" else "ellipsis"
            table.add_column(header, justify=justify, overflow=overflow, no_wrap=header != "layer")  # type: ignore[arg-type]
        for r in self.layers:
            table.add_row(
                r.name or "(model)", r.kind, f"{r.params:,}", f"{r.nonzeros:,}", f"{r.sparsity:.1%}",
                f"{r.dense_bytes:,}", f"{r.macs:,}",
            )
        table.add_row(
            "total", "", f"{self.params:,}", f"{self.nonzeros:,}", f"{self.sparsity:.1%}",
            f"{self.dense_bytes:,}", f"{self.macs:,}", style="bold", end_section=True,
        )
        return table

    def __str__(self) -> str:
        return (
            f"{self.params:,} parameters ({self.nonzeros:,} nonzero, {self.sparsity:.1%} sparse), "
            f"{self.dense_bytes:,} fp32 bytes, {self.macs:,} MACs per forward"
        )


def summarize(model: nn.Module, example_inputs: Any) -> ModelSummary:
    """Count parameters, nonzeros, fp32 bytes and MACs (one forward on ``example_inputs``) per layer.

    Rows are the modules that own parameters or run MACs, in module order.
    MACs are for the whole example batch: pass a batch of one for per-sample figures.

    Example:
        >>> import deepshrink as ds
        >>> model = ds.models.create("lenet5")
        >>> s = summarize(model, ds.models.example_inputs(model))
        >>> s.params, s.macs
        (431080, 2293000)
    """
    inputs = _as_tuple(example_inputs)
    stats = {s.name: s for s in layer_stats(model)}
    macs = count_macs(model, inputs)
    modules = dict(model.named_modules())
    names = [n for n in modules if n in stats or n in macs] + sorted((set(stats) | set(macs)) - set(modules))
    rows = []
    for name in names:
        s = stats.get(name)
        module = modules.get(name)
        m = macs.get(name, 0)
        nonzero_macs = m
        if s is not None and isinstance(module, WEIGHTED_LAYERS):
            with torch.no_grad():
                weight = getattr(module, "weight", None)
                if isinstance(weight, Tensor) and weight.numel():
                    nonzero_macs = m * int(weight.count_nonzero()) // weight.numel()
        rows.append(
            LayerRow(
                name=name,
                kind=type(module).__name__ if module is not None else "",
                params=s.params if s else 0,
                nonzeros=s.nonzeros if s else 0,
                dense_bytes=s.dense_bytes if s else 0,
                macs=m,
                nonzero_macs=nonzero_macs,
            )
        )
    shapes = tuple(tuple(int(d) for d in x.shape) for x in inputs if isinstance(x, Tensor))
    return ModelSummary(tuple(rows), shapes)
