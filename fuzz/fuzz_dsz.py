"""Atheris fuzz target for the .dsz reader (not run by CI).

Run:  pip install atheris && python fuzz/fuzz_dsz.py -max_total_time=600

Every input must either decode or raise deepshrink.FormatError; anything else
(another exception, a crash, a hang, a huge allocation) is a finding. The
entry point is the same one ``deepshrink.decompress``/``load`` use: parse the
container, then decode every tensor, with a small ``max_bytes`` so hostile
size claims are refused early. A few valid files seed the corpus.
"""

from __future__ import annotations

import os
import sys
import tempfile

import atheris

with atheris.instrument_imports():
    import torch
    from torch import nn

    import deepshrink as ds
    from deepshrink.codec import ans, container, huffman
    from deepshrink.errors import FormatError


def seeds(folder: str) -> None:
    """Write valid small files (dense, sparse, shared, half precision) as the starting corpus."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(12, 8), nn.BatchNorm1d(8), nn.Linear(8, 3).half())
    with torch.no_grad():
        model[0].weight[model[0].weight.abs() < 0.2] = 0
    ds.save(model, os.path.join(folder, "seed.dsz"))


def test_one_input(data: bytes) -> None:
    try:
        header = container.parse(data, max_bytes=1 << 22)
        container.decode_all(data, header)
    except FormatError:
        pass
    try:  # the raw coders are public entry points too
        huffman.decode(data)
    except FormatError:
        pass
    try:
        ans.decode(data, max_count=1 << 20)
    except FormatError:
        pass


def main() -> None:
    corpus = tempfile.mkdtemp(prefix="dsz-corpus-")
    seeds(corpus)
    atheris.Setup(sys.argv + [corpus], test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
