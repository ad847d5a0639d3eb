"""The exit classifiers: small heads built from a feature shape, so a saved model rebuilds them from its log.

Example:
    >>> import torch
    >>> head = make_head((20, 12, 12), 10, channels=0, pool=4, hidden=0)
    >>> head(torch.zeros(3, 20, 12, 12)).shape
    torch.Size([3, 10])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# A head bigger than this on one exit point is a sign of a misplaced exit (e.g. a huge flattened map).
MAX_HEAD_PARAMS = 20_000_000


def make_head(feature_shape: Sequence[int], num_classes: int, *, channels: int, pool: int, hidden: int) -> nn.Sequential:
    """An exit classifier for features of shape ``feature_shape`` (without the batch dimension).

    Feature maps (C, H, W): [3x3 conv, batch norm, ReLU] if ``channels``, average pooling to at most
    ``pool x pool``, flatten; vectors (D,) and anything else: flatten. Then [linear, ReLU] if
    ``hidden``, and a linear layer to ``num_classes``.

    Example:
        >>> make_head((64,), 10, channels=0, pool=4, hidden=32)
        Sequential(
          (0): Flatten(start_dim=1, end_dim=-1)
          (1): Linear(in_features=64, out_features=32, bias=True)
          (2): ReLU()
          (3): Linear(in_features=32, out_features=10, bias=True)
        )
    """
    shape = [int(s) for s in feature_shape]
    if not shape or any(s < 1 for s in shape):
        raise ValueError(f"an exit needs a non-empty feature shape of positive sizes; got {shape}")
    layers: list[nn.Module] = []
    if len(shape) == 3:
        c, h, w = shape
        if channels:
            layers += [nn.Conv2d(c, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU()]
            c = channels
        ph, pw = min(pool, h), min(pool, w)
        if (ph, pw) != (h, w):
            layers.append(nn.AdaptiveAvgPool2d((ph, pw)))
        width = c * ph * pw
    else:
        width = math.prod(shape)
    layers.append(nn.Flatten(1))
    if hidden:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, num_classes))
    head = nn.Sequential(*layers)
    n_params = sum(p.numel() for p in head.parameters())
    if n_params > MAX_HEAD_PARAMS:
        raise ValueError(
            f"an exit on features of shape {shape} would have {n_params:,} parameters; lower pool/hidden or"
            " place the exit after a smaller layer"
        )
    return head


def confidence(logits: Tensor, kind: str) -> Tensor:
    """Per-input confidence in [0, 1]: the largest softmax probability, or one minus the normalised entropy.

    Example:
        >>> confidence(torch.tensor([[0.0, 0.0], [100.0, 0.0]]), "max_prob")
        tensor([0.5000, 1.0000])
        >>> confidence(torch.tensor([[0.0, 0.0]]), "entropy")
        tensor([0.])
    """
    if kind == "max_prob":
        return F.softmax(logits.float(), dim=-1).amax(dim=-1)
    logp = F.log_softmax(logits.float(), dim=-1)
    if kind == "entropy":
        entropy = -(logp.exp() * logp).sum(dim=-1)
        return (1.0 - entropy / math.log(logits.shape[-1])).clamp(0.0, 1.0)
    raise ValueError(f"confidence={kind!r}: expected 'max_prob' or 'entropy'")


class ExitHeads(nn.Module):
    """The exits of a model: one head per exit point and their thresholds (a buffer, saved with the model).

    A threshold above 1 never fires; that is how exits start, so adding them changes no output.

    Example:
        >>> heads = ExitHeads(["conv1"], [make_head((4,), 3, channels=0, pool=1, hidden=0)], "max_prob")
        >>> heads.thresholds
        tensor([inf])
    """

    def __init__(self, after: Sequence[str], heads: Sequence[nn.Module], confidence: str) -> None:
        super().__init__()
        if len(after) != len(heads):
            raise ValueError(f"{len(after)} exit points but {len(heads)} heads")
        self.after = list(after)
        self.confidence = confidence
        self.heads = nn.ModuleList(heads)
        self.register_buffer("thresholds", torch.full((len(heads),), math.inf))
        self.collecting = False  # set while every exit's logits are being collected (training, calibration)

    def can_fire(self, i: int) -> bool:
        """Whether exit ``i`` can take inputs (its threshold is at most 1)."""
        return bool(self.thresholds[i] <= 1.0)

    def open_exits(self) -> tuple[list[int], list[float]]:
        """The exits that can take inputs, and every threshold as a float (one read of the buffer per forward)."""
        values = self.thresholds.tolist()
        return [i for i, t in enumerate(values) if t <= 1.0], values

    def extra_repr(self) -> str:
        return f"after={self.after}, confidence={self.confidence!r}"
