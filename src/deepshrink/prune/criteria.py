"""Importance criteria for unstructured pruning: a score per weight, lowest pruned first.

- ``"magnitude"``: ``|w|`` (Han et al. 2015).
- ``"random"``: a seeded uniform score, the control every pruning paper needs.
- ``"obd"``: Optimal Brain Damage saliency ``0.5 * h * w**2`` (LeCun et al.
  1990), with the diagonal Hessian ``h`` estimated by the empirical Fisher
  (mean squared gradient) over a few batches of data.

Example:
    >>> import torch
    >>> magnitude_scores(torch.tensor([-3.0, 1.0])).tolist()
    [3.0, 1.0]
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError

CRITERIA = ("magnitude", "random", "obd")

Target = tuple[str, nn.Module, str]  # (qualified module name, module, tensor name)


def magnitude_scores(weight: torch.Tensor) -> torch.Tensor:
    """``|w|``: small weights matter least.

    Example:
        >>> import torch
        >>> magnitude_scores(torch.tensor([[-0.5, 0.25]])).tolist()
        [[0.5, 0.25]]
    """
    return weight.detach().abs()


def random_scores(weight: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Uniform random scores from a seeded generator (the same seed, the same mask).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> random_scores(torch.zeros(3), g).shape
        torch.Size([3])
    """
    return torch.rand(weight.shape, generator=generator).to(weight.device)


def _batches(data: Any, batch_size: int) -> Iterable[Any]:
    """Accept a DataBundle (its train split), a Dataset or any iterable of batches."""
    if hasattr(data, "train") and hasattr(data, "task"):
        data = data.train
    if isinstance(data, torch.utils.data.Dataset) and hasattr(data, "__len__"):
        # Seeded random order: a data set grouped by class would otherwise give batches of one class.
        return torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    return data


def fisher_diagonal(
    model: nn.Module,
    targets: Sequence[Target],
    data: Any,
    *,
    batches: int = 8,
    batch_size: int = 64,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """Empirical Fisher diagonal (mean over batches of the squared gradient) of each target.

    ``data`` is a DataBundle, a Dataset of ``(input, label)`` or an iterable
    of ``(input, label)`` batches; ``loss_fn`` defaults to cross entropy.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Linear(3, 2)
        >>> batch = [(torch.randn(4, 3), torch.tensor([0, 1, 0, 1]))]
        >>> fisher_diagonal(m, [("", m, "weight")], batch)[0].shape
        torch.Size([2, 3])
    """
    loss_fn = loss_fn or F.cross_entropy
    tensors = [getattr(module, name) for _, module, name in targets]
    sums = [torch.zeros_like(t, dtype=torch.float32) for t in tensors]
    device = tensors[0].device if tensors else torch.device("cpu")
    was_training = model.training
    model.eval()  # dropout off: the estimate is of the deployed network
    seen = 0
    try:
        for batch in _batches(data, batch_size):
            if seen >= batches:
                break
            x, y = batch[0].to(device), batch[1].to(device)
            model.zero_grad(set_to_none=True)
            # Gradients w.r.t. the effective weights (masked or not) via autograd.grad.
            effective = [getattr(module, name) for _, module, name in targets]
            loss = loss_fn(model(x), y)
            grads = torch.autograd.grad(loss, effective, allow_unused=True)
            for acc, g in zip(sums, grads):
                if g is not None:
                    acc += g.detach().float() ** 2
            seen += 1
    finally:
        model.train(was_training)
    if seen == 0:
        raise ConfigError("data", type(data).__name__, "at least one (input, label) batch for the OBD criterion")
    return [s / seen for s in sums]


def obd_scores(weight: torch.Tensor, hessian_diag: torch.Tensor) -> torch.Tensor:
    """Optimal Brain Damage saliency: the loss increase ``0.5 * h * w**2`` of zeroing ``w``.

    Example:
        >>> import torch
        >>> obd_scores(torch.tensor([2.0, 1.0]), torch.tensor([1.0, 10.0])).tolist()
        [2.0, 5.0]
    """
    return 0.5 * hessian_diag.to(weight.device) * weight.detach().float() ** 2


def scores_for(
    model: nn.Module,
    targets: Sequence[Target],
    criterion: str,
    *,
    seed: int = 0,
    data: Any = None,
    batches: int = 8,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> list[torch.Tensor]:
    """One score tensor per target (same shape as the tensor), by ``criterion``.

    Example:
        >>> from torch import nn
        >>> m = nn.Linear(2, 2)
        >>> scores_for(m, [("", m, "weight")], "magnitude")[0].shape
        torch.Size([2, 2])
    """
    weights = [getattr(module, name).detach() for _, module, name in targets]
    if criterion == "magnitude":
        return [magnitude_scores(w).float() for w in weights]
    if criterion == "random":
        generator = torch.Generator().manual_seed(seed)
        return [random_scores(w, generator) for w in weights]
    if criterion == "obd":
        if data is None:
            raise ConfigError(
                "criterion", "obd", "data to estimate the Hessian: call prune_(model, config, data=bundle_or_batches)"
            )
        fisher = fisher_diagonal(model, targets, data, batches=batches, loss_fn=loss_fn)
        return [obd_scores(w, h) for w, h in zip(weights, fisher)]
    raise ConfigError("criterion", criterion, "one of " + ", ".join(repr(c) for c in CRITERIA))
