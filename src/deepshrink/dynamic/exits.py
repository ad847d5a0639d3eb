"""``add_exits_(model, EarlyExits(after=[...]))``: early-exit classifiers inside any classifier.

The heads live in ``model.early_exits`` (an :class:`ExitHeads`), so they train,
save and move with the model; the backbone's own modules and names are unchanged.
The model's class is swapped for a subclass (as ``torch.nn.utils.parametrize``
does) whose ``forward`` is the original one in training mode and, in eval mode,
per-input early exit: forward hooks, installed for one call, run each exit's
head on its module's output; inputs whose confidence reaches the exit's
threshold take that exit's logits and are removed from the batch, so later
layers run only on the inputs still in it. When every input has left, the rest
of the network is skipped. Thresholds above 1 never fire (the state after
``add_exits_``): the output is then the original forward's, bit for bit.

Exit points must lie on the network's main path (every later layer depends on
its output per input); ``add_exits_`` checks this on example inputs by sending
inputs out at different exits and comparing the others with the full network.

The change is recorded in the surgery log (``{"op": "early_exits", ...}`` with
each exit's feature shape), so a .dsz file rebuilds the heads from the base
factory; the thresholds are a buffer and are saved with the weights.

Example:
    >>> import torch
    >>> import deepshrink as ds
    >>> model = ds.models.create("lenet5").eval()
    >>> x = torch.rand(4, 1, 28, 28)
    >>> before = model(x)
    >>> report = ds.add_exits_(model, ds.EarlyExits(after=["pool1"]))
    >>> torch.equal(model(x), before)  # thresholds that never fire: the full model, exactly
    True
    >>> model.early_exits.thresholds.fill_(0.0)  # every input leaves at the first exit
    tensor([0.])
    >>> logits, taken = predict_with_exits(model, x)
    >>> taken.tolist()
    [0, 0, 0, 0]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

from ..dispatch import Report, add_exits_
from ..errors import ConfigError
from ..surgery import record_surgery, register_surgery
from .config import CONFIDENCES, EarlyExits
from .heads import ExitHeads, confidence, make_head

ATTR = "early_exits"
_OP = "early_exits"


class _AllExited(Exception):
    """Raised inside a forward hook when no input is left: the rest of the network is skipped."""


def exit_heads(model: nn.Module) -> ExitHeads:
    """The :class:`ExitHeads` of a model with exits (unwrapping DistributedDataParallel); ValueError otherwise.

    Example:
        >>> exit_heads(nn.Linear(2, 2))
        Traceback (most recent call last):
        ...
        ValueError: the model has no early exits: add them with deepshrink.add_exits_(model, deepshrink.EarlyExits(after=[...]))
    """
    inner = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    heads = inner._modules.get(ATTR)
    if not isinstance(heads, ExitHeads):
        raise ValueError("the model has no early exits: add them with deepshrink.add_exits_(model, deepshrink.EarlyExits(after=[...]))")
    return heads


def _model_of(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _batch_size(args: Sequence[Any], kwargs: dict[str, Any]) -> int:
    for value in [*args, *kwargs.values()]:
        if isinstance(value, Tensor) and value.dim() > 0:
            return int(value.shape[0])
    raise ValueError("early exits need a tensor input whose first dimension is the batch")


def _feature(output: Any, name: str) -> Tensor:
    if not isinstance(output, Tensor):
        raise ValueError(f"exit point {name!r} must output a tensor; it gives {type(output).__name__}")
    return output


Decide = Callable[[int, Tensor, Tensor], Tensor]  # (exit index, exit logits, original row indices) -> mask of rows leaving


def _run(model: nn.Module, base_forward: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any], decide: Decide,
         active_exits: Sequence[int]) -> tuple[Tensor, Tensor]:
    """One forward pass with per-input early exit; returns (logits, exit taken per input: K means the final output)."""
    heads = exit_heads(model)
    n = _batch_size(args, kwargs)
    k = len(heads.heads)
    first = next(v for v in [*args, *kwargs.values()] if isinstance(v, Tensor))
    state: dict[str, Any] = {"active": torch.arange(n, device=first.device), "out": None,
                             "taken": torch.full((n,), k, dtype=torch.long, device=first.device)}

    def hook(i: int, name: str, output: Any) -> Any:
        feature = _feature(output, name)
        logits = heads.heads[i](feature)
        fire = decide(i, logits, state["active"])
        if n == 1:
            # One input (the latency-critical case): no row bookkeeping, which would cost
            # more than the small layers that an early exit skips.
            if not bool(fire[0]):
                return None
            state["out"] = logits
            state["taken"][0] = i
            raise _AllExited
        if not bool(fire.any()):
            return None
        rows = state["active"][fire]
        if state["out"] is None:
            state["out"] = logits.new_empty((n, *logits.shape[1:]))
        state["out"][rows] = logits[fire]
        state["taken"][rows] = i
        keep = ~fire
        state["active"] = state["active"][keep]
        if state["active"].numel() == 0:
            raise _AllExited
        return feature[keep]

    handles = [
        model.get_submodule(heads.after[i]).register_forward_hook(
            lambda _m, _a, out, i=i: hook(i, heads.after[i], out)
        )
        for i in active_exits
    ]
    try:
        final = base_forward(model, *args, **kwargs)
    except _AllExited:
        final = None
    finally:
        for h in handles:
            h.remove()
    if state["out"] is None:
        return final, state["taken"]  # nobody left early: the full network's own output
    if final is not None:
        if not isinstance(final, Tensor) or final.shape[1:] != state["out"].shape[1:]:
            raise ValueError("early exits need a model whose output is a logits tensor of the exits' shape")
        state["out"][state["active"]] = final.to(state["out"].dtype)
    return state["out"], state["taken"]


def _threshold_decide(heads: ExitHeads, thresholds: list[float]) -> Decide:
    def decide(i: int, logits: Tensor, rows: Tensor) -> Tensor:
        return confidence(logits, heads.confidence) >= thresholds[i]

    return decide


def _with_exits(cls: type[nn.Module]) -> type[nn.Module]:
    """A subclass of ``cls`` whose eval-mode forward takes the early exits."""
    base_forward = cls.forward

    def forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
        heads = self._modules.get(ATTR)
        if self.training or not isinstance(heads, ExitHeads) or heads.collecting:
            return base_forward(self, *args, **kwargs)
        active, thresholds = heads.open_exits()
        if not active:
            return base_forward(self, *args, **kwargs)
        return _run(self, base_forward, args, kwargs, _threshold_decide(heads, thresholds), active)[0]

    return type(f"EarlyExit{cls.__name__}", (cls,), {"forward": forward, "_deepshrink_base_forward": staticmethod(base_forward)})


def predict_with_exits(model: nn.Module, *args: Any, **kwargs: Any) -> tuple[Tensor, Tensor]:
    """Early-exit inference that also says where each input left: ``(logits, exit index)``.

    The exit index is ``0 .. K-1`` for the K exits and ``K`` for the network's own output.
    Runs in whatever mode the model is in, without changing it.

    Example:
        >>> import deepshrink as ds
        >>> m = ds.models.create("lenet300")
        >>> _ = ds.add_exits_(m, ds.EarlyExits(after=["fc1"]))
        >>> predict_with_exits(m.eval(), torch.zeros(2, 1, 28, 28))[1].tolist()  # thresholds never fire yet
        [1, 1]
    """
    heads = exit_heads(model)
    base = type(model)._deepshrink_base_forward  # type: ignore[attr-defined]
    active, thresholds = heads.open_exits()
    return _run(model, base, args, kwargs, _threshold_decide(heads, thresholds), active)


@contextmanager
def _collecting(model: nn.Module) -> Iterator[list[Tensor | None]]:
    heads = exit_heads(model)
    inner = _model_of(model)
    collected: list[Tensor | None] = [None] * len(heads.heads)

    def hook(i: int, output: Any) -> None:
        collected[i] = heads.heads[i](_feature(output, heads.after[i]))

    handles = [inner.get_submodule(name).register_forward_hook(lambda _m, _a, out, i=i: hook(i, out))
               for i, name in enumerate(heads.after)]
    heads.collecting = True
    try:
        yield collected
    finally:
        heads.collecting = False
        for h in handles:
            h.remove()


def exit_outputs(model: nn.Module, *args: Any, **kwargs: Any) -> list[Tensor]:
    """The logits of every exit, then the network's own, for the whole batch (no early stop).

    Used for training the exits and calibrating them; gradients flow as usual. ``model``
    may be wrapped in DistributedDataParallel.

    Example:
        >>> import deepshrink as ds
        >>> m = ds.models.create("lenet5")
        >>> _ = ds.add_exits_(m, ds.EarlyExits(after=["pool1", "pool2"]))
        >>> [tuple(o.shape) for o in exit_outputs(m, torch.zeros(3, 1, 28, 28))]
        [(3, 10), (3, 10), (3, 10)]
    """
    with _collecting(model) as collected:
        final = model(*args, **kwargs)
    missing = [exit_heads(model).after[i] for i, c in enumerate(collected) if c is None]
    if missing:
        raise ValueError(f"exit points {missing} did not run in the forward pass")
    return [*collected, final]  # type: ignore[list-item]


@contextmanager
def exits_disabled(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily set every threshold above 1, so the model runs as the full network.

    Example:
        >>> import deepshrink as ds
        >>> m = ds.models.create("lenet300"); _ = ds.add_exits_(m, ds.EarlyExits(after=["fc1"]))
        >>> _ = m.early_exits.thresholds.fill_(0.5)
        >>> with exits_disabled(m):
        ...     m.early_exits.thresholds.tolist()
        [inf]
    """
    heads = exit_heads(model)
    saved = heads.thresholds.clone()
    heads.thresholds.fill_(float("inf"))
    try:
        yield model
    finally:
        heads.thresholds.copy_(saved)


def _install(model: nn.Module, heads: ExitHeads) -> None:
    if ATTR in model._modules or hasattr(model, ATTR):
        raise ConfigError("model", type(model).__name__, f"a model without early exits (it already has {ATTR!r})", "EarlyExits")
    model.add_module(ATTR, heads)
    model.__class__ = _with_exits(type(model))


def _entry(cfg: EarlyExits, shapes: list[list[int]], num_classes: int) -> dict[str, Any]:
    return {"op": _OP, "after": list(cfg.after), "shapes": shapes, "num_classes": num_classes,
            "channels": cfg.channels, "pool": cfg.pool, "hidden": cfg.hidden, "confidence": cfg.confidence}


def _build_heads(entry: dict[str, Any]) -> ExitHeads:
    after, shapes = entry["after"], entry["shapes"]
    if not isinstance(after, list) or not isinstance(shapes, list) or len(after) != len(shapes) or not after:
        raise ValueError("early_exits entry needs matching non-empty 'after' and 'shapes' lists")
    if not all(isinstance(n, str) for n in after):
        raise ValueError("early_exits 'after' must hold module names")
    ints = [entry["num_classes"], entry["channels"], entry["pool"], entry["hidden"]]
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in ints) or entry["num_classes"] < 1:
        raise ValueError("early_exits num_classes, channels, pool and hidden must be non-negative integers")
    if entry["confidence"] not in CONFIDENCES:
        raise ValueError(f"early_exits confidence must be one of {CONFIDENCES}")
    heads = []
    for shape in shapes:
        if not (isinstance(shape, list) and 1 <= len(shape) <= 4 and all(isinstance(s, int) and 1 <= s <= 2**20 for s in shape)):
            raise ValueError(f"early_exits feature shape {shape!r} must be 1 to 4 positive integers")
        heads.append(make_head(shape, entry["num_classes"], channels=entry["channels"], pool=max(1, entry["pool"]),
                               hidden=entry["hidden"]))
    return ExitHeads(after, heads, entry["confidence"])


@register_surgery(_OP)
def replay_early_exits(model: nn.Module, entry: dict[str, Any]) -> None:
    """Rebuild a model's exit heads from an ``early_exits`` surgery entry (used by ``deepshrink.load``).

    Example:
        >>> m = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 3))
        >>> replay_early_exits(m, {"op": "early_exits", "after": ["0"], "shapes": [[4]], "num_classes": 3,
        ...                        "channels": 0, "pool": 4, "hidden": 0, "confidence": "max_prob"})
        >>> sorted(m.state_dict())[:2]
        ['0.bias', '0.weight']
        >>> len(m.early_exits.heads)
        1
    """
    heads = _build_heads(entry)
    for name in heads.after:
        model.get_submodule(name)  # AttributeError (a FormatError on load) for a module the model lacks
    _install(model, heads)


def _example(model: nn.Module, kwargs: dict[str, Any], batch: int) -> tuple[Any, ...]:
    from ..models.inputs import example_inputs

    given = kwargs.get("example_inputs")
    if given is not None:
        inputs = tuple(given) if isinstance(given, (tuple, list)) else (given,)
        first = inputs[0]
        if isinstance(first, Tensor) and first.dim() > 0 and first.shape[0] < batch:
            # enough rows to send some out at every exit during the main-path check
            reps = -(-batch // int(first.shape[0]))
            inputs = (first.repeat(reps, *([1] * (first.dim() - 1))), *inputs[1:])
        return inputs
    data = kwargs.get("data")
    if data is not None:
        return example_inputs(model, data, batch_size=batch)
    return example_inputs(model, batch_size=batch)


@add_exits_.register(EarlyExits)
def add_early_exits(model: nn.Module, config: EarlyExits, **kwargs: Any) -> Report:
    """Attach one exit head per ``config.after`` module; thresholds start closed (see :func:`calibrate_exits`).

    Keyword arguments: ``example_inputs`` (a batch to probe the model with) or ``data``
    (a DataBundle to take one from); otherwise inputs of the model's known shape are used.

    Example:
        >>> import deepshrink as ds
        >>> m = ds.models.create("resnet_small")
        >>> ds.add_exits_(m, ds.EarlyExits(after=["layer1", "layer2"])).changed
        ['layer1', 'layer2']
    """
    if ATTR in model._modules:
        raise ConfigError("model", type(model).__name__, "a model without early exits (add_exits_ was already applied)", "EarlyExits")
    known = {name for name, _ in model.named_modules()}
    bad = [n for n in config.after if n not in known]
    if bad:
        sample = ", ".join(sorted(n for n in known if n and "." not in n)[:12])
        raise ConfigError("after", list(config.after), f"module names of the model (no {bad}; top-level modules: {sample})", "EarlyExits")
    k = len(config.after)
    inputs = _example(model, kwargs, batch=2 * (k + 1))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            shapes, final, order = _probe(model, config.after, inputs)
            num_classes = int(final.shape[1])
            entry = _entry(config, shapes, num_classes)
            device = next((p.device for p in model.parameters()), torch.device("cpu"))
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)  # heads start the same for the same model, run after run
                heads = _build_heads(entry).to(device)
            if order != list(config.after):
                raise ConfigError("after", list(config.after), f"exit points in the order the network runs them: {order}", "EarlyExits")
            _install(model, heads)
            try:
                _check_split(model, inputs, final)
            except (ValueError, RuntimeError, IndexError) as exc:
                _uninstall(model)
                raise ConfigError("after", list(config.after),
                                  f"modules on the network's main path, whose outputs every later layer uses per input ({exc})",
                                  "EarlyExits") from None
    finally:
        model.train(was_training)
    record_surgery(model, entry)
    report = Report(method="early_exits", changed=list(config.after))
    for name, head, shape in zip(config.after, heads.heads, shapes):
        report.per_layer[name] = {"feature_shape": shape, "head_params": sum(p.numel() for p in head.parameters())}
    report.figures["exits"] = k
    report.figures["head_params"] = sum(p.numel() for p in heads.parameters())
    report.figures["num_classes"] = num_classes
    return report


def _probe(model: nn.Module, after: Sequence[str], inputs: tuple[Any, ...]) -> tuple[list[list[int]], Tensor, list[str]]:
    """Feature shapes at the exit points, the full output, and the order in which the exit points ran."""
    seen: dict[str, list[Tensor]] = {n: [] for n in after}
    order: list[str] = []

    def hook(name: str, output: Any) -> None:
        seen[name].append(_feature(output, name))
        order.append(name)

    handles = [model.get_submodule(n).register_forward_hook(lambda _m, _a, out, n=n: hook(n, out)) for n in after]
    try:
        try:
            final = model(*inputs)
        except ValueError as exc:
            raise ConfigError("after", list(after), str(exc), "EarlyExits") from None
    finally:
        for h in handles:
            h.remove()
    if not isinstance(final, Tensor) or final.dim() != 2:
        raise ConfigError("model", type(model).__name__, "a classifier whose output is a logits tensor [batch, classes]", "EarlyExits")
    n = int(final.shape[0])
    for name, outs in seen.items():
        if len(outs) != 1:
            raise ConfigError("after", list(after), f"modules that run exactly once per forward pass ({name!r} ran {len(outs)} times)", "EarlyExits")
        if outs[0].dim() < 2 or outs[0].shape[0] != n:
            raise ConfigError("after", list(after), f"modules whose output has the batch first ({name!r} gives {list(outs[0].shape)})", "EarlyExits")
    return [list(seen[n][0].shape[1:]) for n in after], final, order


def _check_split(model: nn.Module, inputs: tuple[Any, ...], full: Tensor) -> None:
    """Send every (K+1)-th input out at each exit; the inputs that stay must get the full network's outputs."""
    heads = exit_heads(model)
    k = len(heads.heads)

    def decide(i: int, logits: Tensor, rows: Tensor) -> Tensor:
        return rows % (k + 1) == i

    base = type(model)._deepshrink_base_forward  # type: ignore[attr-defined]
    out, taken = _run(model, base, inputs, {}, decide, list(range(k)))
    stay = taken == k
    if not torch.allclose(out[stay], full[stay], rtol=1e-4, atol=1e-5):
        raise ValueError("inputs that stayed got other outputs once the others had left")


def _uninstall(model: nn.Module) -> None:
    model.__class__ = type(model).__mro__[1]
    del model._modules[ATTR]
