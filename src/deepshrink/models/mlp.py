"""A plain multilayer perceptron with configurable hidden sizes (e.g. a narrow distillation student)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

MAX_HIDDEN_LAYERS = 256


class MLP(nn.Module):
    """``in_features``-hidden...-``num_classes`` with ReLU; ``hidden=(100,)`` is Hinton et al.'s small MNIST net shape.

    Layers are named ``fc1``, ``fc2``, ... like LeNet-300-100, so hints and exits can name them.

    Example:
        >>> import torch
        >>> m = MLP(hidden=(100,))
        >>> m(torch.zeros(2, 1, 28, 28)).shape, sum(p.numel() for p in m.parameters())
        (torch.Size([2, 10]), 79510)
    """

    def __init__(self, in_features: int = 784, hidden: Sequence[int] = (100,), num_classes: int = 10, dropout: float = 0.0) -> None:
        super().__init__()
        # Bounded: a file's architecture names the hidden sizes, and every entry is a layer to build.
        if not isinstance(hidden, (list, tuple)) or len(hidden) > MAX_HIDDEN_LAYERS:
            raise ValueError(f"MLP: hidden must be a list of at most {MAX_HIDDEN_LAYERS} layer sizes")
        sizes = [in_features, *hidden, num_classes]
        for name, value in (("in_features", in_features), ("num_classes", num_classes), *(("hidden", h) for h in hidden)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"MLP: {name}={value!r} must be an integer >= 1")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"MLP: dropout={dropout!r} must be in [0, 1)")
        self.depth = len(sizes) - 1
        # MNIST-sized inputs by default, flattened in forward; other widths take flat vectors.
        self.example_input_shape = (1, 28, 28) if in_features == 784 else (in_features,)
        for i in range(self.depth):
            setattr(self, f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1]))
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        for i in range(1, self.depth):
            x = self.drop(self.act(getattr(self, f"fc{i}")(x)))
        return getattr(self, f"fc{self.depth}")(x)
