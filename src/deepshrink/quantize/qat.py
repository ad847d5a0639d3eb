"""Quantization-aware training, and the conversion of trained low-bit models to their integer form.

``quantize_(model, QAT(bits=8))`` traces the model with torch.fx and inserts
fake quantizers (torch's x86 QAT pass: batch norms folded into the
convolutions while training, ReLUs fused): activations to 8 bits, weights to
``bits`` bits (8 or 4), each rounding passing its gradient straight through
(zero outside the quantization range). Fine-tune as usual, then
``quantize_(model, Convert())`` (or :func:`convert`) produces the real integer
model of :mod:`.int8`: int8 kernels, with 4-bit weights stored packed two per
byte in .dsz. ``Convert`` also turns binary and ternary shadow weights
(:mod:`.binary`) into their 1-2 bit layers.

Example:
    >>> import torch, deepshrink as ds
    >>> model = ds.models.create("lenet5")
    >>> _ = ds.quantize_(model, ds.QAT(bits=4), example_inputs=(torch.rand(2, 1, 28, 28),))
    >>> loss = model(torch.rand(4, 1, 28, 28)).sum(); loss.backward()   # trains like any model
    >>> ds.quantize_(model, ds.Convert()).figures["int8_layers"]
    4
    >>> int(model.int8_graph.fc1.weight.max()) <= 7
    True
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import Config, check_choice, register_config
from ..dispatch import Report, quantize_
from ..errors import ConfigError
from ..models.inputs import forward_error
from ..surgery import record_surgery
from .binary import convert_low_bit
from .graph import convert as convert_graph
from .graph import graph_of, install_graph, prepare, qconfig, qconfig_mapping
from .int8 import WEIGHT_SCHEMES, _input_signature, calibration_batches, default_reduce_range
from .int8_modules import IntegerLayer

_QAT_ATTR = "_deepshrink_qat"


@register_config("qat")
@dataclass(frozen=True)
class QAT(Config):
    """Fake quantization for fine-tuning: 8-bit activations, ``bits``-bit weights, straight-through gradients.

    Fields:
        bits: weight bits, 8 or 4 (4-bit codes are stored packed after :class:`Convert`).
        weights: ``"per_channel"`` or ``"per_tensor"`` weight scales.
        reduce_range: 7-bit activations; None decides by the CPU (True without VNNI).
        exclude: fnmatch patterns of layers left in float.

    Example:
        >>> QAT(bits=4).weights
        'per_channel'
        >>> QAT(bits=3)
        Traceback (most recent call last):
        ...
        deepshrink.errors.ConfigError: QAT.bits=3 is invalid: expected one of 8, 4
    """

    bits: int = 8
    weights: str = "per_channel"
    reduce_range: bool | None = None
    exclude: tuple[str, ...] = ()

    def validate(self) -> None:
        check_choice(self, "bits", (8, 4))
        check_choice(self, "weights", WEIGHT_SCHEMES)
        if self.reduce_range is not None and not isinstance(self.reduce_range, bool):
            raise ConfigError("reduce_range", self.reduce_range, "true, false or null (decide by the CPU)", "QAT")
        if isinstance(self.exclude, str) or not all(isinstance(p, str) for p in self.exclude):
            raise ConfigError("exclude", self.exclude, "a list of layer-name patterns such as ['fc*']", "QAT")


@register_config("convert")
@dataclass(frozen=True)
class Convert(Config):
    """Turn fake quantization (QAT) and binary/ternary shadow weights into the real low-bit model.

    Example:
        >>> from torch import nn
        >>> quantize_(nn.Linear(2, 2), Convert()).figures
        {'int8_layers': 0, 'low_bit_layers': 0}
    """


@quantize_.register(QAT)
def qat_prepare(model: nn.Module, config: QAT, *, example_inputs: Any = None, calibration: Any = None, data: Any = None,
                **_: Any) -> Report:
    """Handler of ``quantize_`` for :class:`QAT`: fake quantizers in place, the model stays trainable.

    ``example_inputs`` (a tuple for ``model(*inputs)``) steer the trace; without
    them the first batch of ``calibration`` or ``data.train`` is used.
    """
    if any(isinstance(m, IntegerLayer) for m in model.modules()) or graph_of(model) is not None:
        raise ConfigError("model", "an int8 or QAT model", "a float model", "QAT")
    if example_inputs is None:
        example_inputs = calibration_batches(model, calibration, data, batches=1, batch_size=2)[0]
    example = tuple(example_inputs) if isinstance(example_inputs, (list, tuple)) else (example_inputs,)
    reduce_range = default_reduce_range() if config.reduce_range is None else config.reduce_range
    per_channel = config.weights == "per_channel"
    qc = qconfig(per_channel=per_channel, reduce_range=reduce_range, observer="minmax", weight_bits=config.bits, qat=True)
    was_training = model.training
    try:
        prepared = prepare(model, example, qconfig_mapping(model, qc, exclude=config.exclude, qat=True), qat=True)
    except Exception as exc:  # noqa: BLE001 - torch.fx raises many kinds of error for untraceable code
        raise ConfigError("model", type(model).__name__, f"a model torch.fx can trace for QAT ({type(exc).__name__}: "
                          f"{str(exc)[:200]})", "QAT") from None
    _check_converts(prepared, example, config, type(model).__name__)
    # What conversion must record so that the saved file rebuilds the same graph.
    object.__setattr__(prepared, _QAT_ATTR, {"per_channel": per_channel, "reduce_range": reduce_range,
                                             "weight_bits": config.bits, "exclude": list(config.exclude),
                                             "inputs": _input_signature(example)})
    install_graph(model, prepared)
    model.train(was_training)
    report = Report(method=f"qat{config.bits}")
    report.changed = [n for n, m in prepared.named_modules() if hasattr(m, "weight_fake_quant")]
    report.figures.update({"bits": config.bits, "layers": len(report.changed), "reduce_range": reduce_range})
    return report


def _check_converts(prepared: nn.Module, example: tuple[Any, ...], config: QAT, model_name: str) -> None:
    """Convert a copy and run it once, so that a model whose int8 graph cannot run is refused before training.

    A graph can convert and still fail when run: torch's quantized kernels do not
    cover every op on every layout (ShuffleNetV2's channel shuffle: "required rank 4
    tensor to use channels_last format").
    """
    trial = copy.deepcopy(prepared)
    # Observers see one batch, so the trial's scales are real; conversion always lands on the CPU (the
    # integer kernels run there), wherever QAT trains.
    exc = forward_error(trial, example)
    if exc is None:
        on_cpu = tuple(t.cpu() if isinstance(t, torch.Tensor) else t for t in example)
        try:
            exc = forward_error(convert_graph(trial.cpu(), weight_bits=config.bits), on_cpu)
        except Exception as failed:  # noqa: BLE001 - conversion itself can fail the same way
            exc = failed
    if exc is not None:
        raise ConfigError("model", model_name,
                          f"a model whose int8 graph runs after conversion ({type(exc).__name__}: {str(exc)[:200]}); "
                          "exclude the layers around the failing op (QAT(exclude=[...])), or use "
                          "Int8(activations='dynamic') or static Int8, which falls back to per-layer int8", "QAT")


def convert(model: nn.Module) -> Report:
    """Convert in place: a QAT graph to the int8 model, binary/ternary shadow weights to low-bit layers.

    Example:
        >>> from torch import nn
        >>> convert(nn.Sequential(nn.Linear(2, 2))).changed
        []
    """
    report = Report(method="convert")
    graph = graph_of(model)
    int8_layers: list[str] = []
    if graph is not None and hasattr(graph, _QAT_ATTR):
        info = dict(getattr(graph, _QAT_ATTR))
        was_training = model.training
        # The integer kernels run on the CPU, wherever fine-tuning ran.
        quantized = convert_graph(graph.cpu(), weight_bits=info["weight_bits"])
        int8_layers = [n for n, m in quantized.named_modules() if isinstance(m, IntegerLayer)]
        install_graph(model, quantized)
        record_surgery(model, {"op": "int8_graph", **info})
        model.train(was_training)
    low_bit = convert_low_bit(model)
    report.changed = int8_layers + low_bit
    report.figures.update({"int8_layers": len(int8_layers), "low_bit_layers": len(low_bit)})
    return report


@quantize_.register(Convert)
def _convert_handler(model: nn.Module, config: Convert, **_: Any) -> Report:
    return convert(model)
