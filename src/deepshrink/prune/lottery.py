"""Lottery tickets (Frankle & Carbin 2019): iterative magnitude pruning with rewinding.

Train the dense network, prune a fraction ``rate`` of the surviving weights
(per layer or globally), rewind the survivors to their initial values (or to
their values after ``rewind_iteration`` optimizer steps), train again, and
repeat. After round ``r`` a layer keeps ``(1 - rate) ** r`` of its weights.
The control trains the same masks from a fresh random initialisation: a
winning ticket beats it.

The pieces work on their own, in the engine or a user's loop:

- :class:`RewindPoint`, a callback that snapshots the weights at iteration ``k``
  (its snapshot is part of its ``state_dict``, so it survives a resume);
- :func:`rewind_` restores exactly a snapshot into a (pruned) model;
- :func:`prune_round` prunes to the level of round ``r`` (masks only shrink);
- :func:`run_lottery` runs the whole experiment, each round saved, resumable.

Every round trains the same schedule: with ``rewind_iteration = k > 0`` the
weights restart from their values at step ``k`` and the whole schedule runs
again (the learning-rate schedule is not shifted by ``k``).

Example:
    >>> import torch, deepshrink as ds
    >>> model = ds.models.create("lenet300")
    >>> snapshot = weights_of(model)
    >>> _ = prune_round(model, LotteryConfig(rate=0.2), 1)
    >>> rewind_(model, snapshot)
    >>> bool(torch.equal(model.fc1.weight[model.fc1.weight != 0], snapshot["fc1.weight"][model.fc1.weight != 0]))
    True
"""

from __future__ import annotations

import io
import json
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn
from torch.nn.utils import parametrize

from ..config import Config, check_choice, check_range, check_type, register_config
from ..data.bundle import DataBundle
from ..dispatch import Report, prune_
from ..errors import ConfigError, FormatError
from ..fileio import atomic_write_bytes
from ..train.callbacks import Callback, TrainState
from ..train.config import TrainConfig
from .magnitude import LAYER_TYPES, SCOPES, MagnitudePruning
from .masks import apply_mask, get_mask, masks

RESULT_FILE = "lottery.json"
PLOT_FILE = "lottery.png"


@register_config("lottery")
@dataclass(frozen=True)
class LotteryConfig(Config):
    """Settings of a lottery-ticket experiment.

    Fields:
        rounds: pruning rounds after the dense training (``rounds + 1`` tickets in all).
        rate: fraction of the surviving weights pruned in each round, in (0, 1).
        scope: ``"layer"`` (each layer loses ``rate`` of its survivors) or ``"global"``.
        per_layer: ``{pattern: rate}`` for layers with their own rate (the paper prunes
            LeNet's output layer at half the rate: ``{"fc3": 0.1}``).
        rewind_iteration: 0 rewinds to the initial weights; k > 0 to the weights after k steps.
        control: also train every pruned mask from a random re-initialisation.
        include, exclude, layer_types: which layers are pruned (as in MagnitudePruning).
        seed: seed of the control's re-initialisations.

    Example:
        >>> cfg = LotteryConfig(rounds=12, rate=0.2)
        >>> round(cfg.density_after(12), 4)
        0.0687
    """

    rounds: int = 12
    rate: float = 0.2
    scope: str = "layer"
    per_layer: dict[str, float] = field(default_factory=dict)
    rewind_iteration: int = 0
    control: bool = True
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    layer_types: tuple[str, ...] = ("linear", "conv")
    seed: int = 0

    def validate(self) -> None:
        check_range(self, "rounds", 1, None, integer=True)
        check_range(self, "rate", 0, 1, lo_open=True, hi_open=True)
        check_choice(self, "scope", SCOPES)
        check_type(self, "per_layer", Mapping, "a mapping of layer-name pattern to a rate in [0, 1)")
        for pattern, value in self.per_layer.items():
            if not isinstance(pattern, str) or isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise ConfigError("per_layer", {pattern: value}, "a mapping of layer-name pattern to a rate in [0, 1)", "LotteryConfig")
        check_range(self, "rewind_iteration", 0, None, integer=True)
        check_type(self, "control", bool, "true or false")
        for name in ("include", "exclude"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(p, str) for p in value):
                raise ConfigError(name, value, "a list of layer-name patterns such as ['fc*']", "LotteryConfig")
        if isinstance(self.layer_types, str) or not self.layer_types or any(t not in LAYER_TYPES for t in self.layer_types):
            raise ConfigError("layer_types", self.layer_types, "a non-empty list drawn from " + ", ".join(LAYER_TYPES), "LotteryConfig")
        check_range(self, "seed", 0, 2**63 - 1, integer=True)

    def density_after(self, r: int) -> float:
        """The fraction kept by the layers at the default rate after round ``r``."""
        return (1.0 - self.rate) ** r

    def pruning_config(self, r: int) -> MagnitudePruning:
        """The MagnitudePruning config that reaches the level of round ``r`` (exact per-layer counts).

        Example:
            >>> LotteryConfig(rate=0.5, per_layer={"fc3": 0.25}).pruning_config(2).per_layer
            {'fc3': 0.4375}
        """
        return MagnitudePruning(
            sparsity=1.0 - (1.0 - self.rate) ** r,
            scope=self.scope,
            per_layer={k: 1.0 - (1.0 - float(v)) ** r for k, v in self.per_layer.items()},
            include=self.include,
            exclude=self.exclude,
            layer_types=self.layer_types,
        )


# ---------------------------------------------------------------------- snapshots and rewinding


def _tensor_slots(model: nn.Module) -> dict[str, tuple[nn.Module, str, torch.Tensor]]:
    """Plain name -> (module, tensor name, stored tensor); a masked weight's stored original."""
    slots: dict[str, tuple[nn.Module, str, torch.Tensor]] = {}
    for qual, module in model.named_modules():
        if qual == "parametrizations" or qual.startswith("parametrizations.") or ".parametrizations" in qual:
            continue  # the parametrization modules themselves (masks are not weights)
        prefix = f"{qual}." if qual else ""
        if parametrize.is_parametrized(module):
            for tname, plist in module.parametrizations.items():  # type: ignore[union-attr]
                slots[prefix + tname] = (module, tname, plist.original)
        for tname, p in module.named_parameters(recurse=False):
            slots[prefix + tname] = (module, tname, p)
        for tname, b in module.named_buffers(recurse=False):
            slots[prefix + tname] = (module, tname, b)
    return slots


def weights_of(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of every weight and buffer under its plain name (a masked weight: its stored original).

    Example:
        >>> import deepshrink as ds
        >>> sorted(weights_of(ds.models.create("lenet300")))[:2]
        ['fc1.bias', 'fc1.weight']
    """
    return {k: t.detach().clone() for k, (_, _, t) in _tensor_slots(model).items()}


@torch.no_grad()
def rewind_(model: nn.Module, snapshot: Mapping[str, torch.Tensor]) -> None:
    """Set every weight and buffer back to ``snapshot``; masked entries stay exactly zero.

    Raises ValueError when the snapshot does not fit the model (missing key or shape).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> layer = nn.Linear(2, 2); saved = weights_of(layer)
        >>> _ = layer.weight.data.add_(1.0)
        >>> rewind_(layer, saved); bool(torch.equal(layer.weight, saved["weight"]))
        True
    """
    slots = _tensor_slots(model)
    missing = sorted(set(slots) - set(snapshot))
    if missing:
        raise ValueError(f"the rewind snapshot lacks {missing[:5]}: it was taken from another architecture")
    for key, (module, tname, tensor) in slots.items():
        value = snapshot[key]
        if value.shape != tensor.shape:
            raise ValueError(f"the rewind snapshot has {key} of shape {tuple(value.shape)}, the model {tuple(tensor.shape)}")
        tensor.copy_(value.to(device=tensor.device, dtype=tensor.dtype))
        mask = get_mask(module, tname)
        if mask is not None:
            tensor.masked_fill_(~mask, 0.0)


class RewindPoint(Callback):
    """Snapshot the weights after ``iteration`` optimizer steps (0: before the first step).

    Example:
        >>> import deepshrink as ds
        >>> data = ds.data.load("synthetic:classification:64")
        >>> m = ds.models.create("lenet300", in_features=64, num_classes=4)
        >>> cb = RewindPoint(1)
        >>> _ = ds.train(m, data, ds.TrainConfig(epochs=1, progress=False), [cb])
        >>> cb.snapshot is not None
        True
    """

    def __init__(self, iteration: int = 0) -> None:
        if isinstance(iteration, bool) or not isinstance(iteration, int) or iteration < 0:
            raise ConfigError("iteration", iteration, "an integer >= 0 (optimizer steps)", "RewindPoint")
        self.iteration = iteration
        self.snapshot: dict[str, torch.Tensor] | None = None

    def on_train_begin(self, state: TrainState) -> None:
        if self.iteration == 0 and self.snapshot is None and state.step == 0:
            self.snapshot = weights_of(state.model)

    def on_step_end(self, state: TrainState) -> None:
        if self.snapshot is None and state.step == self.iteration:
            self.snapshot = weights_of(state.model)

    def on_train_end(self, state: TrainState) -> None:
        if self.snapshot is None:
            raise ConfigError("rewind_iteration", self.iteration, f"at most the {state.step} steps of the training run", "RewindPoint")

    def state_dict(self) -> dict[str, Any]:
        return {"snapshot": self.snapshot}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        snap = state["snapshot"]
        self.snapshot = None if snap is None else {k: v.clone() for k, v in snap.items()}


def prune_round(model: nn.Module, cfg: LotteryConfig, r: int) -> Report:
    """Prune ``model`` (trained) to the level of round ``r`` by weight magnitude; masks only shrink.

    Example:
        >>> import deepshrink as ds
        >>> m = ds.models.create("lenet300")
        >>> _ = prune_round(m, LotteryConfig(rate=0.2), 2)
        >>> round(1 - ds.prune.sparsity(m), 4)
        0.64
    """
    return prune_(model, cfg.pruning_config(r))


def apply_masks(model: nn.Module, saved: Mapping[str, torch.Tensor]) -> None:
    """Prune ``model`` with saved masks (``{"fc1.weight": bool tensor}``, as :func:`masks` gives).

    Example:
        >>> import torch
        >>> from torch import nn
        >>> m = nn.Sequential(nn.Linear(2, 2))
        >>> apply_masks(m, {"0.weight": torch.eye(2, dtype=torch.bool)}); int((m[0].weight == 0).sum())
        2
    """
    for key, keep in saved.items():
        qual, _, tname = key.rpartition(".")
        try:
            module = model.get_submodule(qual) if qual else model
        except AttributeError:
            raise ValueError(f"mask {key!r} names no module of this model") from None
        apply_mask(module, tname, keep.to(torch.bool))


def _density(model: nn.Module) -> tuple[int, int]:
    kept = total = 0
    for m in masks(model).values():
        kept += int(m.sum())
        total += m.numel()
    return kept, total


# ---------------------------------------------------------------------- the whole experiment


ModelFactory = Callable[[], nn.Module]
RoundCallback = Callable[[dict[str, Any]], None]


def run_lottery(
    model_fn: ModelFactory,
    data: DataBundle,
    cfg: LotteryConfig,
    train_cfg: TrainConfig,
    out_dir: str | Path,
    *,
    on_round: RoundCallback | None = None,
) -> dict[str, Any]:
    """Run the lottery experiment; write ``out_dir/lottery.json`` and ``lottery.png`` after each round.

    ``model_fn()`` builds a freshly initialised model from the current torch
    seed: tickets start from ``train_cfg.seed``, the control of round ``r`` from
    another seed. Each round's masks, the rewind snapshot and the engine's
    checkpoints live under ``out_dir/state``, so an interrupted experiment
    resumes where it stopped (same command, same ``out_dir``).

    Example:
        >>> import tempfile, deepshrink as ds
        >>> data = ds.data.load("synthetic:classification:64")
        >>> fn = lambda: ds.models.create("lenet300", in_features=64, num_classes=4)
        >>> res = run_lottery(fn, data, LotteryConfig(rounds=1, rate=0.5), ds.TrainConfig(epochs=1, progress=False),
        ...                   tempfile.mkdtemp())  # doctest: +SKIP
        >>> [round(r["density"], 2) for r in res["rounds"]]  # doctest: +SKIP
        [1.0, 0.5]
    """
    from ..train.engine import evaluate, train

    out = Path(out_dir)
    state_dir = out / "state"
    state_dir.mkdir(parents=True, exist_ok=True)
    identity = {"lottery": cfg.to_dict(), "train": train_cfg.replace(checkpoint_dir=None, resume=False, progress=False).to_dict()}
    result = _load_result(out / RESULT_FILE, identity)
    rounds: list[dict[str, Any]] = result["rounds"]

    def build(seed: int) -> nn.Module:
        torch.manual_seed(seed)
        return model_fn()

    def fit(model: nn.Module, tag: str, callbacks: list[Callback]) -> dict[str, Any]:
        ckpt = state_dir / f"{tag}.ckpt"
        run = train(model, data, train_cfg.replace(checkpoint_dir=str(ckpt), resume=True), callbacks)
        history = run["history"]
        best = min(history, key=lambda h: h.get("val_loss", float("inf"))) if history else {}
        test = evaluate(model, data.test)
        shutil.rmtree(ckpt, ignore_errors=True)
        return {"test_accuracy": test["accuracy"], "val_accuracy": run["val"].get("val_accuracy"),
                "early_stop_epoch": best.get("epoch"), "seconds": round(run["seconds"], 1)}

    for r in range(len(rounds), cfg.rounds + 1):
        ticket = build(train_cfg.seed)
        if r == 0:
            point = RewindPoint(cfg.rewind_iteration)
            metrics = fit(ticket, "round-00-ticket", [point])
            assert point.snapshot is not None
            atomic_write_bytes(state_dir / "rewind.safetensors", st_save({k: v.contiguous() for k, v in point.snapshot.items()}))
        else:
            saved_masks = _read_tensors(state_dir / f"masks-{r:02d}.safetensors")
            apply_masks(ticket, saved_masks)
            rewind_(ticket, _read_tensors(state_dir / "rewind.safetensors"))
            metrics = fit(ticket, f"round-{r:02d}-ticket", [])
        kept, total = _density(ticket)
        row: dict[str, Any] = {"round": r, "density": kept / total if total else 1.0, "weights": kept if total else None,
                               "ticket": metrics}
        if r > 0 and cfg.control:
            control = build(cfg.seed + 7919 * (r + 1))
            apply_masks(control, saved_masks)
            row["control"] = fit(control, f"round-{r:02d}-control", [])
        if r < cfg.rounds:  # the next round's masks come from this round's trained ticket
            prune_round(ticket, cfg, r + 1)
            atomic_write_bytes(state_dir / f"masks-{r + 1:02d}.safetensors",
                               st_save({k: v.to(torch.uint8).contiguous() for k, v in masks(ticket).items()}))
        if r == 0:
            row["density"], row["weights"] = 1.0, sum(int(v.numel()) for v in masks(ticket).values())
        rounds.append(row)
        _write_outputs(out, result)
        if on_round is not None:
            on_round(row)
    return result


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return st_load(path.read_bytes())
    except (OSError, ValueError, RuntimeError) as exc:
        raise FormatError(f"cannot read the lottery state file {path}: {exc}") from None


def _load_result(path: Path, identity: dict[str, Any]) -> dict[str, Any]:
    if not path.exists():
        return {**identity, "rounds": []}
    try:
        result = json.loads(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise FormatError(f"cannot read {path}: {exc}") from None
    if not isinstance(result, dict) or not isinstance(result.get("rounds"), list):
        raise FormatError(f"{path} is not a lottery result file")
    if result.get("lottery") != identity["lottery"] or result.get("train") != identity["train"]:
        raise ConfigError("out", str(path.parent), "a new output directory: this one holds an experiment with other settings")
    return result


def _write_outputs(out: Path, result: dict[str, Any]) -> None:
    atomic_write_bytes(out / RESULT_FILE, (json.dumps(result, indent=2) + "\n").encode())
    png = plot_lottery(result)
    if png is not None:
        atomic_write_bytes(out / PLOT_FILE, png)


def plot_lottery(result: Mapping[str, Any]) -> bytes | None:
    """PNG bytes of test accuracy against the percentage of weights remaining (None without matplotlib).

    Example:
        >>> row = {"round": 0, "density": 1.0, "ticket": {"test_accuracy": 0.9}}
        >>> png = plot_lottery({"rounds": [row]})
        >>> png is None or png[:4] == b"\\x89PNG"
        True
    """
    try:
        import matplotlib

        matplotlib.use("Agg", force=False)
        from matplotlib.figure import Figure
    except ImportError:
        return None
    rows = list(result["rounds"])
    fig = Figure(figsize=(6.4, 4.2), dpi=110)
    ax = fig.add_subplot(1, 1, 1)
    xs = [100 * r["density"] for r in rows]
    ax.plot(xs, [100 * r["ticket"]["test_accuracy"] for r in rows], "o-", label="winning ticket (rewound)")
    ctrl = [(100 * r["density"], 100 * r["control"]["test_accuracy"]) for r in rows if "control" in r]
    if ctrl:
        ax.plot([c[0] for c in ctrl], [c[1] for c in ctrl], "s--", label="same mask, random re-init")
    if rows:
        ax.axhline(100 * rows[0]["ticket"]["test_accuracy"], color="grey", lw=0.8, ls=":", label="dense")
    ax.set_xscale("log")
    ticks = [t for t in (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1) if xs and min(xs) * 0.9 <= t <= 100]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.invert_xaxis()
    ax.set_xlabel("weights remaining (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower left")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()
