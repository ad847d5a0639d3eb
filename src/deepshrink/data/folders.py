"""Image data already on disk: ``imagefolder:PATH`` and ``torchvision:NAME:PATH``.

Both pool every image they find and split them once, stratified by class
with seed 0, into 70% / 10% / 20% (like the built-in data). Images become
float tensors in [0, 1] (``ToTensor``); the input shape is that of the
first image. Nothing is downloaded.

Example:
    >>> load_imagefolder("/no/such/folder")
    Traceback (most recent call last):
    ...
    deepshrink.errors.SpecError: image folder '/no/such/folder' does not exist; ...
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import ConcatDataset, Dataset, Subset

from ..errors import SpecError
from .bundle import DataBundle, split_sizes, stratified_split


def _torchvision() -> Any:
    try:
        import torchvision
    except ImportError:
        raise SpecError("image data on disk needs torchvision: pip install 'deepshrink[vision]'") from None
    return torchvision


def _split(labels: np.ndarray) -> tuple[tuple[np.ndarray, np.ndarray, np.ndarray], bool]:
    """Stratified 70/10/20 split; unstratified when a class is too small to appear in every split."""
    n = len(labels)
    _, n_val, n_test = split_sizes(n)
    counts = np.bincount(labels) if n else np.zeros(0, dtype=int)
    classes = int((counts > 0).sum())
    stratify = classes > 1 and counts[counts > 0].min() >= 3 and min(n_val, n_test) >= classes
    if stratify:
        try:
            return stratified_split(labels, n), True
        except ValueError:  # scikit-learn refuses some tiny class layouts; fall back below
            pass
    return stratified_split(None, n), False


def _bundle(name: str, dataset: Dataset, labels: np.ndarray, num_classes: int, source: str) -> DataBundle:
    n = len(labels)
    if n < 10:
        raise SpecError(f"{name} has {n} images; a data set needs at least 10 to split into train/val/test")
    (tr, va, te), stratified = _split(labels)
    first = dataset[0][0]
    parts = [Subset(dataset, idx.tolist()) for idx in (tr, va, te)]
    return DataBundle(
        name,
        *parts,
        input_shape=tuple(int(s) for s in first.shape),
        num_classes=num_classes,
        meta={"source": source, "stratified": stratified},
    )


def load_imagefolder(path: str | Path) -> DataBundle:
    """A folder with one sub-folder of images per class (torchvision's ``ImageFolder`` layout).

    Images are read as RGB, so the input shape is (3, H, W) of the first image;
    all images should share its size for batching.

    Example:
        >>> import tempfile, os
        >>> from PIL import Image
        >>> root = tempfile.mkdtemp()
        >>> for c in ("cat", "dog"):
        ...     os.makedirs(f"{root}/{c}")
        ...     for i in range(10):
        ...         Image.new("L", (6, 5), color=20 * i).save(f"{root}/{c}/{i}.png")
        >>> d = load_imagefolder(root)
        >>> d.sizes(), d.input_shape, d.num_classes
        ({'train': 14, 'val': 2, 'test': 4}, (3, 5, 6), 2)
    """
    tv = _torchvision()
    root = Path(path)
    if not root.is_dir():
        raise SpecError(f"image folder {str(root)!r} does not exist; pass a folder with one sub-folder of images per class")
    try:
        dataset = tv.datasets.ImageFolder(str(root), transform=tv.transforms.ToTensor())
    except (FileNotFoundError, RuntimeError) as exc:
        raise SpecError(f"image folder {str(root)!r} has no class sub-folders with images: {exc}") from None
    labels = np.asarray(dataset.targets, dtype=np.int64)
    return _bundle(f"imagefolder:{root}", dataset, labels, len(dataset.classes), str(root))


def _dataset_classes(tv: Any) -> list[str]:
    from torch.utils.data import Dataset as TorchDataset

    return sorted(
        name
        for name, obj in vars(tv.datasets).items()
        if isinstance(obj, type) and issubclass(obj, TorchDataset) and "root" in inspect.signature(obj).parameters
    )


def _labels(dataset: Any) -> np.ndarray:
    for attr in ("targets", "labels", "_labels", "y"):
        value = getattr(dataset, attr, None)
        if value is not None and len(value) == len(dataset):
            return np.asarray(value, dtype=np.int64).reshape(-1)
    # Slow path for data sets that keep no label list: read every item once.
    return np.asarray([int(dataset[i][1]) for i in range(len(dataset))], dtype=np.int64)


def load_torchvision_dataset(name: str, path: str | Path) -> DataBundle:
    """A torchvision data set (e.g. ``MNIST``, ``CIFAR10``) already downloaded under ``path``.

    ``download=False`` always. Its own train and test parts are pooled and
    re-split 70/10/20 stratified with seed 0. A missing data set raises
    :class:`SpecError` naming the path.

    Example:
        >>> load_torchvision_dataset("MNIST", "/no/such/dir")
        Traceback (most recent call last):
        ...
        deepshrink.errors.SpecError: torchvision data set 'MNIST' is not under '/no/such/dir' ...
    """
    tv = _torchvision()
    valid = _dataset_classes(tv)
    if name not in valid:
        raise SpecError(f"unknown torchvision data set {name!r}; accepted: {', '.join(valid)}")
    cls = getattr(tv.datasets, name)
    root = Path(path)
    params = inspect.signature(cls).parameters
    # Data sets with a train flag (MNIST, CIFAR) hold two parts; the rest one default part.
    variants: list[dict[str, Any]] = [{"train": True}, {"train": False}] if "train" in params else [{}]
    parts = []
    for extra in variants:
        kwargs: dict[str, Any] = dict(extra, transform=tv.transforms.ToTensor())
        if "download" in params:
            kwargs["download"] = False
        try:
            parts.append(cls(str(root), **kwargs))
        except (RuntimeError, FileNotFoundError, OSError) as exc:
            raise SpecError(
                f"torchvision data set {name!r} is not under {str(root)!r} ({str(exc).splitlines()[0]}); "
                "nothing is downloaded: put the files there first"
            ) from None
    labels = np.concatenate([_labels(p) for p in parts])
    dataset: Dataset = parts[0] if len(parts) == 1 else ConcatDataset(parts)
    classes = getattr(parts[0], "classes", None)
    num_classes = len(classes) if classes else int(labels.max()) + 1
    return _bundle(f"torchvision:{name}:{root}", dataset, labels, num_classes, str(root))
