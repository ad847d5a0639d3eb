"""The compressed file: entropy coders, tensor codecs and the .dsz container.

- :mod:`.huffman` and :mod:`.ans`: canonical Huffman and interleaved rANS,
  compiled with numba (a byte-identical numpy fallback runs without it); :mod:`.streams` picks the smaller per stream.
- :mod:`.tensor_codecs`: dense, sparse, shared and sparse+shared encodings of a
  tensor's bit patterns, and the registry later representations plug into.
- :mod:`.container`: the file layout; :mod:`.api`: save, load, inspect,
  decompress; :mod:`.export`: safetensors and ONNX.

The format is specified in docs/FORMAT.md.

Example:
    >>> import numpy as np
    >>> from deepshrink.codec import huffman
    >>> huffman.decode(huffman.encode(np.array([1, 2, 2], dtype=np.uint8))).tolist()
    [1, 2, 2]
"""

from __future__ import annotations

from . import ans, huffman, streams
from .api import SaveReport, decompress, effective_state_dict, inspect, load, save
from .export import export_onnx, export_safetensors
from .tensor_codecs import Encoded, TensorCodec, register_codec, register_module_hook
from . import int_codecs  # noqa: E402,F401 - registers the ``packed`` codec (low-bit integer codes)

__all__ = [
    "Encoded",
    "SaveReport",
    "TensorCodec",
    "ans",
    "decompress",
    "effective_state_dict",
    "export_onnx",
    "export_safetensors",
    "huffman",
    "inspect",
    "load",
    "register_codec",
    "register_module_hook",
    "save",
    "streams",
]

# --- product-quantized tensors (pq_codec.py): registering the codec is what importing it does ---
from . import pq_codec  # noqa: E402

__all__ += ["pq_codec"]
