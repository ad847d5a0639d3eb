"""Small CNN, VGG and ResNet variants: fast test targets for every technique.

All three take ``in_channels``, ``num_classes`` and ``image_size`` and run on
anything from 1x8x8 (scikit-learn digits) to 1x28x28 (MNIST) and larger. They
cover the layer patterns compression methods must handle: plain conv stacks,
batch norm after conv (VGG), and residual additions that couple channels (ResNet).

Example:
    >>> import torch
    >>> SmallResNet(image_size=8)(torch.zeros(2, 1, 8, 8)).shape
    torch.Size([2, 10])
"""

from __future__ import annotations

from torch import Tensor, nn

MAX_BLOCKS = 256  # basic blocks per stage of SmallResNet


def _check(in_channels: int, num_classes: int, image_size: int, width: int, owner: str) -> None:
    # Fail with a message naming the argument rather than deep inside a layer constructor.
    for name, value, low in (("in_channels", in_channels, 1), ("num_classes", num_classes, 2), ("image_size", image_size, 4), ("width", width, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ValueError(f"{owner}: {name}={value!r} must be an integer >= {low}")


class SmallCNN(nn.Module):
    """Two 3x3 conv layers with max-pooling and two linear layers.

    Example:
        >>> import torch
        >>> SmallCNN()(torch.zeros(1, 1, 28, 28)).shape
        torch.Size([1, 10])
    """

    example_input_shape: tuple[int, ...]

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, width: int = 8) -> None:
        super().__init__()
        _check(in_channels, num_classes, image_size, width, "SmallCNN")
        self.example_input_shape = (in_channels, image_size, image_size)
        self.conv1 = nn.Conv2d(in_channels, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.act = nn.ReLU()
        side = image_size // 4
        self.fc1 = nn.Linear(2 * width * side * side, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(self.act(self.conv1(x)))
        x = self.pool(self.act(self.conv2(x)))
        return self.fc2(self.act(self.fc1(x.flatten(1))))


def _conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class SmallVGG(nn.Module):
    """A VGG in miniature: three stages of two conv-BN-ReLU layers, each followed by max-pooling.

    Pooling uses ``ceil_mode`` so that 8x8 inputs shrink 8 -> 4 -> 2 -> 1 and
    28x28 inputs 28 -> 14 -> 7 -> 4; an adaptive average pool feeds the classifier.

    Example:
        >>> import torch
        >>> SmallVGG(image_size=8)(torch.zeros(1, 1, 8, 8)).shape
        torch.Size([1, 10])
    """

    example_input_shape: tuple[int, ...]

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, width: int = 8) -> None:
        super().__init__()
        _check(in_channels, num_classes, image_size, width, "SmallVGG")
        self.example_input_shape = (in_channels, image_size, image_size)
        chans = [width, 2 * width, 4 * width]
        layers: list[nn.Module] = []
        cin = in_channels
        for cout in chans:
            layers += [_conv_bn(cin, cout), _conv_bn(cout, cout), nn.MaxPool2d(2, ceil_mode=True)]
            cin = cout
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(cin, 4 * width), nn.ReLU(), nn.Linear(4 * width, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


class BasicBlock(nn.Module):
    """The two-conv residual block of ResNet-18/34, with a 1x1 projection when shape changes.

    Example:
        >>> import torch
        >>> BasicBlock(4, 8, stride=2)(torch.zeros(1, 4, 8, 8)).shape
        torch.Size([1, 8, 4, 4])
    """

    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.act = nn.ReLU()
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.act(out + self.shortcut(x))


class SmallResNet(nn.Module):
    """A ResNet in miniature: a stem conv and three stages of ``blocks`` basic blocks (strides 1, 2, 2).

    Example:
        >>> import torch
        >>> SmallResNet()(torch.zeros(1, 1, 28, 28)).shape
        torch.Size([1, 10])
    """

    example_input_shape: tuple[int, ...]

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, image_size: int = 28, width: int = 8, blocks: int = 1
    ) -> None:
        super().__init__()
        _check(in_channels, num_classes, image_size, width, "SmallResNet")
        # Bounded: a file's architecture names this count, and a million blocks are a million modules to build even
        # on the meta device (minutes and gigabytes before any shape could be checked).
        if not isinstance(blocks, int) or isinstance(blocks, bool) or not 1 <= blocks <= MAX_BLOCKS:
            raise ValueError(f"SmallResNet: blocks={blocks!r} must be an integer in [1, {MAX_BLOCKS}]")
        self.example_input_shape = (in_channels, image_size, image_size)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        stages: list[nn.Module] = []
        cin = width
        for i, cout in enumerate((width, 2 * width, 4 * width)):
            stage = [BasicBlock(cin, cout, stride=1 if i == 0 else 2)]
            stage += [BasicBlock(cout, cout) for _ in range(blocks - 1)]
            stages.append(nn.Sequential(*stage))
            cin = cout
        self.layer1, self.layer2, self.layer3 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(self.pool(x).flatten(1))
