"""The training engine: one loop for training, fine-tuning, distillation and sparse training.

It places the model on a device, runs data-parallel under torchrun, draws
deterministic batches (so a resumed or multi-process run equals a plain one),
calls callbacks at fixed points, shows progress, and writes atomic,
pickle-free checkpoints it can resume from.
"""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..data.bundle import DataBundle
from ..errors import ConfigError
from ..models.inputs import check_data_fits
from .batches import GlobalBatchSampler, augment_images, fetch, seeded_generator, split_batch
from .callbacks import Callback, TrainState
from .checkpoint import has_checkpoint, load_checkpoint, save_checkpoint
from .config import FINETUNE_DEFAULTS, IMAGE_AUGMENTATIONS, TEXT_AUGMENTATIONS, TrainConfig
from .distributed import DistContext, barrier, setup_distributed, teardown_distributed
from .progress import ProgressDisplay
from ..surgery import replay_surgery, surgery_log

# objective(model, batch, state) -> per-sample losses (shape [n]) or their mean (a scalar)
Objective = Callable[[nn.Module, Any, TrainState], torch.Tensor]


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for a config's ``device`` field ("auto" picks CUDA when present).

    Example:
        >>> resolve_device("cpu").type
        'cpu'
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _to_device(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device, non_blocking=True)
    if isinstance(obj, (list, tuple)):
        return type(obj)(_to_device(o, device) for o in obj)
    if isinstance(obj, dict):
        return {k: _to_device(v, device) for k, v in obj.items()}
    return obj


def classification_objective(label_smoothing: float = 0.0) -> Objective:
    """Per-sample cross-entropy of a classifier on (input, label) batches.

    Example:
        >>> obj = classification_objective()
        >>> m = nn.Linear(3, 2)
        >>> obj(m, (torch.zeros(4, 3), torch.zeros(4, dtype=torch.long)), None).shape
        torch.Size([4])
    """

    def objective(model: nn.Module, batch: Any, state: TrainState | None) -> torch.Tensor:
        x, y = split_batch(batch)
        return F.cross_entropy(model(x), y, reduction="none", label_smoothing=label_smoothing)

    return objective


def _replay_checkpoint_surgery(model: nn.Module, log: list[dict[str, Any]]) -> None:
    """Bring a fresh model to the architecture of the checkpointed one (channels pruned during training...).

    The checkpoint's surgery log must extend the model's own; the missing entries are replayed.
    """
    current = surgery_log(model)
    if not log or log == current:
        return
    if log[: len(current)] != current:
        raise ConfigError("resume", "a model whose structural changes differ from the checkpoint's",
                          "the same base model the checkpointed run started from")
    replay_surgery(model, log[len(current):])


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ConfigError("model", type(model).__name__, "a model with at least one trainable parameter")
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(cfg: TrainConfig, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """The learning-rate multiplier at ``step`` (warm-up, then the schedule).

    Example:
        >>> lr_factor(TrainConfig(schedule="cosine"), 0, 100, 10)
        1.0
    """
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))
    if cfg.schedule == "onecycle" and warmup == 0:
        warmup = int(0.3 * total_steps)
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    t = (step - warmup) / max(1, total_steps - warmup)
    t = min(max(t, 0.0), 1.0)
    if cfg.schedule == "constant":
        return 1.0
    if cfg.schedule in ("cosine", "onecycle"):
        return 0.5 * (1.0 + math.cos(math.pi * t))
    return 0.1 ** (int(t >= 0.5) + int(t >= 0.75))  # "step"


def _rng_state() -> dict[str, Any]:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]), float(np_state[4])],
        "python": random.getstate(),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))


def train(
    model: nn.Module,
    data: DataBundle,
    cfg: TrainConfig | None = None,
    callbacks: Sequence[Callback] = (),
    *,
    objective: Objective | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``data.train`` and evaluate on ``data.val`` each epoch.

    Returns a dict with the per-epoch ``history``, ``steps``, ``seconds`` and the last
    validation metrics. Works unchanged under ``torchrun --nproc_per_node=N``.

    Example:
        >>> import deepshrink as ds
        >>> data = ds.data.load("synthetic:classification:100")
        >>> model = ds.models.create("lenet300", in_features=64, num_classes=4)
        >>> out = ds.train(model, data, ds.TrainConfig(epochs=1, progress=False))
        >>> out["steps"]
        2
    """
    cfg = cfg or TrainConfig()
    callbacks = list(callbacks)
    if objective is None and isinstance(data, DataBundle):
        # The default objective feeds the data straight to the model: check both before the first step.
        if data.task == "text":
            raise ConfigError("objective", None, "an objective for text data, which has no labels to classify: "
                              "objective=deepshrink.distill.embedding.embedding_objective(teacher)", "train")
        check_data_fits(model, data, "train")
    device = resolve_device(cfg.device)
    ctx = setup_distributed(device)
    try:
        with dropout_override(model, cfg.dropout):
            return _run(model, data, cfg, callbacks, objective or classification_objective(cfg.label_smoothing), device, ctx)
    finally:
        teardown_distributed(ctx)


@contextlib.contextmanager
def dropout_override(model: nn.Module, p: float | None) -> Iterator[None]:
    """Within the block every dropout layer of ``model`` drops with probability ``p`` (None: unchanged).

    Example:
        >>> m = nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.1))
        >>> with dropout_override(m, 0.0):
        ...     m[1].p
        0.0
        >>> m[1].p
        0.1
    """
    layers = [m for m in model.modules() if isinstance(m, nn.modules.dropout._DropoutNd)] if p is not None else []
    saved = [m.p for m in layers]
    for m in layers:
        m.p = float(p)  # type: ignore[arg-type]
    try:
        yield
    finally:
        for m, old in zip(layers, saved):
            m.p = old


def _text_augmenter(model: nn.Module, data: DataBundle, cfg: TrainConfig, ctx: DistContext) -> Callable[[Any, int, int], Any] | None:
    """The batch transform for ``augment="words"`` on text data (None when there is none to apply).

    Refuses an augmentation made for the other kind of data, rather than silently training without it.
    """
    if cfg.augment == "none":
        return None
    if data.task != "text":
        if cfg.augment in TEXT_AUGMENTATIONS:
            raise ConfigError("augment", cfg.augment, f"one of {', '.join(IMAGE_AUGMENTATIONS)} or 'none' for {data.task} data "
                              "('words' augments sentences)", "TrainConfig")
        return None
    if cfg.augment not in TEXT_AUGMENTATIONS:
        raise ConfigError("augment", cfg.augment, "'words' or 'none' for text data (shift and affine move image pixels)", "TrainConfig")
    from ..data.text_augment import model_word_draws, replace_words

    words, weights = model_word_draws(model)

    def augment(batch: Any, epoch: int, b: int) -> Any:
        # Seeded by (seed, epoch, batch, rank): a resumed run sees the same augmented batches.
        return replace_words(list(batch), words, generator=seeded_generator(cfg.seed, epoch, b, 11, ctx.rank), weights=weights)

    return augment


def _text_lengths(data: DataBundle) -> list[int] | None:
    """Characters per training sentence (a proxy for tokens that needs no tokenizer); None unless text."""
    if data.task != "text":
        return None
    sentences = getattr(data.train, "sentences", None)
    if sentences is None:
        sentences = [data.train[i] for i in range(len(data.train))]  # type: ignore[arg-type]
    return [len(s) if isinstance(s, str) else 1 for s in sentences]


def _run(
    model: nn.Module,
    data: DataBundle,
    cfg: TrainConfig,
    callbacks: list[Callback],
    objective: Objective,
    device: torch.device,
    ctx: DistContext,
) -> dict[str, Any]:
    if cfg.batch_size % ctx.world_size != 0:
        raise ConfigError("batch_size", cfg.batch_size, f"a multiple of the number of processes ({ctx.world_size})", "TrainConfig")
    model.to(device)
    augment_text = _text_augmenter(model, data, cfg, ctx)
    sampler = GlobalBatchSampler(
        len(data.train), cfg.batch_size, cfg.seed, ctx.world_size, ctx.rank,  # type: ignore[arg-type]
        lengths=_text_lengths(data) if cfg.group_by_length else None,
    )
    steps_per_epoch = len(sampler)
    total_steps = cfg.epochs * steps_per_epoch
    if cfg.max_steps is not None:
        total_steps = min(total_steps, cfg.max_steps)
    ck: dict[str, Any] | None = None
    if cfg.resume and cfg.checkpoint_dir and has_checkpoint(cfg.checkpoint_dir):
        ck = load_checkpoint(cfg.checkpoint_dir)
        from ..prune.masks import restore_masks

        # A fresh model resuming a pruned run needs the mask slots before its optimizer is
        # built, so that parameters (and so optimizer state) line up with the checkpoint.
        restore_masks(model, ck["model"])
        _replay_checkpoint_surgery(model, ck.get("surgery", []))
    optimizer = _make_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(cfg, s, total_steps, steps_per_epoch)
    )
    net: nn.Module = model
    if ctx.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    state = TrainState(model=model, optimizer=optimizer, total_epochs=cfg.epochs, total_steps=total_steps, steps_per_epoch=steps_per_epoch)
    history: list[dict[str, Any]] = []
    torch.manual_seed(cfg.seed)
    for cb in callbacks:
        cb.on_train_begin(state)

    start_batch = 0
    if ck is not None:
        model.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        scheduler.load_state_dict(ck["scheduler"])
        if len(ck["callbacks"]) != len(callbacks):
            raise ConfigError("callbacks", len(callbacks), f"the {len(ck['callbacks'])} callbacks the checkpoint was made with")
        for cb, cb_state in zip(callbacks, ck["callbacks"]):
            cb.load_state_dict(cb_state)
        _set_rng_state(ck["rng"])
        state.step, state.epoch, start_batch = int(ck["step"]), int(ck["epoch"]), int(ck["batch"])
        history = list(ck["history"])

    def checkpoint(batch_in_epoch: int) -> None:
        if not cfg.checkpoint_dir:
            return
        if ctx.is_main:
            save_checkpoint(cfg.checkpoint_dir, state.step, {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "callbacks": [cb.state_dict() for cb in callbacks],
                "rng": _rng_state(),
                "step": state.step,
                "epoch": state.epoch,
                "batch": batch_in_epoch,
                "history": history,
                "surgery": surgery_log(model),
            })
        barrier(ctx)

    started = time.perf_counter()
    display = ProgressDisplay(enabled=cfg.progress and ctx.is_main, total=total_steps, completed=state.step)
    with display:
        while state.epoch < cfg.epochs and state.step < total_steps and not state.stop:
            net.train()
            for cb in callbacks:
                cb.on_epoch_begin(state)
            loss_sum, loss_count = 0.0, 0
            for b, idx, global_n in sampler.batches(state.epoch, start_batch):
                batch = fetch(data.train, idx)
                if data.task == "classification" and cfg.augment != "none":
                    batch = [augment_images(batch[0], cfg.augment, cfg.seed, state.epoch, b, global_n, ctx.world_size, ctx.rank), *batch[1:]]
                elif augment_text is not None:
                    batch = augment_text(batch, state.epoch, b)
                batch = _to_device(batch, device)
                losses = objective(net, batch, state)
                n_local = len(idx)
                # Sum over this process's samples, divided by the global batch size; DDP
                # averages over processes, so multiply back by the world size. The result is
                # the global mean whatever the split, even for an uneven last batch.
                loss = losses.sum() * (ctx.world_size / global_n) if losses.dim() > 0 else losses * (n_local * ctx.world_size / global_n)
                for cb in callbacks:
                    extra = cb.loss_term(state)
                    if extra is not None:
                        loss = loss + extra
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip is not None:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                for cb in callbacks:
                    cb.on_before_step(state)
                optimizer.step()
                scheduler.step()
                state.step += 1
                state.loss = float(loss.detach())
                loss_sum += float(losses.detach().sum()) if losses.dim() > 0 else float(losses.detach()) * n_local
                loss_count += n_local
                for cb in callbacks:
                    cb.on_step_end(state)
                display.advance(loss=state.loss, epoch=state.epoch + 1)
                last_of_epoch = b == steps_per_epoch - 1
                if (cfg.checkpoint_every_steps and state.step % cfg.checkpoint_every_steps == 0 and not last_of_epoch
                        and state.step < total_steps):
                    checkpoint(b + 1)
                if state.step >= total_steps or state.stop:
                    break
            start_batch = 0
            state.epoch += 1
            record: dict[str, Any] = {"epoch": state.epoch, "step": state.step, "train_loss": loss_sum / max(1, loss_count)}
            if cfg.eval_every_epoch and data.task == "classification" and len(data.val) > 0:  # type: ignore[arg-type]
                val = evaluate(model, data.val, device=device)
                record.update({"val_accuracy": val["accuracy"], "val_loss": val["loss"]})
                state.metrics = {"val_accuracy": val["accuracy"], "val_loss": val["loss"]}
                display.note(f"epoch {state.epoch}: val accuracy {val['accuracy']:.4f}")
            for cb in callbacks:
                cb.on_epoch_end(state)
            history.append(record)
            checkpoint(0)
    for cb in callbacks:
        cb.on_train_end(state)
    return {"history": history, "steps": state.step, "seconds": time.perf_counter() - started,
            "val": history[-1] if history else {}, "world_size": ctx.world_size, "rank": ctx.rank}


def finetune(
    model: nn.Module,
    data: DataBundle,
    cfg: TrainConfig | None = None,
    callbacks: Sequence[Callback] = (),
    *,
    objective: Objective | None = None,
) -> dict[str, Any]:
    """Fine-tune after compression: the same engine with gentler defaults (3 epochs, lr 3e-4).

    Masks, codebooks and other parametrizations stay in force while training.

    Example:
        >>> import deepshrink as ds
        >>> data = ds.data.load("synthetic:classification:100")
        >>> model = ds.models.create("lenet300", in_features=64, num_classes=4)
        >>> ds.finetune(model, data, ds.TrainConfig(epochs=1, progress=False))["steps"]
        2
    """
    return train(model, data, cfg or FINETUNE_DEFAULTS, callbacks, objective=objective)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    *,
    batch_size: int = 500,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Accuracy and mean cross-entropy of a classifier on a data set of (input, label) pairs.

    Example:
        >>> import deepshrink as ds
        >>> data = ds.data.load("synthetic:classification:100")
        >>> model = ds.models.create("lenet300", in_features=64, num_classes=4)
        >>> 0.0 <= ds.evaluate(model, data.test)["accuracy"] <= 1.0
        True
    """
    if device is None:
        try:
            device = next(model.parameters()).device
        except StopIteration:
            device = torch.device("cpu")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    correct, total, loss_sum = 0, 0, 0.0
    n = len(dataset)  # type: ignore[arg-type]
    sampler = GlobalBatchSampler(n, batch_size, seed=0, shuffle=False)
    for _, idx, _ in sampler.batches(epoch=0):
        x, y = split_batch(_to_device(fetch(dataset, idx), device))
        logits = model(x)
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(dim=-1) == y).sum())
        total += int(y.numel())
    model.train(was_training)
    return {"accuracy": correct / max(1, total), "loss": loss_sum / max(1, total), "count": float(total)}
