"""The LeNet models of the Deep Compression paper."""

from __future__ import annotations

from torch import Tensor, nn


class LeNet300(nn.Module):
    """LeNet-300-100: 784-300-100-10 with ReLU (266,610 parameters for 28x28 inputs).

    Example:
        >>> import torch
        >>> LeNet300()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_features: int = 784, num_classes: int = 10, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = x.flatten(1)
        x = self.drop(self.act(self.fc1(x)))
        x = self.drop(self.act(self.fc2(x)))
        return self.fc3(x)


class LeNet5(nn.Module):
    """Caffe LeNet-5: conv 5x5x20, max-pool, conv 5x5x50, max-pool, fc 500, fc 10 (431,080 parameters).

    Example:
        >>> import torch
        >>> LeNet5()(torch.zeros(2, 1, 28, 28)).shape
        torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, dropout: float = 0.0) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 20, 5)
        self.pool1 = nn.MaxPool2d(2)
        self.conv2 = nn.Conv2d(20, 50, 5)
        self.pool2 = nn.MaxPool2d(2)
        side = ((image_size - 4) // 2 - 4) // 2
        if side < 1:
            raise ValueError(f"LeNet5 needs images of at least 12x12 pixels; got image_size={image_size}")
        self.fc1 = nn.Linear(50 * side * side, 500)
        self.act = nn.ReLU()
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        x = self.drop(self.act(self.fc1(x.flatten(1))))
        return self.fc2(x)
