"""save / load / inspect / decompress: models to .dsz files and back, without pickle.

What is saved is each tensor's *effective* value: for a module carrying torch
parametrizations (a pruning mask, a shared-weight codebook) that is
``getattr(module, name)`` under the plain key (``fc1.weight``), so the loaded
model is an ordinary module. Buffers are saved too. The architecture is the
factory spec recorded by :func:`deepshrink.models.create` plus the surgery log.

Example:
    >>> import os, tempfile, torch
    >>> import deepshrink as ds
    >>> model = ds.models.create("lenet300")
    >>> path = os.path.join(tempfile.mkdtemp(), "m.dsz")
    >>> report = save(model, path)
    >>> again = load(path)
    >>> torch.equal(again.fc1.weight, model.fc1.weight)
    True
"""

from __future__ import annotations

from collections import OrderedDict

import os
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import FormatError, SpecError
from ..surgery import model_spec, replay_surgery, surgery_log
from . import container, streams
from .dtypes import DTYPES, to_bits
from .tensor_codecs import encode_bits, forced_codec


@dataclass(frozen=True)
class SaveReport:
    """What :func:`save` wrote: per-tensor rows and the honest whole-file ratio to fp32.

    Example:
        >>> SaveReport("m.dsz", 100, 400, 100, []).ratio
        4.0
    """

    path: str
    file_bytes: int
    fp32_bytes: int
    numel: int
    tensors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        """fp32 dense bytes over the bytes of the file on disk (header included)."""
        return self.fp32_bytes / self.file_bytes if self.file_bytes else 0.0

    @property
    def bits_per_weight(self) -> float:
        """File bits per stored element."""
        return 8 * self.file_bytes / self.numel if self.numel else 0.0

    def __str__(self) -> str:
        rows = [f"{'tensor':<40} {'codec':<14} {'shape':<18} {'bytes':>10} {'bits/w':>7}"]
        for t in self.tensors:
            shape = "x".join(map(str, t["shape"])) or "scalar"
            rows.append(f"{t['name']:<40} {t['codec']:<14} {shape:<18} {t['bytes']:>10} {t['bits_per_weight']:>7.2f}")
        rows.append(
            f"{self.path}: {self.file_bytes} bytes, {self.ratio:.1f}x smaller than fp32 ({self.bits_per_weight:.2f} bits/weight)"
        )
        return "\n".join(rows)


def effective_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the plain model: parametrized tensors replaced by their effective values.

    Example:
        >>> from torch.nn.utils import parametrize
        >>> class Half(nn.Module):
        ...     def forward(self, w): return w * 0.5
        >>> m = nn.Linear(2, 2); _ = parametrize.register_parametrization(m, "weight", Half())
        >>> sorted(effective_state_dict(m))
        ['bias', 'weight']
    """
    effective: dict[str, torch.Tensor] = {}
    hidden: list[str] = []
    values: dict[tuple[int, str], torch.Tensor] = {}
    # Every name of a shared module (CoaT's convolutional position encodings sit under several blocks): the
    # state dict lists its tensors under each name, and load expects each name plain.
    for mname, module in model.named_modules(remove_duplicate=False):
        if parametrize.is_parametrized(module):
            prefix = f"{mname}." if mname else ""
            hidden.append(f"{prefix}parametrizations.")
            with torch.no_grad():
                for pname in module.parametrizations:
                    if (id(module), pname) not in values:
                        values[(id(module), pname)] = getattr(module, pname).detach()
                    effective[f"{prefix}parametrizations.{pname}"] = values[(id(module), pname)]
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        owner = next((h for h in hidden if key.startswith(h)), None)
        if owner is None:
            out[key] = value.detach()
            continue
        # keep state-dict order: the effective tensor takes the place of its first hidden key
        pname = key[len(owner) :].split(".", 1)[0]
        eff_key = owner + pname
        plain = owner[: -len("parametrizations.")] + pname
        if eff_key in effective and plain not in out:
            out[plain] = effective[eff_key]
    return out


def _owner(model: nn.Module, key: str) -> tuple[nn.Module, str]:
    mname, _, tname = key.rpartition(".")
    try:
        return (model.get_submodule(mname) if mname else model), tname
    except AttributeError:
        return model, tname


def save(model: nn.Module, path: str | os.PathLike[str], *, meta: dict[str, Any] | None = None) -> SaveReport:
    """Write ``model`` to a .dsz file atomically, each tensor in its smallest bit-exact encoding.

    ``meta`` is any JSON data stored in the header (``deepshrink.inspect`` shows it).
    Saving the same model twice gives identical bytes.

    Example:
        >>> import os, tempfile
        >>> import deepshrink as ds
        >>> rep = save(ds.models.create("lenet5"), os.path.join(tempfile.mkdtemp(), "a.dsz"), meta={"note": "x"})
        >>> rep.ratio > 1.0  # even dense weights shrink a little: their byte planes are entropy coded
        True
    """
    if meta is not None and not isinstance(meta, dict):
        raise ValueError(f"meta must be a dict of JSON data or None; got {type(meta).__name__}")
    state = effective_state_dict(model)
    encoded, rows, numel = [], [], 0
    for key, tensor in state.items():
        dtype, bits = to_bits(tensor)
        module, tname = _owner(model, key)
        enc = encode_bits(bits, forced_codec(module, tname))
        shape = tuple(int(d) for d in tensor.shape)
        encoded.append((key, dtype, shape, enc))
        numel += bits.size
        rows.append(_row(key, dtype, shape, enc.codec, enc.nbytes, bits.size, [streams.coder_of(b) for b in enc.blobs]))
    fields = {"architecture": model_spec(model), "surgery": surgery_log(model), "meta": dict(meta or {})}
    data = container.pack(fields, encoded)
    container.write_atomic(path, data)
    return SaveReport(os.fspath(path), len(data), 4 * numel, numel, rows)


def _row(name: str, dtype: str, shape: tuple[int, ...], codec: str, nbytes: int, numel: int, coders: list[str]) -> dict[str, Any]:
    return {
        "name": name,
        "dtype": dtype,
        "shape": list(shape),
        "codec": codec,
        "numel": numel,
        "bytes": nbytes,
        "bits_per_weight": 8 * nbytes / numel if numel else 0.0,
        "coders": coders,
    }


def inspect(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Per-tensor codec, shape, bytes and bits per weight, plus totals and the ratio to fp32.

    Example:
        >>> import os, tempfile
        >>> import deepshrink as ds
        >>> p = os.path.join(tempfile.mkdtemp(), "a.dsz"); _ = save(ds.models.create("lenet300"), p)
        >>> info = inspect(p)
        >>> info["architecture"]["spec"], info["totals"]["numel"]
        ('lenet300', 266610)
    """
    buf = container.read_bytes(path)
    header = container.parse(buf)
    rows = []
    for e in header.tensors:
        blobs = [buf[header.payload_offset + o : header.payload_offset + o + n] for o, n, _ in e.blobs]
        coders = [streams.coder_of(b) if e.codec != "dense" else "raw" for b in blobs]
        rows.append(_row(e.name, e.dtype, e.shape, e.codec, e.nbytes, e.numel, coders))
    numel = sum(r["numel"] for r in rows)
    payload = header.file_bytes - header.payload_offset
    return {
        "path": os.fspath(path),
        "format_version": list(header.version),
        "architecture": header.architecture,
        "surgery": header.surgery,
        "meta": header.meta,
        "tensors": rows,
        "totals": {
            "tensors": len(rows),
            "numel": numel,
            "payload_bytes": payload,
            "header_bytes": header.payload_offset,
            "file_bytes": header.file_bytes,
            "fp32_bytes": 4 * numel,
            "ratio_vs_fp32": 4 * numel / header.file_bytes,
            "bits_per_weight": 8 * header.file_bytes / numel if numel else 0.0,
        },
    }


def decompress(path: str | os.PathLike[str], *, max_bytes: int = container.DEFAULT_MAX_BYTES) -> dict[str, torch.Tensor]:
    """The plain state dict stored in a .dsz file (bit-exact tensors, file order).

    ``max_bytes`` caps what the tensors may decode to (a guard against hostile files).

    Example:
        >>> import os, tempfile
        >>> import deepshrink as ds
        >>> p = os.path.join(tempfile.mkdtemp(), "a.dsz"); _ = save(ds.models.create("lenet300"), p)
        >>> list(decompress(p))[:2]
        ['fc1.weight', 'fc1.bias']
    """
    buf = container.read_bytes(path)
    return container.decode_all(buf, container.parse(buf, max_bytes=max_bytes))


def load(path: str | os.PathLike[str], *, model: nn.Module | None = None, sparse: bool = False) -> nn.Module:
    """Rebuild the model stored in a .dsz file, in eval mode; no code from the file is executed.

    The architecture comes from the allow-listed factory spec in the header
    (``deepshrink.models.create``) plus the surgery log. A model from an unknown
    factory needs ``model=skeleton``: an instance of the base architecture, onto
    which the surgery log is replayed (unless it already carries that log).
    Key, shape and dtype mismatches raise FormatError before any blob is decoded.
    ``sparse=True`` swaps in sparse CPU layers (:func:`deepshrink.sparse.load_sparse_`): those
    that ``to_sparse_`` recorded before saving, or else those that measure faster here.

    Example:
        >>> import os, tempfile
        >>> import deepshrink as ds
        >>> p = os.path.join(tempfile.mkdtemp(), "a.dsz"); _ = save(ds.models.create("lenet5"), p)
        >>> type(load(p)).__name__
        'LeNet5'
    """
    buf = container.read_bytes(path)
    header = container.parse(buf)
    if model is None:
        model = _build(header, path)
    else:
        own = surgery_log(model)
        if own != header.surgery:
            if own:
                raise FormatError(
                    f"{path}: the skeleton's surgery log differs from the file's; pass an unmodified base model"
                )
            replay_surgery(model, header.surgery)
    _check_matches(model, header, path)
    state = container.decode_all(buf, header)
    # Module versions come from the skeleton (the same classes that saved the file), as torch.save would have
    # kept them: some modules refuse a state without them (torchvision's MNASNet raises on version None).
    metadata = getattr(model.state_dict(), "_metadata", None)
    if metadata is not None:
        state = OrderedDict(state)
        state._metadata = metadata  # type: ignore[attr-defined]
    try:
        model.load_state_dict(state, strict=True, assign=True)
    except (RuntimeError, ValueError) as exc:  # whatever the checks above did not foresee is still a mismatched file
        raise FormatError(f"{path} does not load into the model: {exc}") from None
    if sparse:
        from ..sparse import load_sparse_

        load_sparse_(model)
    return model.eval()


def _build(header: container.Header, path: str | os.PathLike[str]) -> nn.Module:
    from .. import models

    arch = header.architecture
    if arch is None:
        raise SpecError(
            f"{path} was saved from a model without a factory spec: rebuild it yourself and pass"
            " deepshrink.load(path, model=skeleton)"
        )
    spec, kwargs = arch.get("spec"), arch.get("kwargs", {})
    if not isinstance(spec, str) or not isinstance(kwargs, dict):
        raise FormatError(f"{path}: the architecture must name a spec string and a kwargs object")
    if spec.startswith("hf:"):
        # The file would choose a local directory to read; that needs the caller's consent.
        raise FormatError(
            f"{path} names the local model directory {spec[3:]!r}; build it yourself and pass"
            f" deepshrink.load(path, model=deepshrink.models.create({spec!r}))"
        )
    checked = spec == "minilm"
    if not checked:
        # Sizes chosen by the file (e.g. in_features=10**9) must not allocate: build on the meta
        # device first and compare every shape with the header before building for real.
        try:
            with torch.device("meta"):
                probe = replay_surgery(models.create(spec, **kwargs), header.surgery)
        except SpecError as exc:
            raise FormatError(f"{path}: cannot rebuild architecture {spec!r}: {exc}") from None
        except (TypeError, ValueError, RuntimeError, NotImplementedError) as exc:
            if not (_needs_real_tensors(exc) and _bounded_size(kwargs)):
                raise FormatError(f"{path}: bad arguments for architecture {spec!r}: {exc}") from None
            # A constructor that computes with tensor values (torchvision's RegNet derives its widths with
            # torch ops) cannot run on the meta device. Its sizes come from its own code plus at most a
            # bounded class count, so the real build below allocates no more than the base model itself;
            # its shapes are checked after it.
        else:
            _check_matches(probe, header, path)
            checked = True
    try:
        model = models.create(spec, **kwargs)
    except SpecError as exc:
        raise FormatError(f"{path}: cannot rebuild architecture {spec!r}: {exc}") from None
    except (TypeError, ValueError, RuntimeError, NotImplementedError) as exc:
        raise FormatError(f"{path}: bad arguments for architecture {spec!r}: {exc}") from None
    model = replay_surgery(model, header.surgery)
    if not checked:
        _check_matches(model, header, path)
    return model


# The only argument a rebuilt-for-real model may take from the file, and its bound (ImageNet-21k has 21,841 classes).
_REAL_BUILD_KWARGS = {"num_classes": 50_000}


def _needs_real_tensors(exc: BaseException) -> bool:
    return isinstance(exc, (RuntimeError, NotImplementedError)) and "meta" in str(exc).lower()


def _bounded_size(kwargs: dict[str, Any]) -> bool:
    """Whether the file's constructor arguments cannot make a real build allocate more than the base model."""
    return all(k in _REAL_BUILD_KWARGS and isinstance(v, int) and not isinstance(v, bool) and 0 < v <= _REAL_BUILD_KWARGS[k]
               for k, v in kwargs.items())


def _check_matches(model: nn.Module, header: container.Header, path: str | os.PathLike[str]) -> None:
    if any(parametrize.is_parametrized(m) for m in model.modules()):
        raise ValueError("load() needs a plain skeleton: remove its parametrizations first")
    expected = {k: (tuple(v.shape), v.dtype) for k, v in model.state_dict().items()}
    stored = {e.name: e for e in header.tensors}
    missing = sorted(set(expected) - set(stored))
    extra = sorted(set(stored) - set(expected))
    if missing or extra:
        raise FormatError(
            f"{path} does not match the model: missing {missing[:5]}{'...' if len(missing) > 5 else ''},"
            f" unexpected {extra[:5]}{'...' if len(extra) > 5 else ''}"
        )
    for name, (shape, dtype) in expected.items():
        if stored[name].shape != shape:
            raise FormatError(f"{path}: tensor {name!r} has shape {list(stored[name].shape)}, the model needs {list(shape)}")
        file_dtype = DTYPES[stored[name].dtype][0]
        # a float model may be stored in another float width (e.g. a half model); ints stay ints
        if file_dtype.is_floating_point != dtype.is_floating_point or (file_dtype == torch.bool) != (dtype == torch.bool):
            raise FormatError(f"{path}: tensor {name!r} is stored as {stored[name].dtype}, the model holds {dtype}")
