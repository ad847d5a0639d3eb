"""Sparse Linear and Conv2d for CPU inference: only the nonzero weights are stored and multiplied.

Both keep the dense layer's interface: the same inputs and outputs (equal to the
dense layer's up to float rounding), and a ``state_dict`` with the dense
``weight`` and ``bias`` keys, so that a model with sparse layers saves to a .dsz
and loads into its base architecture like any other.

They are for inference: the weights are not parameters, and an input that needs
a gradient raises an error that says to train the dense model instead.

Example:
    >>> import torch
    >>> from torch import nn
    >>> dense = nn.Linear(8, 4)
    >>> with torch.no_grad(): _ = dense.weight.mul_(torch.rand(4, 8) > 0.7)
    >>> sparse = SparseLinear.from_dense(dense)
    >>> x = torch.randn(2, 8)
    >>> torch.allclose(sparse(x), dense(x), atol=1e-6)
    True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import kernels


def _no_grad_check(x: torch.Tensor, layer: str) -> None:
    if torch.is_grad_enabled() and x.requires_grad:
        raise RuntimeError(f"{layer} is an inference layer and has no gradient: train the dense model, then call to_sparse_")
    if x.device.type != "cpu":
        raise RuntimeError(f"{layer} runs on the CPU only; got an input on {x.device} (keep dense layers on accelerators)")


class _SparseBase(nn.Module):
    """Holds a bias parameter-free copy and the dense-weight view for state dicts."""

    weight_shape: tuple[int, ...]
    bias: torch.Tensor | None

    def dense_weight(self) -> torch.Tensor:  # pragma: no cover - overridden
        raise NotImplementedError

    def _set_weight(self, weight: torch.Tensor) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    @property
    def nnz(self) -> int:
        """Number of stored nonzero weights."""
        return int(np.count_nonzero(self._vals))  # type: ignore[attr-defined]

    @property
    def density(self) -> float:
        """Fraction of the dense weight that is nonzero."""
        return self.nnz / max(1, int(np.prod(self.weight_shape)))

    def _save_to_state_dict(self, destination: dict[str, Any], prefix: str, keep_vars: bool) -> None:
        destination[prefix + "weight"] = self.dense_weight()
        if self.bias is not None:
            destination[prefix + "bias"] = self.bias if keep_vars else self.bias.detach()

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, local_metadata: Any, strict: bool,
                              missing_keys: list[str], unexpected_keys: list[str], error_msgs: list[str]) -> None:
        key = prefix + "weight"
        if key not in state_dict:
            missing_keys.append(key)
        else:
            weight = state_dict[key]
            if tuple(weight.shape) != self.weight_shape:
                error_msgs.append(f"size mismatch for {key}: copying a param with shape {tuple(weight.shape)}, "
                                  f"the sparse layer has {self.weight_shape}")
            else:
                self._set_weight(weight)
        if self.bias is not None:
            bkey = prefix + "bias"
            if bkey not in state_dict:
                missing_keys.append(bkey)
            else:
                self.bias = state_dict[bkey].detach().to(torch.float32).clone()
        if strict:
            own = {prefix + "weight"} | ({prefix + "bias"} if self.bias is not None else set())
            for k in state_dict:
                if k.startswith(prefix) and "." not in k[len(prefix):] and k not in own:
                    unexpected_keys.append(k)


class SparseLinear(_SparseBase):
    """``y = x @ W.T + b`` with W stored in SELL-16 form (see :mod:`.kernels`).

    Example:
        >>> import torch
        >>> layer = SparseLinear.from_dense(torch.nn.Linear(4, 3))
        >>> layer(torch.zeros(5, 4)).shape
        torch.Size([5, 3])
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        if weight.dim() != 2:
            raise ValueError(f"SparseLinear needs a 2-D weight; got shape {tuple(weight.shape)}")
        self.out_features, self.in_features = (int(d) for d in weight.shape)
        self.weight_shape = (self.out_features, self.in_features)
        self.bias = None if bias is None else bias.detach().to(torch.float32).clone()
        self._set_weight(weight)

    @classmethod
    def from_dense(cls, layer: nn.Linear) -> SparseLinear:
        """The sparse form of a Linear layer (its effective weight: masks and codebooks applied).

        Example:
            >>> SparseLinear.from_dense(torch.nn.Linear(4, 2, bias=False)).bias is None
            True
        """
        return cls(layer.weight.detach(), None if layer.bias is None else layer.bias.detach())

    def _set_weight(self, weight: torch.Tensor) -> None:
        self._ptr, self._cols, self._vals, self._rows = kernels.sell_from_dense(weight)
        if not kernels.available():  # torch's CSR matmul as the fallback
            self._csr = weight.detach().to(torch.float32).to_sparse_csr()

    def dense_weight(self) -> torch.Tensor:
        """The dense weight, rebuilt from the stored nonzeros.

        Example:
            >>> import torch
            >>> w = torch.tensor([[0.0, 1.5], [-2.0, 0.0]])
            >>> bool(torch.equal(SparseLinear(w, None).dense_weight(), w))
            True
        """
        w = np.zeros(self.weight_shape, dtype=np.float32)
        k = np.arange(self._vals.shape[0])
        slice_of = np.searchsorted(self._ptr, k, side="right") - 1  # entry k sits in lane (k - start) % 16
        rows = self._rows[slice_of * kernels.C + (k - self._ptr[slice_of]) % kernels.C]
        keep = (rows >= 0) & (self._vals != 0)
        w[rows[keep], self._cols[keep].astype(np.int64)] = self._vals[keep]
        return torch.from_numpy(w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _no_grad_check(x, "SparseLinear")
        lead = x.shape[:-1]
        flat = x.reshape(-1, self.in_features).to(torch.float32).contiguous()
        if kernels.available():
            out = torch.empty(flat.shape[0], self.out_features, dtype=torch.float32)
            kernels.sell_matmul(self._ptr, self._cols, self._vals, self._rows, flat.numpy(), out.numpy())
        else:  # pragma: no cover - only where numba is absent
            out = torch.mm(self._csr, flat.t()).t()
        if self.bias is not None:
            out.add_(self.bias)
        return out.reshape(*lead, self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, density={self.density:.4f}"


class SparseConv2d(_SparseBase):
    """A Conv2d (groups=1, zero padding) as im2col plus a sparse CSR matmul.

    Example:
        >>> import torch
        >>> conv = torch.nn.Conv2d(2, 3, 3, padding=1)
        >>> x = torch.randn(1, 2, 5, 5)
        >>> torch.allclose(SparseConv2d.from_dense(conv)(x), conv(x), atol=1e-5)
        True
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, *, stride: tuple[int, int] = (1, 1),
                 padding: tuple[int, int] = (0, 0), dilation: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        if weight.dim() != 4:
            raise ValueError(f"SparseConv2d needs a 4-D weight; got shape {tuple(weight.shape)}")
        self.weight_shape = tuple(int(d) for d in weight.shape)
        self.out_channels, self.in_channels = self.weight_shape[0], self.weight_shape[1]
        self.kernel_size = (self.weight_shape[2], self.weight_shape[3])
        self.stride, self.padding, self.dilation = tuple(stride), tuple(padding), tuple(dilation)
        self.bias = None if bias is None else bias.detach().to(torch.float32).clone()
        self._set_weight(weight)

    @classmethod
    def from_dense(cls, conv: nn.Conv2d) -> SparseConv2d:
        """The sparse form of a Conv2d; raises ValueError for grouped, dilated-string or non-zero padding.

        Example:
            >>> SparseConv2d.from_dense(torch.nn.Conv2d(1, 2, 3)).kernel_size
            (3, 3)
        """
        if conv.groups != 1:
            raise ValueError("grouped or depthwise convolutions stay dense (groups != 1)")
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("only zero padding given as numbers is supported (padding_mode='zeros')")
        return cls(conv.weight.detach(), None if conv.bias is None else conv.bias.detach(),
                   stride=conv.stride, padding=conv.padding, dilation=conv.dilation)  # type: ignore[arg-type]

    def _set_weight(self, weight: torch.Tensor) -> None:
        self._ptr, self._cols, self._vals = kernels.csr_from_dense(weight.reshape(self.weight_shape[0], -1))
        if not kernels.available():
            self._csr = weight.detach().to(torch.float32).reshape(self.weight_shape[0], -1).to_sparse_csr()

    def dense_weight(self) -> torch.Tensor:
        """The dense 4-D weight, rebuilt from the stored nonzeros."""
        w = np.zeros((self.weight_shape[0], int(np.prod(self.weight_shape[1:]))), dtype=np.float32)
        rows = np.repeat(np.arange(w.shape[0]), np.diff(self._ptr))
        w[rows, self._cols] = self._vals
        return torch.from_numpy(w).reshape(self.weight_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _no_grad_check(x, "SparseConv2d")
        batched = x.dim() == 4
        x4 = (x if batched else x.unsqueeze(0)).to(torch.float32)
        n, _, h, w = x4.shape
        kh, kw = self.kernel_size
        ho = (h + 2 * self.padding[0] - self.dilation[0] * (kh - 1) - 1) // self.stride[0] + 1
        wo = (w + 2 * self.padding[1] - self.dilation[1] * (kw - 1) - 1) // self.stride[1] + 1
        cols = F.unfold(x4, self.kernel_size, dilation=self.dilation, padding=self.padding, stride=self.stride).contiguous()
        if kernels.available():
            out = torch.empty(n, self.out_channels, cols.shape[-1], dtype=torch.float32)
            kernels.csr_rows_matmul(self._ptr, self._cols, self._vals, cols.numpy(), out.numpy())
        else:  # pragma: no cover - only where numba is absent
            out = torch.stack([torch.mm(self._csr, c) for c in cols])
        if self.bias is not None:
            out.add_(self.bias.view(1, -1, 1))
        out = out.view(n, self.out_channels, ho, wo).to(x.dtype)
        return out if batched else out.squeeze(0)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, density={self.density:.4f}")
