"""Binary and ternary weights with real-valued shadow weights: BinaryConnect, XNOR-Net, TWN.

``quantize_(model, BinaryWeights(method=...))`` or ``quantize_(model, TernaryWeights())``
installs a :class:`LowBitWeight` parametrization on every selected Conv/Linear
weight. The stored parameter stays real-valued (the *shadow* weight that the
optimizer updates); the forward pass sees its binary or ternary image, and the
gradient passes straight through (zeroed where the shadow weight lies beyond
the clip range, as in BinaryConnect):

- ``binaryconnect`` (Courbariaux et al. 2015): ``H * sign(w)`` with one fixed
  constant ``H`` per layer (the layer's mean ``|w|`` when binarized).
- ``xnor`` (Rastegari et al. 2016): ``alpha_c * sign(w)``, ``alpha_c`` the mean
  ``|w|`` of output channel ``c``, recomputed every step.
- ternary (Li et al. 2016, TWN): ``alpha * t``, ``t = sign(w)`` where
  ``|w| > threshold * mean|w|`` and 0 elsewhere, ``alpha`` the mean ``|w|`` of the kept weights.

:func:`~deepshrink.quantize.qat.convert` then swaps each layer for a
:class:`LowBitLayer` holding only the codes (1 bit per weight for binary, an
entropy-coded ternary code of at most 2 bits) and the scales.

Example:
    >>> import torch, deepshrink as ds
    >>> model = ds.models.create("lenet300")
    >>> _ = ds.quantize_(model, ds.BinaryWeights(method="xnor"))
    >>> row = model.fc1.weight[0]
    >>> len(set(row.abs().tolist()))
    1
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from ..codec.tensor_codecs import register_module_hook
from ..config import Config, check_choice, check_range, register_config
from ..dispatch import Report, quantize_
from ..errors import ConfigError
from ..surgery import register_surgery, set_module
from ..train.callbacks import Callback, TrainState
from .int8_modules import IntegerLayer

BINARY_METHODS = ("binaryconnect", "xnor")
_CONVS = {nn.Conv1d: (1, F.conv1d), nn.Conv2d: (2, F.conv2d), nn.Conv3d: (3, F.conv3d)}


class StraightThrough(torch.autograd.Function):
    """Forward: the quantized value ``q`` exactly. Backward: the gradient of ``w`` as is, 0 where ``|w| > clip``.

    Example:
        >>> w = torch.tensor([0.5, -2.0], requires_grad=True)
        >>> StraightThrough.apply(w, torch.sign(w.detach()), 1.0).sum().backward()
        >>> w.grad.tolist()
        [1.0, 0.0]
    """

    @staticmethod
    def forward(ctx: Any, w: Tensor, q: Tensor, clip: float | None) -> Tensor:  # type: ignore[override]
        ctx.clip = clip
        if clip is not None:
            ctx.save_for_backward(w)
        return q.clone()

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None]:  # type: ignore[override]
        if ctx.clip is None:
            return grad, None, None
        (w,) = ctx.saved_tensors
        return grad * (w.abs() <= ctx.clip).to(grad.dtype), None, None


def _channel_mean(x: Tensor, per_channel: bool) -> Tensor:
    if per_channel and x.dim() > 1:
        return x.mean(dim=tuple(range(1, x.dim())), keepdim=True)
    return x.mean()


def binary_codes(w: Tensor) -> Tensor:
    """Signs as booleans (True for ``w >= 0``: a zero weight becomes +1, never 0).

    Example:
        >>> binary_codes(torch.tensor([0.0, -1.0])).tolist()
        [True, False]
    """
    return w >= 0


def ternary_codes(w: Tensor, threshold: float, per_channel: bool) -> tuple[Tensor, Tensor]:
    """TWN codes in {-1, 0, 1} (int8) and the scale ``alpha`` (per channel or scalar).

    Example:
        >>> codes, alpha = ternary_codes(torch.tensor([[1.0, -0.1, -0.9]]), 0.7, True)
        >>> codes.tolist(), alpha.tolist()
        ([[1, 0, -1]], [0.949999988079071])
    """
    a = w.detach().abs()
    delta = threshold * _channel_mean(a, per_channel)
    keep = a > delta
    dims = tuple(range(1, w.dim())) if per_channel and w.dim() > 1 else tuple(range(w.dim()))
    alpha = (a * keep).sum(dim=dims) / keep.sum(dim=dims).clamp(min=1)
    codes = (torch.sign(w.detach()) * keep).to(torch.int8)
    return codes, alpha.float()


class LowBitWeight(nn.Module):
    """Parametrization: the binary or ternary image of the shadow weight, straight-through gradients.

    ``levels`` 2 (binary) or 3 (ternary); ``fixed_scale`` (BinaryConnect's
    ``H``) or a scale recomputed from the shadow weight (XNOR-Net, TWN).

    Example:
        >>> p = LowBitWeight(levels=2, per_channel=True)
        >>> p(torch.tensor([[0.5, -1.5]])).tolist()
        [[1.0, -1.0]]
    """

    def __init__(self, levels: int, per_channel: bool, fixed_scale: float | None = None, threshold: float = 0.7) -> None:
        super().__init__()
        self.levels, self.per_channel, self.threshold = levels, per_channel, threshold
        self.fixed_scale = fixed_scale

    def scale_and_codes(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """``(scale, codes)``: scale per output channel (or scalar); codes bool (binary) or int8 (ternary)."""
        if self.levels == 3:
            codes, alpha = ternary_codes(w, self.threshold, self.per_channel)
            return alpha, codes
        if self.fixed_scale is not None:
            return torch.tensor(self.fixed_scale, dtype=torch.float32, device=w.device), binary_codes(w.detach())
        alpha = _channel_mean(w.detach().abs(), self.per_channel).reshape(-1 if self.per_channel and w.dim() > 1 else ())
        return alpha.float(), binary_codes(w.detach())

    def forward(self, w: Tensor) -> Tensor:
        if self.levels == 3:
            codes, _ = ternary_codes(w, self.threshold, self.per_channel)
            keep = codes != 0
            # TWN: alpha in closed form from the kept shadow weights (differentiable), codes straight through
            dims = tuple(range(1, w.dim())) if self.per_channel and w.dim() > 1 else tuple(range(w.dim()))
            alpha = (w.abs() * keep).sum(dim=dims, keepdim=True) / keep.sum(dim=dims, keepdim=True).clamp(min=1)
            return alpha * StraightThrough.apply(w, codes.to(w.dtype), None)
        sign = torch.where(w.detach() >= 0, 1.0, -1.0).to(w.dtype)
        if self.fixed_scale is not None:
            return self.fixed_scale * StraightThrough.apply(w, sign, self.fixed_scale)
        alpha = _channel_mean(w.abs(), self.per_channel)  # XNOR-Net: gradient reaches alpha too
        return alpha * StraightThrough.apply(w, sign, None)


@dataclass(frozen=True)
class _LowBitConfig(Config):
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()

    def _check_patterns(self) -> None:
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(p, str) for p in value):
                raise ConfigError(name, value, "a list of layer-name patterns such as ['fc*']", type(self).__name__)


@register_config("binary_weights")
@dataclass(frozen=True)
class BinaryWeights(_LowBitConfig):
    """Binary weights with real-valued shadow weights (1 bit per weight once converted).

    Fields:
        method: ``"binaryconnect"`` (one fixed scale per layer) or ``"xnor"``
            (XNOR-Net's per-channel mean ``|w|``).
        include, exclude: fnmatch patterns on layer names (all Linear/Conv layers by default).

    Example:
        >>> BinaryWeights().method
        'xnor'
        >>> BinaryWeights(method="sign")
        Traceback (most recent call last):
        ...
        deepshrink.errors.ConfigError: BinaryWeights.method='sign' is invalid: expected one of 'binaryconnect', 'xnor'
    """

    method: str = "xnor"

    def validate(self) -> None:
        check_choice(self, "method", BINARY_METHODS)
        self._check_patterns()

    def training_callbacks(self, model: nn.Module) -> list[Callback]:
        """BinaryConnect clips shadow weights to [-H, H] after each step (used by recipes)."""
        return [ClipShadowWeights()] if self.method == "binaryconnect" else []


@register_config("ternary_weights")
@dataclass(frozen=True)
class TernaryWeights(_LowBitConfig):
    """Ternary weights (TWN): {-alpha, 0, +alpha}, ``threshold * mean|w|`` decides the zeros.

    Fields:
        threshold: the zero band as a fraction of mean ``|w|`` (TWN: 0.7).
        per_channel: one ``alpha`` and threshold per output channel (else per layer, as in TWN).
        include, exclude: fnmatch patterns on layer names.

    Example:
        >>> TernaryWeights(threshold=0.5).per_channel
        True
    """

    threshold: float = 0.7
    per_channel: bool = True

    def validate(self) -> None:
        check_range(self, "threshold", 0.0, 2.0, hi_open=True)
        if not isinstance(self.per_channel, bool):
            raise ConfigError("per_channel", self.per_channel, "true or false", "TernaryWeights")
        self._check_patterns()


class ClipShadowWeights(Callback):
    """BinaryConnect's clip: after every step, shadow weights of fixed-scale binary layers stay in [-H, H].

    Example:
        >>> ClipShadowWeights().state_dict()
        {}
    """

    def on_step_end(self, state: TrainState) -> None:
        with torch.no_grad():
            for module, p in low_bit_parametrizations(state.model):
                if p.fixed_scale is not None:
                    original = module.parametrizations["weight"].original
                    original.clamp_(-p.fixed_scale, p.fixed_scale)


def low_bit_parametrizations(model: nn.Module) -> list[tuple[nn.Module, LowBitWeight]]:
    """Every (module, LowBitWeight) pair of a model.

    Example:
        >>> low_bit_parametrizations(nn.Linear(2, 2))
        []
    """
    found = []
    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            for p in module.parametrizations["weight"]:  # type: ignore[index]
                if isinstance(p, LowBitWeight):
                    found.append((module, p))
    return found


def _targets(model: nn.Module, cfg: _LowBitConfig, report: Report) -> list[tuple[str, nn.Module]]:
    out = []
    for name, m in model.named_modules():
        if not name or not (type(m) is nn.Linear or (type(m) in _CONVS and m.padding_mode == "zeros")):
            continue
        if cfg.include and not any(fnmatch.fnmatchcase(name, p) for p in cfg.include):
            continue
        if cfg.exclude and any(fnmatch.fnmatchcase(name, p) for p in cfg.exclude):
            report.skipped[name] = "excluded by pattern"
            continue
        if parametrize.is_parametrized(m, "weight"):
            report.skipped[name] = "already parametrized (masked, shared or low-bit): fold it first"
            continue
        out.append((name, m))
    return out


def _install(model: nn.Module, cfg: _LowBitConfig, method: str, make: Any) -> Report:
    if any(isinstance(m, IntegerLayer) for m in model.modules()):
        raise ConfigError("model", "an int8 model", "a float model", type(cfg).__name__)
    report = Report(method=method)
    for name, m in _targets(model, cfg, report):
        parametrize.register_parametrization(m, "weight", make(m.weight.detach()), unsafe=True)
        report.changed.append(name)
    report.figures["layers"] = len(report.changed)
    return report


@quantize_.register(BinaryWeights)
def binarize(model: nn.Module, config: BinaryWeights, **_: Any) -> Report:
    """Handler of ``quantize_`` for :class:`BinaryWeights`.

    Example:
        >>> from torch import nn
        >>> binarize(nn.Sequential(nn.Linear(4, 2)), BinaryWeights(method="binaryconnect")).changed
        ['0']
    """
    if config.method == "binaryconnect":
        return _install(model, config, "binaryconnect",
                        lambda w: LowBitWeight(2, per_channel=False, fixed_scale=float(w.abs().mean().clamp(min=1e-8))))
    return _install(model, config, "xnor", lambda w: LowBitWeight(2, per_channel=True))


@quantize_.register(TernaryWeights)
def ternarize(model: nn.Module, config: TernaryWeights, **_: Any) -> Report:
    """Handler of ``quantize_`` for :class:`TernaryWeights`.

    Example:
        >>> from torch import nn
        >>> ternarize(nn.Sequential(nn.Linear(4, 2)), TernaryWeights()).figures
        {'layers': 1}
    """
    return _install(model, config, "ternary",
                    lambda w: LowBitWeight(3, per_channel=config.per_channel, threshold=config.threshold))


# --------------------------------------------------------------------------- the converted layer


class LowBitLayer(nn.Module):
    """A Linear or Conv layer whose weight is ``scale * code``: 1-bit signs or ternary codes, float compute.

    Example:
        >>> layer = LowBitLayer.like(nn.Linear(4, 3), levels=2, per_channel=True)
        >>> layer(torch.randn(2, 4)).shape, layer.weight_code.dtype
        (torch.Size([2, 3]), torch.bool)
    """

    def __init__(self, kind: int, weight_shape: tuple[int, ...], bias: bool, *, levels: int, per_channel: bool,
                 conv: dict[str, Any] | None = None, device: Any = None) -> None:
        super().__init__()
        if levels not in (2, 3):
            raise ValueError(f"levels={levels!r} must be 2 (binary) or 3 (ternary)")
        self.kind, self.levels, self.conv = kind, levels, dict(conv or {})
        code_dtype = torch.bool if levels == 2 else torch.int8
        self.register_buffer("weight_code", torch.zeros(weight_shape, dtype=code_dtype, device=device))
        self.register_buffer("weight_scale", torch.ones((weight_shape[0],) if per_channel else (), device=device))
        self.register_buffer("bias", torch.zeros(weight_shape[0], device=device) if bias else None)

    @classmethod
    def like(cls, m: nn.Module, *, levels: int, per_channel: bool) -> LowBitLayer:
        """An empty low-bit layer shaped like the Linear/Conv ``m`` (meta device included)."""
        if type(m) is nn.Linear:
            kind, conv = 0, None
        elif type(m) in _CONVS and m.padding_mode == "zeros":
            kind = _CONVS[type(m)][0]
            conv = {"stride": list(m.stride), "padding": m.padding if isinstance(m.padding, str) else list(m.padding),
                    "dilation": list(m.dilation), "groups": m.groups}
        else:
            raise ValueError(f"{type(m).__name__} has no low-bit layer here (Linear, Conv1d/2d/3d with zero padding)")
        w = m.weight
        return cls(kind, tuple(w.shape), m.bias is not None, levels=levels, per_channel=per_channel, conv=conv,
                   device=w.device)

    @property
    def weight(self) -> Tensor:
        """The float weight: ``+-scale`` (binary) or ``{-scale, 0, scale}`` (ternary), bit-exact with training.

        A property, like a Linear's ``weight``: some models read a child's weight directly
        (Swin's attention calls ``F.linear(x, self.qkv.weight, ...)``).
        """
        shape = (-1,) + (1,) * (self.weight_code.dim() - 1) if self.weight_scale.dim() else ()
        scale = self.weight_scale.reshape(shape)
        if self.levels == 2:
            return torch.where(self.weight_code, scale, -scale)
        return scale * self.weight_code.to(scale.dtype)

    def forward(self, x: Tensor) -> Tensor:
        w = self.weight
        if self.kind == 0:
            return F.linear(x, w, self.bias)
        return _CONVS_BY_DIM[self.kind](x, w, self.bias, **self.conv)


_CONVS_BY_DIM = {d: fn for d, fn in _CONVS.values()}


@register_module_hook(LowBitLayer)
def _packed_signs(module: nn.Module, tensor_name: str) -> str | None:
    # Signs: exactly one bit each. Ternary codes: left to the entropy-coded codecs (about 1.5 bits).
    return "packed" if tensor_name == "weight_code" and getattr(module, "levels", 0) == 2 else None


def convert_low_bit(model: nn.Module) -> list[str]:
    """Swap every low-bit parametrized layer for a :class:`LowBitLayer` with the same forward values.

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 2))
        >>> _ = ternarize(m, TernaryWeights())
        >>> x = torch.randn(3, 4); y = m(x)
        >>> convert_low_bit(m), torch.equal(m(x), y)
        (['0'], True)
    """
    from ..surgery import record_surgery

    names = {id(m): n for n, m in model.named_modules()}
    groups: dict[tuple[int, bool], list[str]] = {}
    for module, p in low_bit_parametrizations(model):
        name = names[id(module)]
        w = module.weight.detach()  # the parametrized value (what the model computed with)
        shadow = module.parametrizations["weight"].original.detach()  # type: ignore[index]
        scale, codes = p.scale_and_codes(shadow)
        per_channel = scale.dim() == 1
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        layer = LowBitLayer.like(module, levels=p.levels, per_channel=per_channel)
        with torch.no_grad():
            layer.weight_code.copy_(codes)
            layer.weight_scale.copy_(scale)
            if module.bias is not None:
                layer.bias.copy_(module.bias.detach())
        if not torch.equal(layer.weight, w):  # the codes must give back what training computed with
            raise RuntimeError(f"{name}: low-bit conversion changed the weight values")
        set_module(model, name, layer)
        groups.setdefault((p.levels, per_channel), []).append(name)
    for (levels, per_channel), mods in groups.items():
        record_surgery(model, {"op": "low_bit", "modules": mods, "levels": levels, "per_channel": per_channel})
    return [n for mods in groups.values() for n in mods]


@register_surgery("low_bit")
def replay_low_bit(model: nn.Module, entry: dict[str, Any]) -> None:
    """Swap the named layers for empty :class:`LowBitLayer` s (the file fills them).

    Example:
        >>> m = nn.Sequential(nn.Conv2d(1, 2, 3))
        >>> replay_low_bit(m, {"op": "low_bit", "modules": ["0"], "levels": 3, "per_channel": True})
        >>> m[0].weight_code.dtype
        torch.int8
    """
    extra = set(entry) - {"op", "modules", "levels", "per_channel"}
    if extra:
        raise ValueError(f"unknown keys {sorted(extra)}")
    names, levels, per_channel = entry.get("modules"), entry.get("levels"), entry.get("per_channel")
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise ValueError("'modules' must be a list of module names")
    if levels not in (2, 3) or type(levels) is not int or not isinstance(per_channel, bool):
        raise ValueError("'levels' must be 2 or 3 and 'per_channel' true or false")
    for name in names:
        layer = LowBitLayer.like(model.get_submodule(name), levels=levels, per_channel=per_channel)
        set_module(model, name, layer)

