"""Input activations for product quantization: calibration batches, layer order, per-position Gram matrices.

:class:`Calibration` runs a fixed set of calibration batches through the model
(eval mode, no gradients) with forward hooks. It finds the order in which
layers first run and which of them read the very same input tensor (attention's
query/key/value, a residual block's first conv and its shortcut): those form
one group, fitted together on one pass. :meth:`Calibration.grams` then
accumulates, for each layer of a group, the Gram matrix ``X_p^T X_p`` of its
input restricted to each block position ``p``. For text models, padding tokens
are left out (their rows never reach the sentence embedding).

Example:
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> cal = Calibration(model, calibration_batches(model, torch.randn(10, 4), samples=10, batch_size=5, seed=0))
    >>> [len(g) for g in cal.plan([model[0], model[2]])]
    [1, 1]
    >>> cal.grams([model[0]], [2])[id(model[0])].shape
    torch.Size([2, 2, 2])
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import Dataset

from ..errors import ConfigError
from ..data.token_rows import real_rows


@dataclass(frozen=True)
class Batch:
    """Positional arguments of one forward call, and the token mask of text batches (else None)."""

    args: tuple[Tensor, ...]
    mask: Tensor | None = None


def _pick(n: int, samples: int, seed: int) -> list[int]:
    if n == 0:
        raise ConfigError("data", "empty", "at least one calibration item", "ProductQuantization")
    gen = torch.Generator().manual_seed(seed)
    # Random order, not sorted: data sets are often grouped by class (stratified splits, image folders), and
    # batches of neighbouring items would each hold one class, which biases per-batch statistics (batch-norm
    # variances) even when the whole sample is balanced.
    return torch.randperm(n, generator=gen)[: min(samples, n)].tolist()


def _sentence_batches(model: nn.Module, sentences: Sequence[str], batch_size: int) -> list[Batch]:
    tokenize = getattr(model, "tokenize", None)
    if not callable(tokenize):
        raise ConfigError("data", "sentences", "a model with a tokenize(sentences) method (e.g. minilm) for text data",
                          "ProductQuantization")
    out = []
    for s in range(0, len(sentences), batch_size):
        tokens = tokenize(list(sentences[s : s + batch_size]))
        out.append(Batch((tokens["input_ids"], tokens["attention_mask"]), tokens["attention_mask"]))
    return out


def calibration_batches(model: nn.Module, data: Any, samples: int, batch_size: int, seed: int) -> list[Batch]:
    """Up to ``samples`` items drawn (seeded) from ``data``, batched for forward passes.

    ``data``: a DataBundle (its training split), a Dataset of ``(input, label)``
    pairs, inputs or sentences, a tensor of inputs, or a list of sentences.

    Example:
        >>> [b.args[0].shape[0] for b in calibration_batches(nn.Linear(3, 1), torch.zeros(5, 3), 4, 3, 0)]
        [3, 1]
    """
    from ..data.bundle import DataBundle

    if isinstance(data, DataBundle):
        data = data.train
    if isinstance(data, Tensor):
        idx = torch.tensor(_pick(data.shape[0], samples, seed))
        chosen = data[idx]
        return [Batch((chosen[s : s + batch_size],)) for s in range(0, chosen.shape[0], batch_size)]
    if isinstance(data, (list, tuple)) and data and all(isinstance(s, str) for s in data):
        return _sentence_batches(model, [data[i] for i in _pick(len(data), samples, seed)], batch_size)
    if isinstance(data, Dataset) and hasattr(data, "__len__"):
        idx = _pick(len(data), samples, seed)  # type: ignore[arg-type]
        items = [data[i] for i in idx]
        if all(isinstance(it, str) for it in items):
            return _sentence_batches(model, items, batch_size)
        inputs = [it[0] if isinstance(it, (tuple, list)) else it for it in items]
        if not all(isinstance(x, Tensor) for x in inputs):
            raise ConfigError("data", type(data).__name__, "a Dataset of tensors, (tensor, label) pairs or sentences",
                              "ProductQuantization")
        stacked = torch.stack(inputs)
        return [Batch((stacked[s : s + batch_size],)) for s in range(0, stacked.shape[0], batch_size)]
    raise ConfigError("data", type(data).__name__, "a DataBundle, a Dataset, a tensor of inputs or a list of sentences",
                      "ProductQuantization")


class _Stop(BaseException):
    """Raised by a hook to end a forward pass once every layer of interest has run."""


def _rows(x: Tensor, mask: Tensor | None) -> Tensor:
    """A linear layer's input as ``(rows, features)``, without the padding tokens of a text batch."""
    return real_rows(x, None if mask is None else mask.bool())


def _patches(conv: nn.Module, x: Tensor) -> Tensor:
    """A 1-D or 2-D conv's input unfolded to ``(batch, Cin*K*K, locations)``, in the weight's row order."""
    if isinstance(conv, nn.Conv1d):
        x = x.unsqueeze(-2)
    pad = list(getattr(conv, "_reversed_padding_repeated_twice"))
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode  # type: ignore[attr-defined]
    if any(pad):
        if isinstance(conv, nn.Conv1d):
            pad = pad[:2]
        x = F.pad(x, pad, mode=mode)
    two = (lambda v: (1, v[0])) if isinstance(conv, nn.Conv1d) else (lambda v: tuple(v))
    return F.unfold(x, two(conv.kernel_size), dilation=two(conv.dilation), stride=two(conv.stride))  # type: ignore[attr-defined]


def block_gram(module: nn.Module, x: Tensor, d: int, mask: Tensor | None = None) -> Tensor:
    """``sum X_p^T X_p`` over the rows of one input batch, per block position: ``(groups*m, d, d)`` float64.

    Example:
        >>> x = torch.ones(3, 4)
        >>> block_gram(nn.Linear(4, 1), x, 2)[0].tolist()
        [[3.0, 3.0], [3.0, 3.0]]
    """
    if isinstance(module, nn.Linear):
        rows = _rows(x, mask)
        m = rows.shape[1] // d
        cols = rows.reshape(-1, m, d).permute(1, 2, 0)  # (m, d, rows)
    else:
        patches = _patches(module, x)  # (B, groups*row, L)
        B, F_, L = patches.shape
        cols = patches.reshape(B, F_ // d, d, L).permute(1, 2, 0, 3).reshape(F_ // d, d, B * L)
    cols = cols.float() if cols.dtype not in (torch.float32, torch.float64) else cols
    return torch.bmm(cols, cols.transpose(1, 2)).to(torch.float64)


class Calibration:
    """Calibration batches and the hooks that order layers and gather their input statistics.

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 2))
        >>> len(Calibration(m, [Batch((torch.zeros(1, 2),))]).batches)
        1
    """

    def __init__(self, model: nn.Module, batches: list[Batch]) -> None:
        if not batches:
            raise ConfigError("data", "empty", "at least one calibration batch", "ProductQuantization")
        self.model = model
        self.batches = batches
        self._mask: Tensor | None = None
        self._calls: dict[int, int] = {}

    def _run(self, hooks: dict[nn.Module, Any], batches: list[Batch]) -> None:
        handles = [m.register_forward_hook(fn) for m, fn in hooks.items()]
        was_training = self.model.training
        self.model.eval()
        try:
            device = next(self.model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
        try:
            with torch.no_grad():
                for batch in batches:
                    self._mask = batch.mask
                    try:
                        self.model(*(a.to(device) for a in batch.args))
                    except _Stop:
                        pass
        finally:
            self._mask = None
            for h in handles:
                h.remove()
            self.model.train(was_training)

    def plan(self, modules: Sequence[nn.Module]) -> list[list[nn.Module]]:
        """Groups of ``modules`` in the order their layers first run; a group's layers read the same input.

        Layers no calibration batch reaches come last, as one group.
        """
        first: dict[int, tuple[int, int]] = {}  # module id -> (call order, input id)
        keep: list[Tensor] = []  # holds the inputs alive, so that ids are not reused within the pass
        calls: dict[int, int] = {}

        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            calls[id(module)] = calls.get(id(module), 0) + 1
            if id(module) not in first and inputs and isinstance(inputs[0], Tensor):
                keep.append(inputs[0])
                first[id(module)] = (len(first), id(inputs[0]))

        self._run({m: hook for m in modules}, self.batches[:1])
        self._calls = calls
        reached = sorted((m for m in modules if id(m) in first), key=lambda m: first[id(m)][0])
        groups: list[list[nn.Module]] = []
        done: set[int] = set()
        for m in reached:
            if id(m) in done:
                continue
            group = [o for o in reached if id(o) not in done and first[id(o)][1] == first[id(m)][1]]
            done.update(id(o) for o in group)
            groups.append(group)
        unreached = [m for m in modules if id(m) not in first]
        if unreached:
            groups.append(unreached)
        del keep
        return groups

    def token_counts(self, embeddings: Sequence[nn.Module]) -> dict[int, Tensor]:
        """How often each row of each embedding is looked up (padding tokens left out)."""
        counts = {id(e): torch.zeros(int(e.weight.shape[0]), dtype=torch.float64) for e in embeddings}

        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            ids = inputs[0]
            if self._mask is not None and tuple(ids.shape) == tuple(self._mask.shape):
                ids = ids[self._mask.to(ids.device).bool()]
            counts[id(module)] += torch.bincount(ids.reshape(-1).cpu(), minlength=counts[id(module)].numel()).to(torch.float64)

        self._run({e: hook for e in embeddings}, self.batches)
        return counts

    def grams(self, modules: Sequence[nn.Module], block_sizes: Sequence[int]) -> dict[int, Tensor]:
        """Per-position Gram matrices of each module's input over all batches (module id -> (P, d, d)).

        A module that no batch reaches has no entry. A pass stops early once
        every module of the group has run, when each runs once per forward.
        """
        sums: dict[int, Tensor] = {}
        seen: set[int] = set()
        sizes = {id(m): d for m, d in zip(modules, block_sizes)}
        single = all(self._calls.get(id(m), 0) == 1 for m in modules)

        def hook(module: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            g = block_gram(module, inputs[0].detach(), sizes[id(module)], self._mask).cpu()
            sums[id(module)] = sums[id(module)] + g if id(module) in sums else g
            seen.add(id(module))
            if single and len(seen) == len(modules):
                raise _Stop

        for batch in self.batches:
            seen.clear()
            self._run({m: hook for m in modules}, [batch])
        return sums


__all__ = ["Batch", "Calibration", "block_gram", "calibration_batches"]
