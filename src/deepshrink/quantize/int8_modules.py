"""Integer layers whose state is plain tensors: int8 codes, scales and zero points.

torch's quantized modules keep their weights in quantized tensors and packed
C++ objects, which a .dsz file cannot hold without pickle and a meta-device
probe cannot build. These layers hold what a file stores (``weight`` as int8
codes, per-channel or per-tensor ``weight_scale``/``weight_zero_point``, a
float ``bias``, the output ``scale``/``zero_point``) and pack the weight for
torch's x86 (FBGEMM/oneDNN) integer kernels on first use, so they really
compute in int8:

- :class:`Int8Linear`, :class:`Int8Conv` (1-D, 2-D, 3-D): static int8, a
  quantized tensor in, a quantized tensor out (optionally with a fused ReLU).
  With ``float_io=True`` they quantize their float input with a calibrated
  ``input_scale``/``input_zero_point`` and dequantize their output, so they can
  stand alone in any float model.
- :class:`DynamicInt8Linear`: int8 weights, activations quantized per batch on
  the fly, float in and out (transformers).

``weight_bits`` (8, or 4 after 4-bit QAT) only narrows the range of the codes;
the .dsz codec packs 4-bit codes two per byte (:mod:`deepshrink.codec.int_codecs`).

Example:
    >>> import torch
    >>> from torch import nn
    >>> lin = nn.Linear(16, 4)
    >>> q = DynamicInt8Linear.from_float(lin)
    >>> x = torch.randn(3, 16)
    >>> bool((q(x) - lin(x)).abs().max() < 0.05)
    True
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..codec.tensor_codecs import register_module_hook

__all__ = ["DynamicInt8Linear", "Int8Conv", "Int8Linear", "IntegerLayer", "quantize_weight"]

_CONV_OPS = {
    1: (torch.ops.quantized.conv1d_prepack, torch.ops.quantized.conv1d, torch.ops.quantized.conv1d_relu),
    2: (torch.ops.quantized.conv2d_prepack, torch.ops.quantized.conv2d, torch.ops.quantized.conv2d_relu),
    3: (torch.ops.quantized.conv3d_prepack, torch.ops.quantized.conv3d, torch.ops.quantized.conv3d_relu),
}


def quantize_weight(weight: Tensor, *, per_channel: bool = True, bits: int = 8) -> tuple[Tensor, Tensor, Tensor]:
    """Symmetric quantization of a float weight: ``(int8 codes, scale, zero_point)``.

    Codes lie in ``[-2**(bits-1), 2**(bits-1) - 1]``; ``scale`` is per output
    channel (dim 0) or a scalar. The zero point is 0 (symmetric), kept as a
    tensor so that asymmetric codes need no new format.

    Example:
        >>> q, s, z = quantize_weight(torch.tensor([[1.0, -0.5], [0.25, 0.0]]), bits=4)
        >>> q.tolist(), s.shape
        ([[7, -4], [7, 0]], torch.Size([2]))
    """
    if bits not in (2, 3, 4, 5, 6, 7, 8):
        raise ValueError(f"bits={bits!r} must be an integer from 2 to 8")
    w = weight.detach().float()
    qmin, qmax = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    amax = w.abs().amax(dim=tuple(range(1, w.dim()))) if per_channel and w.dim() > 1 else w.abs().amax()
    # Same rule as torch's symmetric observers: the range [-amax, amax] spans (qmax - qmin) / 2 steps each side.
    scale = (amax / ((qmax - qmin) / 2)).clamp(min=torch.finfo(torch.float32).eps)
    shape = (-1,) + (1,) * (w.dim() - 1) if scale.dim() else ()
    codes = torch.clamp(torch.round(w / scale.reshape(shape)), qmin, qmax).to(torch.int8)
    return codes, scale.float(), torch.zeros_like(scale, dtype=torch.int32)


class IntegerLayer(nn.Module):
    """Shared state of the integer layers: int8 codes, scales, zero points, float bias, packed cache.

    Example:
        >>> layer = Int8Linear(4, 2)
        >>> sorted(layer.state_dict())
        ['bias', 'scale', 'weight', 'weight_scale', 'weight_zero_point', 'zero_point']
    """

    def __init__(self, weight_shape: tuple[int, ...], bias: bool, *, per_channel: bool, weight_bits: int,
                 device: Any = None) -> None:
        super().__init__()
        channels = (weight_shape[0],) if per_channel else ()
        self.register_buffer("weight", torch.zeros(weight_shape, dtype=torch.int8, device=device))
        self.register_buffer("weight_scale", torch.ones(channels, dtype=torch.float32, device=device))
        self.register_buffer("weight_zero_point", torch.zeros(channels, dtype=torch.int32, device=device))
        self.register_buffer("bias", torch.zeros(weight_shape[0], device=device) if bias else None)
        self.weight_bits = weight_bits
        self._packed: Any = None
        self._qparams = None

    @property
    def per_channel(self) -> bool:
        return self.weight_scale.dim() == 1

    def set_weight(self, codes: Tensor, scale: Tensor, zero_point: Tensor, bias: Tensor | None) -> None:
        """Install integer codes and their quantization parameters (shapes must match)."""
        with torch.no_grad():
            self.weight.copy_(codes)
            self.weight_scale.copy_(scale)
            self.weight_zero_point.copy_(zero_point)
            if self.bias is not None and bias is not None:
                self.bias.copy_(bias)
        self.invalidate()

    def qweight(self) -> Tensor:
        """The weight as a torch quantized tensor (what the kernels pack)."""
        if self.per_channel:
            return torch._make_per_channel_quantized_tensor(
                self.weight, self.weight_scale.double(), self.weight_zero_point.long(), 0
            )
        return torch._make_per_tensor_quantized_tensor(self.weight, float(self.weight_scale), int(self.weight_zero_point))

    def dequantized_weight(self) -> Tensor:
        """The float weight the codes stand for.

        Example:
            >>> Int8Linear(3, 2).dequantized_weight().shape
            torch.Size([2, 3])
        """
        return self.qweight().dequantize()

    def _pack(self) -> Any:
        raise NotImplementedError

    def packed(self) -> Any:
        """Packed weights for the integer kernel (cached; see :meth:`invalidate`)."""
        if self._packed is None:
            self._packed = self._pack()
        return self._packed

    def invalidate(self) -> None:
        """Drop the packed weights; loading, ``set_weight``, ``.to()`` and assigning a tensor call it.

        Edit the integer tensors of a layer in place only through :meth:`set_weight` (or call this after).
        """
        self._packed = None
        self._qparams: tuple[float, int, float, int] | None = None

    def qparams(self) -> tuple[float, int, float, int]:
        """Output and input (scale, zero point) as Python numbers, cached like the packed weights."""
        if getattr(self, "_qparams", None) is None:
            inp = (float(self.input_scale), int(self.input_zero_point)) if "input_scale" in self._buffers else (1.0, 0)
            out = (float(self.scale), int(self.zero_point)) if "scale" in self._buffers else (1.0, 0)
            self._qparams = (*out, *inp)
        return self._qparams  # type: ignore[return-value]

    def __setattr__(self, name: str, value: Any) -> None:
        super().__setattr__(name, value)
        if name in self._buffers or name in self._parameters:
            self.invalidate()

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.invalidate()

    def __getstate__(self) -> dict[str, Any]:
        # Packed C++ weights are a cache: copies rebuild them from the plain tensors.
        state = self.__dict__.copy()
        state["_packed"] = None
        state["_qparams"] = None
        return state

    def _apply(self, fn: Any, recurse: bool = True) -> IntegerLayer:
        self.invalidate()
        return super()._apply(fn, recurse)


class _StaticMixin(IntegerLayer):
    """Output (and, with ``float_io``, input) quantization parameters of a static int8 layer."""

    def _init_static(self, relu: bool, float_io: bool, device: Any) -> None:
        self.relu = relu
        self.float_io = float_io
        self.register_buffer("scale", torch.ones((), dtype=torch.float32, device=device))
        self.register_buffer("zero_point", torch.zeros((), dtype=torch.int64, device=device))
        if float_io:
            self.register_buffer("input_scale", torch.ones((), dtype=torch.float32, device=device))
            self.register_buffer("input_zero_point", torch.zeros((), dtype=torch.int64, device=device))

    def _run(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        if self.float_io:
            _, _, in_scale, in_zp = self.qparams()
            x = torch.quantize_per_tensor(x.float(), in_scale, in_zp, torch.quint8)
            return self._run(x).dequantize()
        return self._run(x)


class Int8Linear(_StaticMixin):
    """Static int8 linear layer: ``quantized.linear(_relu)`` on quint8 activations and qint8 weights.

    Example:
        >>> import torch
        >>> layer = Int8Linear(4, 2, float_io=True)
        >>> layer(torch.randn(3, 4)).shape
        torch.Size([3, 2])
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, relu: bool = False,
                 float_io: bool = False, per_channel: bool = True, weight_bits: int = 8, device: Any = None) -> None:
        super().__init__((out_features, in_features), bias, per_channel=per_channel, weight_bits=weight_bits, device=device)
        self.in_features, self.out_features = in_features, out_features
        self._init_static(relu, float_io, device)

    def _pack(self) -> Any:
        return torch.ops.quantized.linear_prepack(self.qweight(), self.bias)

    def _run(self, x: Tensor) -> Tensor:
        op = torch.ops.quantized.linear_relu if self.relu else torch.ops.quantized.linear
        scale, zero_point, _, _ = self.qparams()
        return op(x, self.packed(), scale, zero_point)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, relu={self.relu}, bits={self.weight_bits}"


class Int8Conv(_StaticMixin):
    """Static int8 convolution (1-D, 2-D or 3-D, zero padding), optionally with a fused ReLU.

    Example:
        >>> import torch
        >>> conv = Int8Conv(2, 1, 4, (3, 3), padding=(1, 1), float_io=True)
        >>> conv(torch.randn(1, 1, 8, 8)).shape
        torch.Size([1, 4, 8, 8])
    """

    def __init__(self, dims: int, in_channels: int, out_channels: int, kernel_size: tuple[int, ...], *,
                 stride: tuple[int, ...] | None = None, padding: tuple[int, ...] | None = None,
                 dilation: tuple[int, ...] | None = None, groups: int = 1, bias: bool = True, relu: bool = False,
                 float_io: bool = False, per_channel: bool = True, weight_bits: int = 8, device: Any = None) -> None:
        if dims not in _CONV_OPS:
            raise ValueError(f"dims={dims!r} must be 1, 2 or 3")
        shape = (out_channels, in_channels // groups, *kernel_size)
        super().__init__(shape, bias, per_channel=per_channel, weight_bits=weight_bits, device=device)
        self.dims = dims
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, tuple(kernel_size)
        self.stride = tuple(stride or (1,) * dims)
        self.padding = tuple(padding or (0,) * dims)
        self.dilation = tuple(dilation or (1,) * dims)
        self.groups = groups
        self._init_static(relu, float_io, device)

    def _pack(self) -> Any:
        prepack = _CONV_OPS[self.dims][0]
        return prepack(self.qweight(), self.bias, list(self.stride), list(self.padding), list(self.dilation), self.groups)

    def _run(self, x: Tensor) -> Tensor:
        op = _CONV_OPS[self.dims][2 if self.relu else 1]
        scale, zero_point, _, _ = self.qparams()
        return op(x, self.packed(), scale, zero_point)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, groups={self.groups}, relu={self.relu}, bits={self.weight_bits}")


class DynamicInt8Linear(IntegerLayer):
    """Dynamic int8 linear: int8 weights, activations quantized per call, float in and out.

    Example:
        >>> import torch
        >>> DynamicInt8Linear(8, 3)(torch.randn(2, 5, 8)).shape
        torch.Size([2, 5, 3])
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True, *, per_channel: bool = True,
                 reduce_range: bool = False, weight_bits: int = 8, device: Any = None) -> None:
        super().__init__((out_features, in_features), bias, per_channel=per_channel, weight_bits=weight_bits, device=device)
        self.in_features, self.out_features = in_features, out_features
        self.reduce_range = reduce_range

    @classmethod
    def from_float(cls, linear: nn.Linear, *, per_channel: bool = True, reduce_range: bool = False,
                   weight_bits: int = 8) -> DynamicInt8Linear:
        """Quantize a float ``nn.Linear`` (symmetric int8 weights)."""
        layer = cls(linear.in_features, linear.out_features, linear.bias is not None, per_channel=per_channel,
                    reduce_range=reduce_range, weight_bits=weight_bits, device=linear.weight.device)
        if linear.weight.device.type != "meta":
            codes, scale, zp = quantize_weight(linear.weight, per_channel=per_channel, bits=weight_bits)
            layer.set_weight(codes, scale, zp, None if linear.bias is None else linear.bias.detach().float())
        return layer

    def _pack(self) -> Any:
        return torch.ops.quantized.linear_prepack(self.qweight(), self.bias)

    def forward(self, x: Tensor) -> Tensor:
        dtype = x.dtype
        out = torch.ops.quantized.linear_dynamic(x.float(), self.packed(), self.reduce_range)
        return out if dtype == torch.float32 else out.to(dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bits={self.weight_bits}"


@register_module_hook(IntegerLayer)
def _packed_low_bit_codes(module: nn.Module, tensor_name: str) -> str | None:
    # Codes narrower than a byte are stored packed (4-bit: two per byte); 8-bit codes take the smallest codec.
    if tensor_name == "weight" and getattr(module, "weight_bits", 8) < 8:
        return "packed"
    return None
