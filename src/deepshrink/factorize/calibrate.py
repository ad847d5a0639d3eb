"""What factorization measures on data: layer inputs, input covariances, and a loss to rank layers by.

Example:
    >>> import torch
    >>> from torch import nn
    >>> m = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    >>> ex = layer_examples(m, ["0", "2"], (torch.zeros(1, 3),))
    >>> tuple(ex["2"].shape)
    (1, 4)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data.bundle import DataBundle
from ..data.token_rows import batch_mask, real_rows
from .method import LayerData


def _device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _first_tensor(args: tuple[Any, ...]) -> Tensor | None:
    return next((a for a in args if isinstance(a, Tensor)), None)


@torch.no_grad()
def _run_with_hooks(model: nn.Module, names: Sequence[str], batches: Iterable[tuple[Any, ...]],
                    hook: Callable[[str, Tensor], None]) -> None:
    handles = []
    for name in names:
        def pre(_m: nn.Module, args: tuple[Any, ...], name: str = name) -> None:
            x = _first_tensor(args)
            if x is not None:
                hook(name, x.detach())
        handles.append(model.get_submodule(name).register_forward_pre_hook(pre))
    was_training = model.training
    model.eval()
    try:
        for inputs in batches:
            model(*inputs)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()


def layer_examples(model: nn.Module, names: Sequence[str], example_inputs: tuple[Any, ...]) -> dict[str, Tensor]:
    """Each named layer's first input when the model runs on ``example_inputs`` (used for MACs and latency).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> layer_examples(nn.Sequential(nn.Linear(2, 2)), ["0"], (torch.ones(1, 2),))["0"].tolist()
        [[1.0, 1.0]]
    """
    found: dict[str, Tensor] = {}

    def keep(name: str, x: Tensor) -> None:
        found.setdefault(name, x.clone())

    _run_with_hooks(model, names, [tuple(example_inputs)], keep)
    return found


def data_batches(model: nn.Module, data: DataBundle, split: str, count: int, batch_size: int = 64,
                 seed: int = 0, labels: bool = False) -> list[tuple[Any, ...]]:
    """Up to ``count`` items of a split as model-input batches (``(x,)``, or ``(ids, mask)`` for text).

    Items are a fixed random sample (``seed``) of the split. With ``labels``,
    classification batches are ``(x, y)`` pairs for computing the loss.

    Example:
        >>> import deepshrink as ds
        >>> d = ds.data.load("synthetic:classification:100")
        >>> m = ds.models.create("lenet300", in_features=64, num_classes=4)
        >>> [tuple(b[0].shape) for b in data_batches(m, d, "train", 10, batch_size=4)]
        [(4, 1, 8, 8), (4, 1, 8, 8), (2, 1, 8, 8)]
    """
    dataset = getattr(data, split)
    n = len(dataset)
    if n == 0:
        return []
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(n, generator=g)[: min(count, n)].tolist()
    device = _device(model)
    out: list[tuple[Any, ...]] = []
    if data.task == "text":
        tokenize = getattr(model, "tokenize", None)
        if not callable(tokenize):
            raise ValueError("text data needs a model with a tokenize(sentences) method (e.g. minilm)")
        sentences = sorted((dataset[i] for i in order), key=len)  # similar lengths together: little padding
        for i in range(0, len(sentences), batch_size):
            batch = tokenize(sentences[i : i + batch_size])
            out.append((batch["input_ids"].to(device), batch["attention_mask"].to(device)))
        return out
    for i in range(0, len(order), batch_size):
        items = [dataset[j] for j in order[i : i + batch_size]]
        x = torch.stack([torch.as_tensor(it[0]) for it in items]).to(device)
        if labels:
            y = torch.as_tensor([int(it[1]) for it in items]).to(device)
            out.append((x, y))
        else:
            out.append((x,))
    return out


def collect(model: nn.Module, covariance: Sequence[str], inputs: Sequence[str], batches: Sequence[tuple[Any, ...]],
            max_items: int) -> dict[str, LayerData]:
    """Input covariances (``E[x x^T]`` over all leading axes, float64) and up to ``max_items`` input maps per layer.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(2, 2))
        >>> collect(m, ["0"], [], [(torch.tensor([[1.0, 0.0], [1.0, 0.0]]),)], 8)["0"].covariance.tolist()
        [[1.0, 0.0], [0.0, 0.0]]
    """
    out: dict[str, LayerData] = {n: LayerData() for n in {*covariance, *inputs}}
    counts: dict[str, int] = {}
    cov_set, in_set = set(covariance), set(inputs)

    def hook(name: str, x: Tensor) -> None:
        data = out[name]
        if name in cov_set and x.is_floating_point():
            # Each batch's product in float32 (fast), summed across batches in float64 (accurate).
            flat = real_rows(x, mask[0]).float()  # text: real tokens only, padding is read by nothing
            gram = (flat.T @ flat).double()
            data.covariance = gram if data.covariance is None else data.covariance + gram
            counts[name] = counts.get(name, 0) + flat.shape[0]
        if name in in_set:
            have = 0 if data.inputs is None else data.inputs.shape[0]
            take = x[: max(0, max_items - have)]
            if take.shape[0]:
                data.inputs = take.clone() if data.inputs is None else torch.cat([data.inputs, take])

    mask: list[Tensor | None] = [None]  # the attention mask of the text batch being run

    def tracked() -> Iterator[tuple[Any, ...]]:
        for batch in batches:
            mask[0] = batch_mask(tuple(batch))
            yield batch

    _run_with_hooks(model, sorted(out), tracked(), hook)
    for name, n in counts.items():
        out[name].covariance = out[name].covariance / max(n, 1)
    return out


class LossProbe:
    """A model's loss on held-out data, for measuring how much factoring one layer hurts.

    Classification data: mean cross-entropy on validation items. Text data: one
    minus the mean cosine similarity of the sentence embeddings to those of the
    model as it was when the probe was made. Without data: the relative squared
    error of the outputs on the example inputs.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Linear(3, 2)
        >>> probe = LossProbe(m, None, (torch.randn(4, 3),), 16)
        >>> probe(m)
        0.0
    """

    def __init__(self, model: nn.Module, data: DataBundle | None, example_inputs: tuple[Any, ...] | None,
                 samples: int, seed: int = 0) -> None:
        self.kind = "output"
        self.batches: list[tuple[Any, ...]] = []
        if data is not None and data.task == "classification" and len(data.val) > 0:  # type: ignore[arg-type]
            self.kind = "cross_entropy"
            self.batches = data_batches(model, data, "val", samples, batch_size=256, seed=seed, labels=True)
        elif data is not None and data.task == "text" and len(data.val) > 0:  # type: ignore[arg-type]
            self.kind = "cosine"
            self.batches = data_batches(model, data, "val", samples, batch_size=64, seed=seed)
        elif example_inputs is not None:
            self.batches = [tuple(example_inputs)]
        else:
            raise ValueError("measuring sensitivity needs data (a validation split) or example inputs")
        self.reference = [self._outputs(model, b) for b in self.batches] if self.kind != "cross_entropy" else []

    @torch.no_grad()
    def _outputs(self, model: nn.Module, batch: tuple[Any, ...]) -> Tensor:
        out = model(*batch)
        return (out if isinstance(out, Tensor) else out[0]).float()

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> float:
        was_training = model.training
        model.eval()
        try:
            if self.kind == "cross_entropy":
                total, count = 0.0, 0
                for x, y in self.batches:
                    total += float(F.cross_entropy(model(x).float(), y, reduction="sum"))
                    count += int(y.numel())
                return total / max(count, 1)
            if self.kind == "cosine":
                cos = [F.cosine_similarity(self._outputs(model, b), ref, dim=-1) for b, ref in zip(self.batches, self.reference)]
                return float(1.0 - torch.cat(cos).mean())
            err = sum(float((self._outputs(model, b) - ref).pow(2).sum()) for b, ref in zip(self.batches, self.reference))
            norm = sum(float(ref.pow(2).sum()) for ref in self.reference)
            return err / max(norm, 1e-30)
        finally:
            model.train(was_training)


__all__ = ["LossProbe", "collect", "data_batches", "layer_examples"]
