"""Deterministic, resumable, rank-aware batching and augmentation.

Every epoch draws one permutation from ``(seed, epoch)``; global batch ``i`` is
``perm[i*B:(i+1)*B]`` and process ``r`` of ``W`` takes its positions
``r, r+W, r+2W, ...``. The union over processes is exactly the single-process
batch, which is what makes an N-process run equal a 1-process run. Random
augmentation parameters are drawn for the whole global batch from
``(seed, epoch, batch)`` and sliced the same way, so they too are independent of
N and of where a run was resumed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, TensorDataset, default_collate


def seeded_generator(*parts: int) -> torch.Generator:
    """A CPU generator seeded by a stable mix of integers (seed, epoch, batch, ...).

    Example:
        >>> float(torch.rand((), generator=seeded_generator(0, 1))) == float(torch.rand((), generator=seeded_generator(0, 1)))
        True
    """
    seed = 0
    for p in parts:  # a simple, stable mix of the parts into one 63-bit seed
        seed = (seed * 1_000_003 + int(p) + 0x9E3779B97F4A7C15) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


class GlobalBatchSampler:
    """Yields this process's share of each global batch of one epoch.

    Example:
        >>> s = GlobalBatchSampler(10, batch_size=4, seed=0, world_size=2, rank=1)
        >>> [len(b) for _, b, _ in s.batches(epoch=0)]
        [2, 2, 1]
    """

    def __init__(self, n: int, batch_size: int, seed: int, world_size: int = 1, rank: int = 0, shuffle: bool = True) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.world_size, self.rank, self.shuffle = world_size, rank, shuffle

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def batches(self, epoch: int, start: int = 0) -> Iterator[tuple[int, torch.Tensor, int]]:
        """(batch index, this rank's indices, global batch size), from batch ``start`` on."""
        if self.shuffle:
            perm = torch.randperm(self.n, generator=seeded_generator(self.seed, epoch))
        else:
            perm = torch.arange(self.n)
        for i in range(start, len(self)):
            chunk = perm[i * self.batch_size : (i + 1) * self.batch_size]
            yield i, chunk[self.rank :: self.world_size], len(chunk)


def fetch(dataset: Dataset, indices: torch.Tensor) -> Any:
    """Collate the items at ``indices`` (fast path for TensorDataset).

    Example:
        >>> ds = TensorDataset(torch.arange(5.0))
        >>> fetch(ds, torch.tensor([3, 1]))[0]
        tensor([3., 1.])
    """
    if isinstance(dataset, TensorDataset):
        return [t[indices] for t in dataset.tensors]
    return default_collate([dataset[int(i)] for i in indices])


def augment_images(
    x: torch.Tensor, kind: str, seed: int, epoch: int, batch: int, global_size: int, world_size: int, rank: int
) -> torch.Tensor:
    """Random small affine transforms (or integer shifts) of a batch of images (N, C, H, W).

    Parameters are drawn for the whole global batch and sliced for this rank.

    Example:
        >>> x = torch.rand(4, 1, 8, 8)
        >>> augment_images(x, "none", 0, 0, 0, 4, 1, 0) is x
        True
    """
    if kind == "none" or x.dim() != 4:
        return x
    g = seeded_generator(seed, epoch, batch, 7)
    n = global_size
    h, w = x.shape[-2:]
    if kind == "shift":
        # Up to 2 pixels at MNIST's 28x28, scaled with the image: 1 pixel on 8x8 digits.
        max_px = int(round(2 * min(h, w) / 28))
        if max_px == 0:
            return x
        shifts = torch.randint(-max_px, max_px + 1, (n, 2), generator=g)[rank::world_size]
        padded = F.pad(x, (max_px, max_px, max_px, max_px))
        out = torch.empty_like(x)
        for i in range(x.shape[0]):  # per-sample crop of a padded image: an exact integer shift
            dy, dx = int(shifts[i, 0]), int(shifts[i, 1])
            out[i] = padded[i, :, max_px + dy : max_px + dy + h, max_px + dx : max_px + dx + w]
        return out
    # "affine": rotation +-12 degrees, scale 0.9-1.1, translation +-1/14 of the image (2 pixels at 28x28)
    angle = (torch.rand(n, generator=g) * 2 - 1) * math.radians(12)
    scale = 1 + (torch.rand(n, generator=g) * 2 - 1) * 0.1
    shift = (torch.rand(n, 2, generator=g) * 2 - 1) * (2.0 / 14.0)  # normalised coordinates span 2
    sl = slice(rank, None, world_size)
    angle, scale, shift = angle[sl], scale[sl], shift[sl]
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid.to(x.device), mode="bilinear", padding_mode="zeros", align_corners=False)


def split_batch(batch: Sequence[Any]) -> tuple[Any, Any]:
    """(inputs, targets) of a classification batch.

    Example:
        >>> split_batch([torch.zeros(2), torch.ones(2)])[1]
        tensor([1., 1.])
    """
    if isinstance(batch, (list, tuple)) and len(batch) == 2:
        return batch[0], batch[1]
    raise ValueError("a classification data set must yield (input, label) pairs")
