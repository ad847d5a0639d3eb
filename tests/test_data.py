"""Built-in data: sizes, stratification, determinism, ranges; text, image folders, torchvision on disk."""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import deepshrink as ds
from deepshrink.data.text import MAX_WORDS, MIN_WORDS, pydoc_sentences
from deepshrink.errors import SpecError


def _labels(split) -> np.ndarray:
    return np.asarray([int(split[i][1]) for i in range(len(split))])


def _check_stratified(bundle, total_counts: Counter) -> None:
    n = sum(total_counts.values())
    for split in (bundle.train, bundle.val, bundle.test):
        counts = Counter(_labels(split).tolist())
        for label, count in total_counts.items():
            expected = count * len(split) / n
            assert abs(counts.get(label, 0) - expected) <= 1.0, (label, counts.get(label, 0), expected)


@pytest.fixture(scope="module")
def mnist():
    return ds.data.load("mnist5k")


def test_mnist5k_sizes_range_and_stratification(mnist) -> None:
    assert mnist.sizes() == {"train": 3500, "val": 500, "test": 1000}
    assert mnist.input_shape == (1, 28, 28) and mnist.num_classes == 10
    x = torch.cat([mnist.train.tensors[0], mnist.val.tensors[0], mnist.test.tensors[0]])
    assert x.shape == (5000, 1, 28, 28) and x.dtype == torch.float32
    assert x.min() == 0.0 and x.max() == 1.0
    y = torch.cat([mnist.train.tensors[1], mnist.val.tensors[1], mnist.test.tensors[1]])
    _check_stratified(mnist, Counter(y.tolist()))


def test_mnist5k_is_deterministic(mnist) -> None:
    again = ds.data.load("mnist5k")
    for a, b in zip((mnist.train, mnist.val, mnist.test), (again.train, again.val, again.test)):
        assert all(torch.equal(s, t) for s, t in zip(a.tensors, b.tensors))


def test_digits() -> None:
    d = ds.data.load("digits")
    n = 1797
    assert tuple(d.sizes().values()) == ds.data.split_sizes(n) == (1258, 180, 359)
    assert d.input_shape == (1, 8, 8) and d.num_classes == 10
    x = d.train.tensors[0]
    assert x.min() >= 0.0 and x.max() <= 1.0
    y = torch.cat([d.train.tensors[1], d.val.tensors[1], d.test.tensors[1]])
    _check_stratified(d, Counter(y.tolist()))


def test_text_pydoc() -> None:
    d = ds.data.load("text:pydoc")
    assert d.task == "text" and d.num_classes is None
    train, val, test = (list(s.sentences) for s in (d.train, d.val, d.test))
    n = len(train) + len(val) + len(test)
    assert n > 1000
    assert (len(train), len(val), len(test)) == ds.data.split_sizes(n)
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    for s in train + val + test:
        assert MIN_WORDS <= len(s.split()) <= MAX_WORDS
        assert s.rstrip('")')[-1] in ".!?" and s == " ".join(s.split())
        assert "::=" not in s
    # Sentences, not fragments of code or headings.
    everything = set(train + val + test)
    assert 'The value for the built-in variable is determined when the interpreter starts.' in everything
    # A code line of the same topic ("if not expression: raise AssertionError") is not a sentence.
    assert not any("raise AssertionError(expression2)" in s for s in everything)
    again = ds.data.load("text:pydoc")
    assert list(again.train.sentences) == train and list(again.test.sentences) == test
    assert pydoc_sentences() == pydoc_sentences()


def test_text_file(tmp_path: Path) -> None:
    lines = [f"Sentence number {i} is here." for i in range(30)]
    path = tmp_path / "s.txt"
    path.write_text("\n".join(lines[:15]) + "\n\n   \n" + "\n".join(lines[15:]) + "\n", encoding="utf-8")
    d = ds.data.load(f"text:{path}")
    assert d.sizes() == {"train": 21, "val": 3, "test": 6}
    got = sorted(d.train.sentences + d.val.sentences + d.test.sentences)
    assert got == sorted(lines)
    with pytest.raises(SpecError, match="missing.txt"):
        ds.data.load(f"text:{tmp_path / 'missing.txt'}")
    short = tmp_path / "short.txt"
    short.write_text("One.\nTwo.\n", encoding="utf-8")
    with pytest.raises(SpecError, match="at least"):
        ds.data.load(f"text:{short}")


def _image_folder(root: Path, classes: dict[str, int], size: tuple[int, int] = (6, 5)) -> None:
    for c, (name, count) in enumerate(classes.items()):
        (root / name).mkdir(parents=True)
        for i in range(count):
            Image.new("RGB", size, color=(10 * i, 100 * c, 255)).save(root / name / f"{i}.png")


def test_imagefolder(tmp_path: Path) -> None:
    _image_folder(tmp_path, {"ants": 20, "bees": 10, "wasps": 10})
    d = ds.data.load(f"imagefolder:{tmp_path}")
    assert d.sizes() == {"train": 28, "val": 4, "test": 8}
    assert d.input_shape == (3, 5, 6) and d.num_classes == 3 and d.meta["stratified"]
    _check_stratified(d, Counter({0: 20, 1: 10, 2: 10}))
    x, y = d.train[0]
    assert x.shape == (3, 5, 6) and 0.0 <= x.min() and x.max() <= 1.0
    # Blue channel is 255 in every image: exactly 1.0 after ToTensor.
    assert torch.all(x[2] == 1.0)
    again = ds.data.load(f"imagefolder:{tmp_path}")
    assert list(again.test.indices) == list(d.test.indices)


def test_imagefolder_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        ds.data.load(f"imagefolder:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match="no class sub-folders"):
        ds.data.load(f"imagefolder:{tmp_path / 'empty'}")


def _write_idx(raw: Path, prefix: str, images: np.ndarray, labels: np.ndarray) -> None:
    raw.mkdir(parents=True, exist_ok=True)
    n = len(labels)
    (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 0x803, n, 28, 28) + images.tobytes())
    (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 0x801, n) + labels.tobytes())


def test_torchvision_dataset_on_disk(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    raw = tmp_path / "MNIST" / "raw"
    train_y = np.repeat(np.arange(2, dtype=np.uint8), 15)
    test_y = np.repeat(np.arange(2, dtype=np.uint8), 5)
    _write_idx(raw, "train", rng.integers(0, 256, (30, 28, 28), dtype=np.uint8), train_y)
    _write_idx(raw, "t10k", rng.integers(0, 256, (10, 28, 28), dtype=np.uint8), test_y)
    d = ds.data.load(f"torchvision:MNIST:{tmp_path}")
    assert d.sizes() == {"train": 28, "val": 4, "test": 8}
    assert d.input_shape == (1, 28, 28) and d.num_classes == 10
    _check_stratified(d, Counter({0: 20, 1: 20}))
    x, _ = d.test[0]
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_torchvision_dataset_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="is not under"):
        ds.data.load(f"torchvision:MNIST:{tmp_path}")
    with pytest.raises(SpecError, match="unknown torchvision data set"):
        ds.data.load(f"torchvision:NoSuchSet:{tmp_path}")
    with pytest.raises(SpecError, match="needs a name and a path"):
        ds.data.load("torchvision:MNIST")


def test_unknown_data_spec() -> None:
    with pytest.raises(SpecError, match="accepted: .*mnist5k"):
        ds.data.load("mnist6k")
