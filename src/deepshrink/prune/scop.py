"""SCOP: scientific-control pruning with knockoff features (Tang et al., NeurIPS 2020).

A filter is worth keeping when the real data's features in its channel help
the task more than the features of a *control*: knockoff data that follow the
real data's distribution but carry no information about the label. SCOP feeds
both through the trained network and, in every prunable layer ``l``, gives the
next layer the mixture

    x_tilde^l = beta^l * f^l(X) + beta_knockoff^l * f^l(X_knockoff),   beta + beta_knockoff = 1,

with one factor per output channel, starting at 0.5 and kept in [0, 1]. Only
the factors are trained, on the task loss, with the network's weights frozen,
as in the authors' code: Adam (betas 0.5 and 0.9), factors clipped to [0, 1]
after every step, and the batch norms normalising each batch with its own
statistics (the authors' network runs in training mode; a half-knockoff
feature map is far from the statistics stored for real data, and frozen
statistics let the perturbation blow up through the depth). This runs on a
copy of the model, which is left as it was. A channel whose real feature
matters pushes its ``beta`` towards 1; a channel whose real feature is no more
useful than the label-free control stays near 0.5. The importance is
``|gamma| * (beta - beta_knockoff) = |gamma| * (2 * beta - 1)``, with ``gamma``
the scale of the batch norm that follows the channel (1 without one), as the
authors score; :class:`~deepshrink.ChannelPruning` removes the lowest scores,
i.e. the filters whose real factor is not clearly above their knockoff factor.

Knockoff data. Tang et al. sample knockoffs from a generative model of the
inputs (a GAN), so that they are exchangeable with real samples yet drawn
independently of the labels. We fit a lighter generative model with the same
two properties to the training inputs: a Gaussian with the data's mean and
covariance, low-rank plus diagonal (probabilistic PCA: the top ``rank``
principal directions plus a per-feature residual variance), clipped to the
observed range of each feature. Each knockoff is a fresh sample, independent of
the real batch, so it holds no label information while matching the data's
first and second moments, i.e. a second-order knockoff in the principal-
component basis, where the coordinates are uncorrelated and the optimal
knockoff of each is an independent draw. Integer inputs (token ids) get a
per-position resampling instead: every position takes its value from a random
other sample, which keeps each position's marginal distribution and breaks the
link to the label.

Each batch carries the real samples and as many knockoffs; a forward hook on
every mixed layer replaces the real half of its output by the mixture and lets
the knockoff half through, so ``f^l(X_knockoff)`` is the knockoff feature of
the knockoff inputs at every depth. Mixing right after the conv/linear layer,
before its batch norm, is where the authors mix.

Example:
    >>> import deepshrink as ds
    >>> from torch import nn
    >>> data = ds.data.load("synthetic:classification:64")
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4))
    >>> imp = SCOPImportance.learn(model, data, epochs=1)
    >>> s = imp.scores[model[1]]
    >>> tuple(s.shape), bool(((s >= -1) & (s <= 1)).all())
    ((16,), True)
"""

from __future__ import annotations

import copy
import fnmatch
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import ConfigError
from .activation_importance import LayerScoreImportance, _device, activation_chains, labelled_batches, scored_layers
from .output_layers import output_layers

# Defaults, read from ChannelPruning's fields when it has them (getattr), so the
# criterion works with the config as it is.
SCOP_EPOCHS = 5
SCOP_LR = 4e-3  # Adam, as the authors' code
KNOCKOFF_RANK = 64
KNOCKOFF_FIT_SAMPLES = 2048
SCOP_BATCH_SIZE = 64


@dataclass
class Knockoffs:
    """A generative model of the inputs that yields label-free knockoff samples (see the module docstring).

    Example:
        >>> import torch
        >>> x = torch.rand(200, 1, 8, 8)
        >>> k = Knockoffs.fit(x, rank=8)
        >>> xk = k.sample(5, torch.Generator().manual_seed(0))
        >>> tuple(xk.shape), bool((xk >= 0).all() and (xk <= 1).all())
        ((5, 1, 8, 8), True)
    """

    shape: tuple[int, ...]
    mean: Tensor  # (D,)
    basis: Tensor  # (k, D): principal directions scaled by their standard deviation
    residual_std: Tensor  # (D,)
    lo: Tensor
    hi: Tensor
    pool: Tensor | None = None  # integer inputs: the samples to resample positions from

    @classmethod
    def fit(cls, x: Tensor, rank: int = KNOCKOFF_RANK) -> Knockoffs:
        """Fit to a batch of real inputs ``x`` (N, ...): float features get the Gaussian, integers resampling."""
        if x.dim() < 2 or x.shape[0] < 2:
            raise ValueError(f"knockoffs need at least 2 samples of shape (N, ...); got {tuple(x.shape)}")
        shape = tuple(x.shape[1:])
        flat = x.reshape(x.shape[0], -1)
        if not torch.is_floating_point(x):
            empty = torch.zeros(0)
            return cls(shape, empty, empty, empty, empty, empty, pool=flat.clone())
        flat = flat.double()
        mean = flat.mean(0)
        centred = flat - mean
        q = max(1, min(rank, flat.shape[0] - 1, flat.shape[1]))
        with torch.random.fork_rng(devices=[]):  # the randomised SVD must not move the caller's random state
            torch.manual_seed(0)
            _, s, v = torch.pca_lowrank(centred, q=q, center=False, niter=4)
        std = s / (flat.shape[0] - 1) ** 0.5
        basis = (v * std).T  # (q, D)
        residual = centred - (centred @ v) @ v.T
        return cls(shape, mean.float(), basis.float(), residual.std(0).float(), flat.min(0).values.float(), flat.max(0).values.float())

    def sample(self, n: int, generator: torch.Generator, device: torch.device | None = None) -> Tensor:
        """``n`` knockoff inputs, independent of any real batch."""
        if self.pool is not None:
            rows = torch.randint(len(self.pool), (n, self.pool.shape[1]), generator=generator)
            out = torch.gather(self.pool, 0, rows)
        else:
            z = torch.randn(n, self.basis.shape[0], generator=generator)
            noise = torch.randn(n, self.mean.numel(), generator=generator) * self.residual_std
            out = torch.maximum(torch.minimum(self.mean + z @ self.basis + noise, self.hi), self.lo)
        out = out.reshape(n, *self.shape)
        return out.to(device) if device is not None else out


class _Control:
    """Forward hooks that mix each layer's knockoff features into its real features.

    Every batch holds the real samples in its first half and their knockoffs in
    the second (as the authors' code does). A layer's output for the real half
    becomes ``beta * real + (1 - beta) * knockoff``; the knockoff half passes on
    unchanged, so deeper layers see knockoff features of the knockoff inputs.
    """

    def __init__(self, layers: dict[nn.Module, nn.Parameter]) -> None:
        self.theta = layers
        self.handles = [m.register_forward_hook(self._hook) for m in layers]

    def _hook(self, module: nn.Module, _args: Any, out: Any) -> Any:
        if not isinstance(out, Tensor):
            return None
        n = out.shape[0] // 2
        beta = self.theta[module]
        if not isinstance(module, nn.Linear):  # channels in dim 1 for convs, last for linear layers
            beta = beta.view(-1, *([1] * (out.dim() - 2)))
        return torch.cat([beta * out[:n] + (1 - beta) * out[n:], out[n:]])

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def learn_control_factors(
    model: nn.Module,
    data: Any,
    layers: list[nn.Module],
    *,
    epochs: int = SCOP_EPOCHS,
    lr: float = SCOP_LR,
    batch_size: int = SCOP_BATCH_SIZE,
    rank: int = KNOCKOFF_RANK,
    seed: int = 0,
) -> dict[nn.Module, Tensor]:
    """Train the real-vs-knockoff factors of ``layers`` on ``data.train``; returns ``beta`` per layer.

    The factors are learnt on a copy of the model whose weights stay frozen;
    its batch norms normalise with the statistics of each mixed batch, as in
    the authors' training (their network runs in training mode), because a
    half-knockoff feature map is far from the statistics stored for real data.
    Adam with the authors' betas (0.5, 0.9); factors clipped to [0, 1] after
    every step. ``model`` itself is unchanged on return.

    Example:
        >>> import deepshrink as ds
        >>> from torch import nn
        >>> d = ds.data.load("synthetic:classification:64")
        >>> m = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 4))
        >>> betas = learn_control_factors(m, d, [m[1]], epochs=1)
        >>> tuple(betas[m[1]].shape)
        (16,)
    """
    device = _device(model)
    fit_x = torch.cat([x for x, _ in labelled_batches(data, KNOCKOFF_FIT_SAMPLES, 1, seed=seed, shuffle=True)])
    knockoffs = Knockoffs.fit(fit_x, rank=rank)
    names = {m: n for n, m in model.named_modules()}
    work = copy.deepcopy(model)
    work_layers = {work.get_submodule(names[m]): m for m in layers}
    theta = {w: nn.Parameter(torch.full((_out_channels(w),), 0.5, device=device)) for w in work_layers}
    optimizer = torch.optim.Adam(theta.values(), lr=lr, betas=(0.5, 0.9))
    gen = torch.Generator().manual_seed(seed)
    for p in work.parameters():
        p.requires_grad_(False)
    work.eval()  # dropout off; batch norms alone normalise with the mixed batch's statistics
    for m in work.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
    control = _Control(theta)
    try:
        for epoch in range(epochs):
            for x, y in labelled_batches(data, batch_size, None, seed=seed + epoch, shuffle=True, device=device):
                both = torch.cat([x, knockoffs.sample(len(x), gen, device).to(x.dtype)])
                with torch.enable_grad():
                    out = work(both)
                    out = out if isinstance(out, Tensor) else out[0]
                    loss = F.cross_entropy(out[: len(x)], y)
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                optimizer.step()
                with torch.no_grad():
                    for t in theta.values():
                        t.clamp_(0.0, 1.0)
    finally:
        control.remove()
    return {work_layers[w]: t.detach().clone() for w, t in theta.items()}


def _out_channels(layer: nn.Module) -> int:
    if isinstance(layer, nn.Linear):
        return layer.out_features
    return layer.out_channels  # type: ignore[return-value]


class SCOPImportance(LayerScoreImportance):
    """``beta - beta_knockoff`` per channel, learned against knockoff features (Tang et al. 2020).

    Build it with :meth:`learn` (or through :func:`~deepshrink.prune.importance.build_importance`
    with ``importance="scop"``). Scores lie in [-1, 1] and compare across layers
    as they are, so no normalisation is applied.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> lin = nn.Linear(2, 3)
        >>> SCOPImportance({lin: torch.tensor([0.25, 0.75, 0.5])}).scores[lin].tolist()
        [0.25, 0.75, 0.5]
    """

    def __init__(self, scores: dict[nn.Module, Tensor]) -> None:
        super().__init__(scores, normalizer=None)

    @classmethod
    def learn(
        cls,
        model: nn.Module,
        data: Any,
        config: Any = None,
        *,
        epochs: int | None = None,
        lr: float | None = None,
        inputs: tuple[Any, ...] | None = None,
    ) -> SCOPImportance:
        """Learn the control factors of every prunable conv/linear layer of ``model`` on ``data``.

        ``config`` (a ChannelPruning) supplies ``ignored`` patterns, ``seed`` and,
        when present, ``scop_epochs``, ``scop_lr`` and ``knockoff_rank``; the
        keyword arguments override them. Layers that produce a model output are
        left unmixed (their channels are never pruned).
        """
        if data is None or getattr(data, "task", None) != "classification":
            raise ConfigError(
                "data",
                getattr(data, "name", None),
                "a classification DataBundle for importance='scop' (it learns its factors on the task loss), "
                "e.g. prune_(model, cfg, data=deepshrink.data.load('mnist5k'))",
                "ChannelPruning",
            )
        epochs = int(epochs if epochs is not None else getattr(config, "scop_epochs", SCOP_EPOCHS))
        lr = float(lr if lr is not None else getattr(config, "scop_lr", SCOP_LR))
        rank = int(getattr(config, "knockoff_rank", KNOCKOFF_RANK))
        seed = int(getattr(config, "seed", 0))
        ignored = tuple(getattr(config, "ignored", ()))
        if inputs is None:
            x, _ = next(labelled_batches(data, 1, 1, device=_device(model)))
            inputs = (x,)
        names = {m: n for n, m in model.named_modules()}
        fixed = output_layers(model, inputs)
        ignored_modules = {sub for n, m in model.named_modules() if any(fnmatch.fnmatchcase(n, p) for p in ignored) for sub in m.modules()}
        layers = [m for m in scored_layers(model) if m not in fixed and m not in ignored_modules and m in names]
        betas = learn_control_factors(model, data, layers, epochs=epochs, lr=lr, rank=rank, seed=seed)
        # As in the authors' code, the factor difference is weighed by the magnitude of the batch-norm scale
        # that follows the channel: a channel that its norm scales down contributes little either way.
        chains = activation_chains(model, inputs, layers)
        scores = {}
        for m, b in betas.items():
            norm = chains[m][0]
            scale = norm.weight.detach().abs().to(b.device) if norm is not m and getattr(norm, "weight", None) is not None else 1.0
            scores[m] = (2 * b - 1) * scale
        return cls(scores)


__all__ = ["Knockoffs", "SCOPImportance", "learn_control_factors", "output_layers"]
