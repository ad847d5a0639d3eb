"""FitNets hints (Romero et al. 2015): learned adapters from student feature maps to a teacher's.

The adapters are trainable, so the engine trains a :class:`HintedStudent`, a module
holding the student and its adapters: checkpoints, resume and data-parallel runs
then cover the adapters with no special case. Its ``forward`` is the student's;
while training it also captures the hinted student features (forward hooks that
live for one call) and passes them through their adapters, inside the forward, so
that data-parallel wrappers see every trainable computation.

Example:
    >>> import torch
    >>> from torch import nn
    >>> student = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    >>> adapter = make_adapter(torch.zeros(1, 3), torch.zeros(1, 5))
    >>> wrapped = HintedStudent(student, ["0"], [adapter])
    >>> out = wrapped(torch.zeros(2, 4))
    >>> out.shape, wrapped.hint_outputs[0].shape
    (torch.Size([2, 2]), torch.Size([2, 5]))
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# An adapter bigger than this is a sign of a mismatched pair of layers, not a useful regressor.
MAX_ADAPTER_PARAMS = 50_000_000


def feature_of(output: Any) -> Tensor:
    """The tensor a hint uses from a module's output (the first tensor of a tuple, e.g. a transformer layer's).

    Example:
        >>> feature_of((torch.ones(1), None)).shape
        torch.Size([1])
    """
    if isinstance(output, Tensor):
        return output
    hidden = getattr(output, "last_hidden_state", None)
    if isinstance(hidden, Tensor):
        return hidden
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise ValueError(f"a hinted module must output a tensor (or a tuple starting with one); got {type(output).__name__}")


class Resize2d(nn.Module):
    """Resizes feature maps to a fixed spatial size: average pooling to shrink, bilinear interpolation to grow.

    Example:
        >>> Resize2d((2, 2))(torch.ones(1, 3, 4, 4)).shape
        torch.Size([1, 3, 2, 2])
    """

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = (int(size[0]), int(size[1]))

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        if (h, w) == self.size:
            return x
        if h >= self.size[0] and w >= self.size[1]:
            return F.adaptive_avg_pool2d(x, self.size)
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)

    def extra_repr(self) -> str:
        return f"size={self.size}"


class _LastDim(nn.Module):
    """A linear map over the last dimension (token features of a sequence)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.linear = nn.Linear(cin, cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


def make_adapter(student_feature: Tensor, teacher_feature: Tensor) -> nn.Module:
    """The FitNets regressor mapping a student feature (batch first) to the teacher's shape.

    - two feature maps (N, C, H, W): a 1x1 convolution from the student's channels to
      the teacher's, then a resize to the teacher's height and width;
    - two token sequences (N, L, D) of the same length: a linear map of each token's features;
    - anything else: flatten both, then one linear map.

    Example:
        >>> make_adapter(torch.zeros(1, 8, 12, 12), torch.zeros(1, 20, 4, 4))
        Sequential(
          (0): Conv2d(8, 20, kernel_size=(1, 1), stride=(1, 1))
          (1): Resize2d(size=(4, 4))
        )
    """
    s, t = tuple(student_feature.shape[1:]), tuple(teacher_feature.shape[1:])
    if len(s) == 3 and len(t) == 3:
        return nn.Sequential(nn.Conv2d(s[0], t[0], 1), Resize2d((t[1], t[2])))
    if len(s) == 2 and len(t) == 2 and s[0] == t[0]:
        return _LastDim(s[1], t[1])
    n_in, n_out = math.prod(s), math.prod(t)
    if (n_in + 1) * n_out > MAX_ADAPTER_PARAMS:
        raise ValueError(
            f"a hint from a student feature of shape {list(s)} to a teacher feature of shape {list(t)} needs a"
            f" {n_in}x{n_out} linear adapter; hint a pair of layers whose outputs are closer in shape"
        )
    return nn.Sequential(nn.Flatten(1), nn.Linear(n_in, n_out), nn.Unflatten(1, t))


class HintedStudent(nn.Module):
    """The student plus its hint adapters, trained together by the engine.

    ``forward`` returns the student's output. In training mode it also sets
    ``hint_outputs``: the adapted features of the hinted student modules, in
    the order of ``names``.

    Example:
        >>> student = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
        >>> w = HintedStudent(student, ["0"], [nn.Linear(3, 6)])
        >>> sorted(w.state_dict())[:2]
        ['adapters.0.bias', 'adapters.0.weight']
    """

    def __init__(self, student: nn.Module, names: Sequence[str], adapters: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(names) != len(adapters):
            raise ValueError(f"{len(names)} hinted modules but {len(adapters)} adapters")
        self.student = student
        self.adapters = nn.ModuleList(adapters)
        self.names = list(names)
        self.hint_outputs: list[Tensor] = []

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not self.training or not self.names:
            return self.student(*args, **kwargs)
        captured: dict[int, Tensor] = {}
        handles = [
            self.student.get_submodule(name).register_forward_hook(
                lambda _m, _a, out, i=i: captured.__setitem__(i, feature_of(out))
            )
            for i, name in enumerate(self.names)
        ]
        try:
            out = self.student(*args, **kwargs)
        finally:
            for h in handles:
                h.remove()
        missing = [self.names[i] for i in range(len(self.names)) if i not in captured]
        if missing:
            raise ValueError(f"hinted student modules {missing} did not run in the forward pass")
        self.hint_outputs = [adapter(captured[i]) for i, adapter in enumerate(self.adapters)]
        return out


class FeatureCapture:
    """Context manager: the outputs of named modules during one forward pass (teacher side of hints).

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> with FeatureCapture(m, ["0"]) as cap:
        ...     _ = m(torch.zeros(1, 2))
        >>> cap.features["0"].shape
        torch.Size([1, 3])
    """

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        self.model, self.names = model, list(names)
        self.features: dict[str, Tensor] = {}
        self._handles: list[Any] = []

    def __enter__(self) -> FeatureCapture:
        for name in self.names:
            module = self.model.get_submodule(name)
            self._handles.append(
                module.register_forward_hook(lambda _m, _a, out, n=name: self.features.__setitem__(n, feature_of(out)))
            )
        return self

    def __exit__(self, *exc: Any) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
