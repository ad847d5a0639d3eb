"""Training callbacks: how compression algorithms hook into training.

A callback sees the model and optimizer at fixed points of a training run.
The engine calls them, and so can a user's own loop:

    cb = SomeCallback(...)
    cb.on_train_begin(state)
    for epoch in range(epochs):
        cb.on_epoch_begin(state)
        for batch in loader:
            loss = ...; loss.backward()
            cb.on_after_backward(state)     # e.g. zero the gradients of pruned weights
            optimizer.step()
            cb.on_step_end(state)           # e.g. re-apply masks, advance a schedule
            state.step += 1
        cb.on_epoch_end(state)
    cb.on_train_end(state)

Callbacks that must survive a checkpoint/resume return their progress from
``state_dict`` (tensors and JSON-safe values) and restore it in
``load_state_dict``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn


@dataclass
class TrainState:
    """What a callback can see and change during training.

    Example:
        >>> from torch import nn
        >>> s = TrainState(model=nn.Linear(2, 2))
        >>> s.step, s.epoch
        (0, 0)
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer | None = None
    epoch: int = 0  # epochs completed before the current one
    step: int = 0  # optimizer steps taken so far (global)
    total_epochs: int = 0
    total_steps: int = 0
    steps_per_epoch: int = 0
    loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    stop: bool = False  # a callback may set this to end training early


class Callback:
    """Base class: every hook is a no-op; override what you need.

    Example:
        >>> class CountSteps(Callback):
        ...     def __init__(self): self.n = 0
        ...     def on_step_end(self, state): self.n += 1
        >>> CountSteps().n
        0
    """

    def on_train_begin(self, state: TrainState) -> None: ...

    def on_epoch_begin(self, state: TrainState) -> None: ...

    def on_before_step(self, state: TrainState) -> None:
        """Called after ``loss.backward()`` and before ``optimizer.step()``."""

    def on_step_end(self, state: TrainState) -> None:
        """Called after ``optimizer.step()``; ``state.step`` already counts this step."""

    def on_epoch_end(self, state: TrainState) -> None: ...

    def on_train_end(self, state: TrainState) -> None: ...

    def loss_term(self, state: TrainState) -> torch.Tensor | None:
        """An extra term added to the training loss (a regulariser such as an L1 penalty)."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """Progress to save in a checkpoint: tensors and JSON-safe values only."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
