"""Pruning schedules as training callbacks: one-shot, iterative (Han 2015), gradual (Zhu & Gupta 2017).

Each schedule takes the *final* :class:`~deepshrink.prune.magnitude.MagnitudePruning`
config and prunes towards it during training, through ``prune_``; masks only
shrink from one pruning to the next. They work in the engine
(``deepshrink.train(model, data, cfg, callbacks=[schedule])``) and in a
hand-written loop that calls the hooks, and save their progress through
``state_dict`` / ``load_state_dict``.

Example:
    >>> import deepshrink as ds
    >>> from deepshrink.train.callbacks import TrainState
    >>> model = ds.models.create("lenet300")
    >>> cb = IterativePruning(ds.MagnitudePruning(sparsity=0.9), rounds=3, epochs_per_round=1)
    >>> state = TrainState(model=model)
    >>> for epoch in range(3):
    ...     state.epoch = epoch
    ...     cb.on_epoch_begin(state)   # fine-tune for one epoch after each round
    >>> round(ds.prune.sparsity(model), 3)
    0.9
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..dispatch import Report, prune_
from ..errors import ConfigError
from ..train.callbacks import Callback, TrainState
from .magnitude import MagnitudePruning


def scaled_config(cfg: MagnitudePruning, fn: Callable[[float], float]) -> MagnitudePruning:
    """``cfg`` with every target sparsity ``s`` (global and per layer) replaced by ``fn(s)``.

    Example:
        >>> scaled_config(MagnitudePruning(sparsity=0.8, per_layer={"fc3": 0.4}), lambda s: s / 2).per_layer
        {'fc3': 0.2}
    """
    return cfg.replace(
        sparsity=min(1.0, max(0.0, fn(cfg.sparsity))),
        per_layer={k: min(1.0, max(0.0, fn(float(v)))) for k, v in cfg.per_layer.items()},
    )


class _Schedule(Callback):
    def __init__(self, config: MagnitudePruning, prune_kwargs: dict[str, Any] | None = None) -> None:
        if not isinstance(config, MagnitudePruning):
            raise ConfigError("config", type(config).__name__, "a MagnitudePruning config (the final target)")
        self.config = config
        self.prune_kwargs = dict(prune_kwargs or {})
        self.reports: list[Report] = []

    def _prune_to(self, state: TrainState, fn: Callable[[float], float]) -> Report:
        report = prune_(state.model, scaled_config(self.config, fn), **self.prune_kwargs)
        self.reports.append(report)
        return report


class OneShotPruning(_Schedule):
    """Prune once to the target at the start of training (then training fine-tunes).

    Example:
        >>> import deepshrink as ds
        >>> from deepshrink.train.callbacks import TrainState
        >>> m = ds.models.create("lenet300")
        >>> OneShotPruning(ds.MagnitudePruning(sparsity=0.5)).on_train_begin(TrainState(model=m))
        >>> ds.prune.sparsity(m)
        0.5
    """

    def __init__(self, config: MagnitudePruning, prune_kwargs: dict[str, Any] | None = None) -> None:
        super().__init__(config, prune_kwargs)
        self.done = False

    def on_train_begin(self, state: TrainState) -> None:
        if not self.done:
            self._prune_to(state, lambda s: s)
            self.done = True

    def state_dict(self) -> dict[str, Any]:
        return {"done": self.done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.done = bool(state["done"])


class IterativePruning(_Schedule):
    """Rounds of prune-then-fine-tune up to the target (Han et al. 2015).

    Round ``r`` (1..``rounds``) prunes at the start of epoch
    ``(r - 1) * epochs_per_round``. With ``spacing="geometric"`` (default) each
    round removes the same fraction of the surviving weights: density
    ``(1 - s) ** (r / rounds)``; with ``"linear"`` the sparsity grows by equal
    steps. The last round reaches the target exactly; train for at least
    ``rounds * epochs_per_round`` epochs so that the last round is fine-tuned.

    Example:
        >>> cb = IterativePruning(MagnitudePruning(sparsity=0.75), rounds=2, epochs_per_round=1)
        >>> round(cb.sparsity_at(1), 3), cb.sparsity_at(2)
        (0.5, 0.75)
    """

    def __init__(
        self,
        config: MagnitudePruning,
        rounds: int = 5,
        epochs_per_round: int = 1,
        spacing: str = "geometric",
        prune_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(config, prune_kwargs)
        if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
            raise ConfigError("rounds", rounds, "an integer >= 1", "IterativePruning")
        if isinstance(epochs_per_round, bool) or not isinstance(epochs_per_round, int) or epochs_per_round < 1:
            raise ConfigError("epochs_per_round", epochs_per_round, "an integer >= 1", "IterativePruning")
        if spacing not in ("geometric", "linear"):
            raise ConfigError("spacing", spacing, "'geometric' or 'linear'", "IterativePruning")
        self.rounds = rounds
        self.epochs_per_round = epochs_per_round
        self.spacing = spacing
        self.rounds_done = 0

    def fraction(self, r: int, target: float) -> float:
        """The sparsity after round ``r`` for a final ``target``."""
        if r >= self.rounds:
            return target
        if self.spacing == "linear":
            return target * r / self.rounds
        return 1.0 - (1.0 - target) ** (r / self.rounds)

    def sparsity_at(self, r: int) -> float:
        """The global target sparsity after round ``r``."""
        return self.fraction(r, self.config.sparsity)

    def on_epoch_begin(self, state: TrainState) -> None:
        # Catch up on rounds due by this epoch (also after a resume mid-schedule).
        while self.rounds_done < self.rounds and state.epoch >= self.rounds_done * self.epochs_per_round:
            r = self.rounds_done + 1
            self._prune_to(state, lambda s, r=r: self.fraction(r, s))
            self.rounds_done = r

    def state_dict(self) -> dict[str, Any]:
        return {"rounds_done": self.rounds_done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rounds_done = int(state["rounds_done"])


class GradualPruning(_Schedule):
    """The cubic schedule of Zhu & Gupta (2017) over optimizer steps.

    Sparsity at step t in [begin_step, end_step], pruning every ``frequency`` steps:
    ``s_t = s_f + (s_i - s_f) * (1 - (t - begin_step) / (end_step - begin_step)) ** 3``,
    with ``s_f`` the config's target (each per-layer target likewise) and
    ``s_i = initial_sparsity``. From ``end_step`` on, the sparsity is ``s_f``.

    Example:
        >>> cb = GradualPruning(MagnitudePruning(sparsity=0.8), begin_step=0, end_step=100)
        >>> cb.sparsity_at(0), round(cb.sparsity_at(50), 3), cb.sparsity_at(100)
        (0.0, 0.7, 0.8)
    """

    def __init__(
        self,
        config: MagnitudePruning,
        begin_step: int = 0,
        end_step: int = 1000,
        frequency: int = 100,
        initial_sparsity: float = 0.0,
        prune_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(config, prune_kwargs)
        for name, value, low in (("begin_step", begin_step, 0), ("frequency", frequency, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(name, value, f"an integer >= {low}", "GradualPruning")
        if isinstance(end_step, bool) or not isinstance(end_step, int) or end_step <= begin_step:
            raise ConfigError("end_step", end_step, f"an integer > begin_step ({begin_step})", "GradualPruning")
        if not 0.0 <= initial_sparsity <= config.sparsity:
            raise ConfigError("initial_sparsity", initial_sparsity, f"a number in [0, {config.sparsity}]", "GradualPruning")
        self.begin_step = begin_step
        self.end_step = end_step
        self.frequency = frequency
        self.initial_sparsity = initial_sparsity
        self.last_pruned_step: int | None = None

    def _progress(self, step: int) -> float:
        return min(1.0, max(0.0, (step - self.begin_step) / (self.end_step - self.begin_step)))

    def _at(self, step: int, target: float) -> float:
        start = min(self.initial_sparsity, target)
        return target + (start - target) * (1.0 - self._progress(step)) ** 3

    def sparsity_at(self, step: int) -> float:
        """The global target sparsity at optimizer step ``step``."""
        return self._at(step, self.config.sparsity)

    def _due(self, step: int) -> bool:
        if step < self.begin_step:
            return False
        if step >= self.end_step:
            return self.last_pruned_step is None or self.last_pruned_step < self.end_step
        return (step - self.begin_step) % self.frequency == 0 and self.last_pruned_step != step

    def on_train_begin(self, state: TrainState) -> None:
        self.on_step_end(state)

    def on_step_end(self, state: TrainState) -> None:
        if self._due(state.step):
            step = min(state.step, self.end_step)
            self._prune_to(state, lambda s: self._at(step, s))
            self.last_pruned_step = step

    def state_dict(self) -> dict[str, Any]:
        return {"last_pruned_step": self.last_pruned_step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        value = state["last_pruned_step"]
        self.last_pruned_step = None if value is None else int(value)
