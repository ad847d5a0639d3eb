"""Weight sharing (Deep Compression): each layer's nonzero weights take one of 2**bits shared values.

``share_(model, KMeansSharing(bits=...))`` clusters every selected layer's
nonzero weights with :func:`~deepshrink.quantize.kmeans1d.kmeans1d` and
installs a :class:`SharedWeights` parametrization: ``weight = table[labels]``
with ``table = [0, centroids...]``. Label 0 is the fixed zero of pruned
weights, so they stay exactly zero and are not a cluster. The centroids are an
``nn.Parameter``: the gradient of a centroid is the sum of the gradients of
its member weights (indexing's backward adds them up), and the assignments
(``labels``, a buffer) stay fixed while training.

Example:
    >>> import deepshrink as ds
    >>> model = ds.models.create("lenet300")
    >>> report = ds.share_(model, ds.KMeansSharing(bits=4))
    >>> len(set(model.fc1.weight.detach().flatten().tolist())) <= 16
    True
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ..config import Config, check_choice, check_range, register_config
from ..dispatch import Report, share_
from ..errors import ConfigError
from ..prune.magnitude import LAYER_TYPES, layer_kind, matches
from .kmeans1d import INITS, SOLVERS, kmeans1d

MAX_BITS = 16


class SharedWeights(nn.Module):
    """Parametrization ``weight = [0, centroids...][labels]``; the input (the original) is ignored.

    Example:
        >>> import torch
        >>> p = SharedWeights(torch.tensor([-1.0, 2.0]), torch.tensor([[0, 1], [2, 2]]))
        >>> p(torch.zeros(2, 2)).tolist()
        [[0.0, -1.0], [2.0, 2.0]]
    """

    def __init__(self, centroids: torch.Tensor, labels: torch.Tensor) -> None:
        super().__init__()
        self.centroids = nn.Parameter(centroids.detach().clone())
        # int32 halves the memory of int64 and still indexes; 0 means "pruned zero".
        self.register_buffer("labels", labels.detach().to(torch.int32).clone())

    def table(self) -> torch.Tensor:
        """The shared values with the fixed zero in front: what ``labels`` index."""
        return torch.cat([self.centroids.new_zeros(1), self.centroids])

    def forward(self, original: torch.Tensor) -> torch.Tensor:
        return self.table()[self.labels]


@register_config("kmeans_sharing")
@dataclass(frozen=True)
class KMeansSharing(Config):
    """k-means weight sharing: 2**bits shared values per layer, pruned zeros kept.

    Fields:
        bits: an integer for every layer, or a mapping whose keys are layer
            kinds (``"conv"``, ``"linear"``, ``"embedding"``) or fnmatch
            patterns on qualified names (``"fc3"``, ``"encoder.*"``); the first
            key that matches a layer wins, and layers no key matches are left alone.
        init: the k-means start (``"linear"``, as in Deep Compression, or
            ``"density"``, ``"random"``, ``"gaussian"``, ``"companding"``).
        solver: ``"lloyd"`` (plain Lloyd from ``init``, as the paper) or
            ``"newton"`` (lowest clustering error; see ``kmeans1d``).
        max_iter: the most Lloyd iterations.
        include, exclude: patterns selecting layers by qualified name.
        layer_types: which kinds of layer to share.
        seed: seed of the ``"random"`` start.

    Example:
        >>> KMeansSharing(bits={"conv": 8, "linear": 5}).bits_for("fc1", "linear")
        5
        >>> KMeansSharing(bits=0)
        Traceback (most recent call last):
        ...
        deepshrink.errors.ConfigError: KMeansSharing.bits=0 is invalid: expected an integer in [1, 16], or a mapping of layer kind or name pattern to such an integer
    """

    bits: int | dict[str, int] = 5
    init: str = "linear"
    solver: str = "lloyd"
    max_iter: int = 300
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    layer_types: tuple[str, ...] = ("linear", "conv", "embedding")
    seed: int = 0

    def validate(self) -> None:
        allowed = f"an integer in [1, {MAX_BITS}], or a mapping of layer kind or name pattern to such an integer"

        def ok(b: object) -> bool:
            return isinstance(b, int) and not isinstance(b, bool) and 1 <= b <= MAX_BITS

        if isinstance(self.bits, Mapping):
            if not self.bits or not all(isinstance(k, str) and ok(v) for k, v in self.bits.items()):
                raise ConfigError("bits", self.bits, allowed, "KMeansSharing")
        elif not ok(self.bits):
            raise ConfigError("bits", self.bits, allowed, "KMeansSharing")
        check_choice(self, "init", INITS)
        check_choice(self, "solver", SOLVERS)
        check_range(self, "max_iter", 0, None, integer=True)
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(p, str) for p in value):
                raise ConfigError(name, value, "a list of layer-name patterns such as ['fc*']", "KMeansSharing")
        if isinstance(self.layer_types, str) or not self.layer_types or any(t not in LAYER_TYPES for t in self.layer_types):
            raise ConfigError("layer_types", self.layer_types, "a non-empty list drawn from " + ", ".join(LAYER_TYPES), "KMeansSharing")
        check_range(self, "seed", 0, 2**63 - 1, integer=True)

    def bits_for(self, name: str, kind: str) -> int | None:
        """Bits for the layer ``name`` of kind ``kind``, or None when the mapping names no key for it.

        Example:
            >>> KMeansSharing(bits={"fc3": 6, "linear": 5}).bits_for("fc3", "linear")
            6
        """
        if not isinstance(self.bits, Mapping):
            return int(self.bits)
        for key, value in self.bits.items():
            if key == kind or fnmatch.fnmatchcase(name, key):
                return int(value)
        return None


def get_shared(module: nn.Module, name: str = "weight") -> SharedWeights | None:
    """The :class:`SharedWeights` parametrization of ``module.<name>``, or None.

    Example:
        >>> from torch import nn
        >>> get_shared(nn.Linear(2, 2)) is None
        True
    """
    if not parametrize.is_parametrized(module, name):
        return None
    for p in module.parametrizations[name]:  # type: ignore[index]
        if isinstance(p, SharedWeights):
            return p
    return None


def share_tensor(module: nn.Module, name: str, bits: int, *, init: str = "linear", solver: str = "lloyd",
                 max_iter: int = 300, seed: int = 0) -> dict[str, Any]:
    """Cluster the nonzero entries of ``module.<name>`` into at most 2**bits values and install sharing.

    Returns the layer's figures: ``clusters``, ``nonzero``, ``wcss``.

    Example:
        >>> from torch import nn
        >>> layer = nn.Linear(8, 4)
        >>> share_tensor(layer, "weight", 2)["clusters"]
        4
    """
    weight = getattr(module, name).detach()
    nonzero = weight != 0
    values = weight[nonzero].float().cpu().numpy()
    labels = torch.zeros(weight.shape, dtype=torch.int32, device=weight.device)
    if values.size == 0:
        centroids = np.zeros(0, dtype=np.float32)
        wcss = 0.0
    else:
        centroids, member = kmeans1d(values, 2**bits, init=init, solver=solver, max_iter=max_iter, seed=seed)
        centroids = centroids.astype(np.float32)
        labels[nonzero] = torch.from_numpy(member + 1).to(device=weight.device, dtype=torch.int32)
        wcss = float(np.sum((values.astype(np.float64) - centroids.astype(np.float64)[member]) ** 2))
    table = torch.from_numpy(centroids).to(device=weight.device, dtype=weight.dtype)
    parametrize.register_parametrization(module, name, SharedWeights(table, labels), unsafe=True)
    # The original no longer shapes the weight; only the centroids train.
    module.parametrizations[name].original.requires_grad_(False)  # type: ignore[index]
    return {"bits": bits, "clusters": int(centroids.size), "nonzero": int(values.size), "wcss": wcss}


@share_.register(KMeansSharing)
def kmeans_share(model: nn.Module, cfg: KMeansSharing, **_: Any) -> Report:
    """Handler of ``share_`` for :class:`KMeansSharing`.

    Example:
        >>> import deepshrink as ds
        >>> r = kmeans_share(ds.models.create("lenet300"), KMeansSharing(bits={"fc3": 3}))
        >>> r.changed, r.per_layer["fc3.weight"]["clusters"]
        (['fc3.weight'], 8)
    """
    report = Report(method="kmeans_sharing")
    seen: set[int] = set()
    for qual, module in model.named_modules():
        kind = layer_kind(module)
        if kind is None or kind not in cfg.layer_types or getattr(module, "weight", None) is None:
            continue
        label = f"{qual}.weight" if qual else "weight"
        if cfg.include and not matches(qual, cfg.include):
            continue
        if cfg.exclude and matches(qual, cfg.exclude):
            report.skipped[label] = "excluded by pattern"
            continue
        bits = cfg.bits_for(qual, kind)
        if bits is None:
            report.skipped[label] = f"no bits given for a {kind} layer of this name"
            continue
        if get_shared(module) is not None:
            report.skipped[label] = "already shared; fold_sharing(model) first to share again"
            continue
        key = id(module.parametrizations["weight"].original) if parametrize.is_parametrized(module, "weight") else id(module.weight)  # type: ignore[index]
        if key in seen:
            report.skipped[label] = "tied to a layer already shared"
            continue
        seen.add(key)
        report.per_layer[label] = share_tensor(
            module, "weight", bits, init=cfg.init, solver=cfg.solver, max_iter=cfg.max_iter, seed=cfg.seed
        )
        report.changed.append(label)
    report.figures["layers"] = len(report.changed)
    report.figures["shared_weights"] = sum(v["nonzero"] for v in report.per_layer.values())
    return report


def codebooks(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{"module.weight": (centroids, labels)}`` of every shared tensor (label 0 = pruned zero).

    Example:
        >>> from torch import nn
        >>> codebooks(nn.Linear(2, 2))
        {}
    """
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for qual, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for name in list(module.parametrizations.keys()):  # type: ignore[union-attr]
            shared = get_shared(module, name)
            if shared is not None:
                out[f"{qual}.{name}" if qual else name] = (shared.centroids.detach(), shared.labels)
    return out


def fold_sharing(model: nn.Module) -> int:
    """Replace every shared tensor by a plain parameter with its effective value; returns the count.

    Pruning masks stacked under the sharing are folded too (the value keeps its zeros).

    Example:
        >>> import deepshrink as ds
        >>> m = ds.models.create("lenet300")
        >>> _ = ds.share_(m, ds.KMeansSharing(bits=2))
        >>> fold_sharing(m), type(m.fc1.weight).__name__
        (3, 'Parameter')
    """
    found = []
    for _, module in model.named_modules():
        if parametrize.is_parametrized(module):
            found += [(module, n) for n in list(module.parametrizations.keys()) if get_shared(module, n) is not None]  # type: ignore[union-attr]
    for module, name in found:
        parametrize.remove_parametrizations(module, name, leave_parametrized=True)
        getattr(module, name).requires_grad_(True)
    return len(found)
