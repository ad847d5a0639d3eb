"""Iterative structured pruning as a training callback: prune a step, fine-tune, repeat.

The structured counterpart of :class:`~deepshrink.prune.schedules.IterativePruning`:
round ``r`` of ``rounds`` removes channels at the start of epoch
``(r - 1) * epochs_per_round`` so that after round ``r`` each prunable group keeps
``(1 - ratio) ** (r / rounds)`` of its original channels (the last round reaches
``ratio``), and training in between lets the network recover before the next cut.

Removing channels replaces parameters with smaller ones, so after each round the
optimizer's parameter lists are pointed at the new tensors (in place: the
engine's learning-rate scheduler keeps working) and the state of the resized
parameters (momentum, Adam moments) is dropped; unchanged parameters keep theirs.
A checkpoint stores the surgery log, and a resumed run replays it on the fresh
model before anything else, so an interrupted iterative pruning resumes exactly.

Example:
    >>> import torch, deepshrink as ds
    >>> from deepshrink.train.callbacks import TrainState
    >>> model = ds.models.create("vgg_small")
    >>> x = torch.randn(1, 1, 28, 28)
    >>> cb = IterativeChannelPruning(ds.ChannelPruning(ratio=0.75, measure_latency=False), rounds=2, example_inputs=(x,))
    >>> state = TrainState(model=model)
    >>> for epoch in range(2):
    ...     state.epoch = epoch
    ...     cb.on_epoch_begin(state)
    >>> model.features[0][0].out_channels   # 8 channels -> 4 -> 2
    2
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..dispatch import Report, prune_
from ..errors import ConfigError
from ..train.callbacks import Callback, TrainState
from .structured import ChannelPruning


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(name, value, f"an integer >= {low}", "IterativeChannelPruning")


def repoint_optimizer(optimizer: torch.optim.Optimizer, model: nn.Module, names_before: dict[int, str]) -> int:
    """Point ``optimizer``'s parameter groups at ``model``'s current parameters, by name; returns how many changed.

    ``names_before`` maps ``id(param)`` to its name before the model changed. Parameters
    that were replaced lose their optimizer state (its shape no longer fits); removed
    ones leave the optimizer.

    Example:
        >>> m = nn.Linear(4, 3)
        >>> opt = torch.optim.SGD(m.parameters(), lr=0.1)
        >>> before = {id(p): n for n, p in m.named_parameters()}
        >>> m.weight = nn.Parameter(torch.zeros(2, 4))
        >>> repoint_optimizer(opt, m, before), opt.param_groups[0]["params"][0].shape
        (1, torch.Size([2, 4]))
    """
    current = dict(model.named_parameters())
    changed = 0
    for group in optimizer.param_groups:
        new_params = []
        for p in group["params"]:
            name = names_before.get(id(p))
            q = current.get(name) if name is not None else None
            if q is None:
                optimizer.state.pop(p, None)
                changed += 1
                continue
            if q is not p:
                optimizer.state.pop(p, None)
                changed += 1
            new_params.append(q)
        group["params"] = new_params
    return changed


class IterativeChannelPruning(Callback):
    """Rounds of channel pruning with training in between, up to ``config.ratio`` (geometric spacing).

    ``example_inputs`` trace the model each round; ``data`` is passed to data-driven
    criteria (Taylor, activations, SCOP). Train for at least ``rounds * epochs_per_round``
    epochs so that the last round is fine-tuned. Not for DDP runs: the wrapper holds the
    old parameters (prune, then launch the distributed fine-tune).

    Example:
        >>> cb = IterativeChannelPruning(ChannelPruning(ratio=0.75), rounds=2, example_inputs=(torch.zeros(1, 4),))
        >>> cb.kept_after(1), cb.kept_after(2)
        (0.5, 0.25)
    """

    def __init__(
        self,
        config: ChannelPruning,
        rounds: int = 3,
        epochs_per_round: int = 1,
        example_inputs: Any = None,
        data: Any = None,
    ) -> None:
        if not isinstance(config, ChannelPruning):
            raise ConfigError("config", type(config).__name__, "a ChannelPruning config (the final target)", "IterativeChannelPruning")
        _check_int("rounds", rounds, 1)
        _check_int("epochs_per_round", epochs_per_round, 1)
        if example_inputs is None:
            raise ConfigError("example_inputs", None, "example inputs to trace the model each round", "IterativeChannelPruning")
        self.config = config
        self.rounds = rounds
        self.epochs_per_round = epochs_per_round
        self.example_inputs = example_inputs
        self.data = data
        self.rounds_done = 0
        self.reports: list[Report] = []

    def kept_after(self, r: int) -> float:
        """Fraction of the original channels kept after round ``r``."""
        return (1.0 - self.config.ratio) ** (min(r, self.rounds) / self.rounds)

    def _round_config(self, r: int) -> ChannelPruning:
        # prune_ removes a fraction of the *current* channels: the step from round r-1 to r.
        step = 1.0 - self.kept_after(r) / self.kept_after(r - 1)
        head = None if self.config.head_ratio is None else 1.0 - (1.0 - self.config.head_ratio) ** (1.0 / self.rounds)
        return self.config.replace(ratio=min(max(step, 0.0), 0.999999), head_ratio=head, iterative_steps=1)

    def on_epoch_begin(self, state: TrainState) -> None:
        while self.rounds_done < self.rounds and state.epoch >= self.rounds_done * self.epochs_per_round:
            if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_world_size() > 1:
                raise ConfigError("IterativeChannelPruning", "a distributed run",
                                  "a single-process run: prune first, then launch the distributed fine-tune", "IterativeChannelPruning")
            names_before = {id(p): n for n, p in state.model.named_parameters()}
            r = self.rounds_done + 1
            self.reports.append(prune_(state.model, self._round_config(r), example_inputs=self.example_inputs, data=self.data))
            if state.optimizer is not None:
                repoint_optimizer(state.optimizer, state.model, names_before)
            self.rounds_done = r

    def state_dict(self) -> dict[str, Any]:
        return {"rounds_done": self.rounds_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rounds_done = int(state["rounds_done"])


__all__ = ["IterativeChannelPruning", "repoint_optimizer"]
