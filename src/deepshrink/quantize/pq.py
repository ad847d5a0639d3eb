"""Product quantization (Stock et al. 2019, "And the Bit Goes Down"): ``quantize_(model, ProductQuantization(...), data=...)``.

Each selected layer's weight is cut into sub-vectors of ``d`` consecutive
elements of an output's row (a conv's ``d`` kernel positions of one input
channel, or whole channels' ``K*K`` positions; a linear layer's ``d``
consecutive inputs; an embedding row's ``d`` consecutive dimensions), and every
sub-vector is replaced by one of ``k`` centroids learned for that layer. The
layer then holds ``k * d`` numbers and one byte per sub-vector.

Centroids are learned by EM (:mod:`.pq_em`) on the *output* objective: the
error each sub-vector adds to the layer's output on real input activations.
Layers are quantized from the bottom up, each one fitted on the activations
that the already-quantized layers below it produce (layers that read the same
input, such as attention's query/key/value, are fitted together). An embedding
has no input activations: its rows are clustered by plain k-means weighted by
how often each token occurs in the calibration data.

The result lives in the model as a :class:`ProductQuantized` parametrization
(``weight = codebook[codes]``): the codebook is an ``nn.Parameter`` and the
codes a ``uint8`` buffer, so fine-tuning (with the uncompressed model as
teacher, the recipe's ``distill``) trains the codebooks only. Codebooks are
rounded to float16 in the forward pass, so what trains is what is saved. The
.dsz writer recognises the structure and stores codebook + one byte per code
(:mod:`deepshrink.codec.pq_codec`).

Example:
    >>> import torch, deepshrink as ds
    >>> model = ds.models.create("lenet300")
    >>> x = torch.rand(64, 784)
    >>> report = ds.quantize_(model, ds.ProductQuantization(block_size=4, k=16, n_iter=5, progress=False), data=x)
    >>> model.fc1.weight.detach().reshape(-1, 4).unique(dim=0).shape[0] <= 16
    True
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..config import Config, check_choice, check_range, check_type, register_config
from ..dispatch import Report, quantize_
from ..errors import ConfigError
from ..progress import StepProgress
from ..prune.magnitude import matches
from .pq_calibrate import Calibration, calibration_batches
from .pq_em import EMResult, blocks_to_flat, pq_em, weight_blocks

MAX_K = 256  # codes are one byte each
KINDS = ("linear", "conv", "pointwise", "embedding")
OBJECTIVES = ("output", "weight")
CODEBOOK_DTYPES = ("float16", "float32")
_TORCH_DTYPES = {"float16": torch.float16, "float32": torch.float32}


class ProductQuantized(nn.Module):
    """Parametrization ``weight = codebook[codes].reshape(shape)``; the original is ignored.

    ``codes[i]`` is the centroid of flat elements ``i*d .. i*d+d-1`` of the
    weight. With ``storage=torch.float16`` the codebook is rounded to half
    precision in the forward pass (its gradient passes straight through), so the
    effective weight is exactly what a float16 codebook stores.

    Example:
        >>> p = ProductQuantized(torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([1, 0, 1]), (3, 2))
        >>> p(torch.zeros(3, 2)).tolist()
        [[3.0, 4.0], [1.0, 2.0], [3.0, 4.0]]
    """

    def __init__(self, codebook: Tensor, codes: Tensor, shape: Sequence[int], storage: torch.dtype | None = None) -> None:
        super().__init__()
        if codebook.dim() != 2 or codebook.shape[0] > MAX_K:
            raise ValueError(f"codebook must be (k <= {MAX_K}, d); got {tuple(codebook.shape)}")
        if codes.numel() * codebook.shape[1] != torch.Size(shape).numel():
            raise ValueError(f"{codes.numel()} codes of {codebook.shape[1]} values do not fill a weight of shape {tuple(shape)}")
        self.codebook = nn.Parameter(codebook.detach().clone())
        self.register_buffer("codes", codes.detach().to(torch.uint8).reshape(-1).clone())
        self.shape = tuple(int(s) for s in shape)
        self.storage = storage

    @property
    def k(self) -> int:
        return int(self.codebook.shape[0])

    @property
    def block_size(self) -> int:
        return int(self.codebook.shape[1])

    def stored_codebook(self) -> Tensor:
        """The codebook as the file stores it (rounded to ``storage``), still differentiable."""
        if self.storage is None or self.storage == self.codebook.dtype:
            return self.codebook
        return self.codebook.to(self.storage).to(self.codebook.dtype)

    def forward(self, original: Tensor) -> Tensor:
        # embedding() rather than indexing: uint8 indices would be read as a mask, and its backward is a fast scatter-add.
        return F.embedding(self.codes.to(torch.int32), self.stored_codebook()).reshape(self.shape)


def get_pq(module: nn.Module, name: str = "weight") -> ProductQuantized | None:
    """The :class:`ProductQuantized` parametrization of ``module.<name>``, or None.

    Example:
        >>> get_pq(nn.Linear(2, 2)) is None
        True
    """
    if not parametrize.is_parametrized(module, name):
        return None
    for p in module.parametrizations[name]:  # type: ignore[index]
        if isinstance(p, ProductQuantized):
            return p
    return None


def pq_kind(module: nn.Module) -> str | None:
    """``"linear"``, ``"conv"`` (kernel larger than 1), ``"pointwise"`` (1x1 conv), ``"embedding"`` or None.

    Example:
        >>> pq_kind(nn.Conv2d(4, 4, 1)), pq_kind(nn.Conv2d(4, 4, 3)), pq_kind(nn.ReLU())
        ('pointwise', 'conv', None)
    """
    if isinstance(module, nn.Linear):
        return "linear"
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return "pointwise" if all(s == 1 for s in module.kernel_size) else "conv"
    if isinstance(module, nn.Embedding):
        return "embedding"
    return None


def default_block_size(module: nn.Module) -> int:
    """The paper's block size: ``K*K`` for a KxK conv, 4 for a 1x1 conv, a linear layer or an embedding.

    Example:
        >>> default_block_size(nn.Conv2d(8, 8, 3)), default_block_size(nn.Linear(8, 8))
        (9, 4)
    """
    if pq_kind(module) == "conv":
        return int(torch.Size(module.kernel_size).numel())  # type: ignore[attr-defined]
    return 4


@register_config("product_quantization")
@dataclass(frozen=True)
class ProductQuantization(Config):
    """Product quantization with a k-centroid codebook per layer, learned on the layer's output.

    Fields:
        block_size: ``d``, the length of a sub-vector. None: the paper's sizes
            (``K*K`` for a KxK conv, 4 for 1x1 convs, linear layers and
            embeddings); an integer for every layer; or a mapping whose keys
            are layer kinds (``"conv"``, ``"pointwise"``, ``"linear"``,
            ``"embedding"``) or fnmatch patterns on layer names (first match
            wins; layers no key matches take the paper's size). It must divide
            the length of a layer's rows (a conv's ``Cin/groups*K*K``); where it
            does not, the largest smaller size that does is used (the report
            says which), and a layer with no such size from 2 up is skipped.
        k: centroids per layer, at most 256 (codes are one byte).
        n_iter: the most EM iterations per layer (stops when no code changes).
        objective: ``"output"`` (error of the layer's output on real
            activations, the paper) or ``"weight"`` (plain k-means on the weights).
        samples: how many training items (images, sentences) feed the activations.
        batch_size: items per forward pass while collecting activations.
        damping: added to the activations' Gram matrices, as a fraction of
            their mean diagonal, so that inputs that never fire stay near k-means.
        codebook_dtype: ``"float16"`` (as the paper stores them) or ``"float32"``.
        train_others: when False (the paper), every parameter other than the
            codebooks stops requiring gradients, so fine-tuning updates only the codebooks.
        include, exclude: fnmatch patterns selecting layers by qualified name.
        layer_types: which kinds of layer to quantize (``linear``, ``conv``, ``embedding``).
        seed: seed of the random centroid start and of the calibration sample.
        progress: show a progress bar over the layers.

    Example:
        >>> cfg = ProductQuantization(block_size={"linear": 8}, k=256)
        >>> cfg.block_size_for("fc1", nn.Linear(16, 4)), cfg.block_size_for("c", nn.Conv2d(1, 1, 3))
        (8, 9)
        >>> ProductQuantization(k=1000)
        Traceback (most recent call last):
        ...
        deepshrink.errors.ConfigError: ProductQuantization.k=1000 is invalid: expected an integer in [2, 256]
    """

    block_size: int | dict[str, int] | None = None
    k: int = 256
    n_iter: int = 100
    objective: str = "output"
    samples: int = 512
    batch_size: int = 64
    damping: float = 0.01
    codebook_dtype: str = "float16"
    train_others: bool = False
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    layer_types: tuple[str, ...] = ("linear", "conv", "embedding")
    seed: int = 0
    progress: bool = True

    def validate(self) -> None:
        allowed = "null (the paper's sizes), an integer >= 1, or a mapping of layer kind or name pattern to such an integer"

        def ok(b: object) -> bool:
            return isinstance(b, int) and not isinstance(b, bool) and b >= 1

        if isinstance(self.block_size, Mapping):
            if not self.block_size or not all(isinstance(key, str) and ok(v) for key, v in self.block_size.items()):
                raise ConfigError("block_size", self.block_size, allowed, "ProductQuantization")
        elif self.block_size is not None and not ok(self.block_size):
            raise ConfigError("block_size", self.block_size, allowed, "ProductQuantization")
        check_range(self, "k", 2, MAX_K, integer=True)
        check_range(self, "n_iter", 0, None, integer=True)
        check_choice(self, "objective", OBJECTIVES)
        check_range(self, "samples", 1, None, integer=True)
        check_range(self, "batch_size", 1, None, integer=True)
        check_range(self, "damping", 0, None, lo_open=True)
        check_choice(self, "codebook_dtype", CODEBOOK_DTYPES)
        check_type(self, "train_others", bool, "true or false")
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(p, str) for p in value):
                raise ConfigError(name, value, "a list of layer-name patterns such as ['fc*']", "ProductQuantization")
        types = ("linear", "conv", "embedding")
        if isinstance(self.layer_types, str) or not self.layer_types or any(t not in types for t in self.layer_types):
            raise ConfigError("layer_types", self.layer_types, "a non-empty list drawn from " + ", ".join(types), "ProductQuantization")
        check_range(self, "seed", 0, 2**63 - 1, integer=True)
        check_type(self, "progress", bool, "true or false")

    def block_size_for(self, name: str, module: nn.Module) -> int:
        """``d`` for the layer ``name``: the first key of a mapping that matches it, else the paper's size.

        Example:
            >>> ProductQuantization(block_size={"fc3": 2, "linear": 4}).block_size_for("fc3", nn.Linear(4, 2))
            2
        """
        if self.block_size is None:
            return default_block_size(module)
        if not isinstance(self.block_size, Mapping):
            return int(self.block_size)
        kind = pq_kind(module)
        for key, value in self.block_size.items():
            if key in KINDS:
                # "conv" covers 1x1 convs too unless the mapping names "pointwise" itself.
                hit = key == kind or (key == "conv" and kind == "pointwise" and "pointwise" not in self.block_size)
            else:
                hit = matches(name, [key])
            if hit:
                return int(value)
        return default_block_size(module)


@dataclass
class _Target:
    name: str
    module: nn.Module
    kind: str
    d: int
    groups: int


def _select(model: nn.Module, cfg: ProductQuantization, report: Report) -> list[_Target]:
    targets: list[_Target] = []
    seen: set[int] = set()
    for qual, module in model.named_modules():
        kind = pq_kind(module)
        if kind is None or getattr(module, "weight", None) is None:
            continue
        label = f"{qual}.weight" if qual else "weight"
        base_kind = "conv" if kind == "pointwise" else kind
        if base_kind not in cfg.layer_types or (cfg.include and not matches(qual, cfg.include)):
            continue
        if cfg.exclude and matches(qual, cfg.exclude):
            report.skipped[label] = "excluded by pattern"
            continue
        if isinstance(module, nn.Conv3d):
            report.skipped[label] = "3-D convolutions are not supported by product quantization"
            continue
        d = cfg.block_size_for(qual, module)
        if parametrize.is_parametrized(module, "weight"):
            report.skipped[label] = "already parametrized (pruned, shared or quantized); fold it first"
            continue
        if id(module.weight) in seen:
            report.skipped[label] = "tied to a layer already quantized"
            continue
        weight = module.weight
        groups = int(getattr(module, "groups", 1))
        row = weight[0].numel() if weight.shape[0] else 0
        if row % d != 0:
            # The nearest smaller block that tiles the rows (e.g. 5 for rows of 500 when 8 is asked).
            d = next((c for c in range(d - 1, 1, -1) if row % c == 0), 0)
            if d == 0:
                report.skipped[label] = f"no block size from 2 to {cfg.block_size_for(qual, module)} divides the row length {row}"
                continue
        n_sub = weight.numel() // d
        if n_sub <= cfg.k:
            report.skipped[label] = f"only {n_sub} sub-vectors for {cfg.k} centroids: the codebook would be larger than the layer"
            continue
        seen.add(id(module.weight))
        targets.append(_Target(qual, module, kind, d, groups))
    return targets


def _install(target: _Target, result: EMResult, storage: torch.dtype | None) -> None:
    weight = target.module.weight
    codes = blocks_to_flat(result.codes, target.groups if target.kind != "embedding" else 1)
    codebook = result.codebook.to(device=weight.device, dtype=weight.dtype)
    p = ProductQuantized(codebook, codes.to(weight.device), weight.shape, storage)
    parametrize.register_parametrization(target.module, "weight", p, unsafe=True)
    target.module.parametrizations["weight"].original.requires_grad_(False)  # type: ignore[index]


def _fit(target: _Target, cfg: ProductQuantization, grams: Tensor | None, row_weights: Tensor | None) -> EMResult:
    weight = target.module.weight.detach().to("cpu", torch.float64)
    groups = 1 if target.kind == "embedding" else target.groups
    blocks = weight_blocks(weight, target.d, groups)
    return pq_em(blocks, grams, k=cfg.k, n_iter=cfg.n_iter, weights=row_weights, damping=cfg.damping, seed=cfg.seed)


@quantize_.register(ProductQuantization)
def product_quantize(model: nn.Module, cfg: ProductQuantization, *, data: Any = None, **_: Any) -> Report:
    """Handler of ``quantize_`` for :class:`ProductQuantization`.

    ``data`` is what the activations come from: a DataBundle (its training
    split), a Dataset, a tensor of inputs, or a list of sentences (text models).
    ``objective="weight"`` needs no data.

    Example:
        >>> import torch, deepshrink as ds
        >>> m = ds.models.create("lenet5")
        >>> r = product_quantize(m, ProductQuantization(k=32, n_iter=3, progress=False), data=torch.rand(16, 1, 28, 28))
        >>> r.changed, sorted(r.skipped)
        (['conv2.weight', 'fc1.weight', 'fc2.weight'], ['conv1.weight'])
    """
    report = Report(method="product_quantization")
    targets = _select(model, cfg, report)
    if cfg.objective == "output" and data is None and any(t.kind != "embedding" for t in targets):
        raise ConfigError("data", None, "calibration inputs for objective='output' (a DataBundle, Dataset, tensor or "
                          "sentences), or objective='weight' for plain k-means on the weights", "ProductQuantization")
    storage = _TORCH_DTYPES[cfg.codebook_dtype]
    started = time.perf_counter()
    calibration = None
    if data is not None and targets and cfg.objective == "output":
        calibration = Calibration(model, calibration_batches(model, data, cfg.samples, cfg.batch_size, cfg.seed))
    with StepProgress(cfg.progress, len(targets), "pq") as bar:
        if calibration is None:
            for t in targets:
                bar.start(t.name)
                result = _fit(t, cfg, None, None)
                _record(report, t, result, "weight", 0.0)
                _install(t, result, storage)
                bar.done()
        else:
            # Embeddings: token counts do not depend on the layers above them; one pass serves all.
            embeddings = [t for t in targets if t.kind == "embedding"]
            counts = calibration.token_counts([t.module for t in embeddings]) if embeddings else {}
            for t in embeddings:
                bar.start(t.name)
                # +1: tokens never seen in the calibration text still count, as in plain k-means.
                freq = counts[id(t.module)].to(torch.float64) + 1.0
                result = _fit(t, cfg, None, freq)
                _record(report, t, result, "weight (token-frequency weighted)", 0.0)
                _install(t, result, storage)
                bar.done()
            pending = [t for t in targets if t.kind != "embedding"]
            by_module = {id(t.module): t for t in pending}
            # Bottom up: each group (layers reading the same input) is fitted on what the quantized layers below produce.
            for group in calibration.plan([t.module for t in pending]) if pending else []:
                members = [by_module[id(m)] for m in group]
                t0 = time.perf_counter()
                grams = calibration.grams(group, [t.d for t in members])
                collect = (time.perf_counter() - t0) / len(members)
                for t in members:
                    bar.start(t.name)
                    g = grams.get(id(t.module))
                    result = _fit(t, cfg, g, None)
                    _record(report, t, result, "output" if g is not None else "weight (no activations reached the layer)", collect)
                    _install(t, result, storage)
                    bar.done()
    if not cfg.train_others:
        codebook_ids = {id(p) for m in model.modules() if (q := get_pq(m)) is not None for p in [q.codebook]}
        for p in model.parameters():
            if id(p) not in codebook_ids:
                p.requires_grad_(False)
    report.figures["layers"] = len(report.changed)
    report.figures["quantized_weights"] = sum(v["numel"] for v in report.per_layer.values())
    report.figures["seconds"] = time.perf_counter() - started
    return report


def _record(report: Report, t: _Target, result: EMResult, objective: str, collect_seconds: float) -> None:
    label = f"{t.name}.weight" if t.name else "weight"
    numel = t.module.weight.numel()
    report.changed.append(label)
    report.per_layer[label] = {
        "kind": t.kind,
        "block_size": t.d,
        "k": int(result.codebook.shape[0]),
        "numel": numel,
        "sub_vectors": numel // t.d,
        "objective": objective,
        "iterations": result.iterations,
        "converged": result.converged,
        "relative_error": result.relative_error,
        "relative_error_first": result.history[0] / result.total if result.history and result.total > 0 else 0.0,
        "activation_seconds": collect_seconds,
    }


def pq_codebooks(model: nn.Module) -> dict[str, tuple[Tensor, Tensor]]:
    """``{"module.weight": (codebook, codes)}`` of every product-quantized tensor.

    Example:
        >>> pq_codebooks(nn.Linear(2, 2))
        {}
    """
    out: dict[str, tuple[Tensor, Tensor]] = {}
    for qual, module in model.named_modules():
        p = get_pq(module)
        if p is not None:
            out[f"{qual}.weight" if qual else "weight"] = (p.codebook.detach(), p.codes)
    return out


def fold_pq(model: nn.Module) -> int:
    """Replace every product-quantized weight by a plain parameter with its effective value; returns the count.

    Example:
        >>> import torch, deepshrink as ds
        >>> m = ds.models.create("lenet300")
        >>> _ = ds.quantize_(m, ProductQuantization(k=4, n_iter=2, objective="weight", progress=False))
        >>> fold_pq(m), type(m.fc1.weight).__name__
        (3, 'Parameter')
    """
    found = [m for m in model.modules() if get_pq(m) is not None]
    for module in found:
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        module.weight.requires_grad_(True)
    return len(found)


__all__ = [
    "ProductQuantization",
    "ProductQuantized",
    "default_block_size",
    "fold_pq",
    "get_pq",
    "pq_codebooks",
    "pq_kind",
    "product_quantize",
]
