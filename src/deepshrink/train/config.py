"""TrainConfig: every setting of the training engine in one frozen, validated dataclass."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config, check_choice, check_range, check_type, register_config
from ..errors import ConfigError

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "cosine", "onecycle", "step")
# "shift" and "affine" perturb images; "words" replaces words of text batches by words of the
# tokenizer's vocabulary (deepshrink.data.text_augment), for distilling embedding models.
AUGMENTATIONS = ("none", "shift", "affine", "words")
IMAGE_AUGMENTATIONS = ("shift", "affine")
TEXT_AUGMENTATIONS = ("words",)


@register_config("train")
@dataclass(frozen=True)
class TrainConfig(Config):
    """Settings of one training or fine-tuning run.

    ``batch_size`` is the global batch: under ``torchrun`` with N processes each
    process takes ``batch_size / N`` samples of every batch, so a run gives the
    same result whatever N is.

    ``dropout`` overrides the probability of every dropout layer for this run
    only (None: as the model has it). Recovery fine-tuning that matches a
    teacher's outputs wants 0: the student should learn the teacher's
    deterministic function, and dropout noise caps how closely it can.

    ``group_by_length`` (text data only) batches sentences of similar length
    together (train.batches.GlobalBatchSampler): a batch is padded to its
    longest sentence, and random batches of English sentences are mostly
    padding. On pydoc plus general English it makes the minilm recipes 1.4-1.6x
    faster end to end for the same result per step (README, "Sentences of
    similar length batched together").

    Example:
        >>> cfg = TrainConfig(epochs=3, lr=0.01, optimizer="sgd")
        >>> cfg.replace(epochs=5).epochs
        5
    """

    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    label_smoothing: float = 0.0
    augment: str = "none"
    grad_clip: float | None = None
    dropout: float | None = None
    group_by_length: bool = True
    seed: int = 0
    max_steps: int | None = None
    eval_every_epoch: bool = True
    checkpoint_dir: str | None = None
    checkpoint_every_steps: int = 0  # 0: a checkpoint at the end of every epoch (when checkpoint_dir is set)
    resume: bool = False
    progress: bool = True
    device: str = "auto"

    def validate(self) -> None:
        check_range(self, "epochs", 0, None, integer=True)
        check_range(self, "batch_size", 1, None, integer=True)
        check_choice(self, "optimizer", OPTIMIZERS)
        check_range(self, "lr", 0, None, lo_open=True)
        check_range(self, "momentum", 0, 1, hi_open=True)
        check_range(self, "weight_decay", 0, None)
        check_choice(self, "schedule", SCHEDULES)
        check_range(self, "warmup_epochs", 0, None)
        check_range(self, "label_smoothing", 0, 1, hi_open=True)
        check_choice(self, "augment", AUGMENTATIONS)
        if self.grad_clip is not None:
            check_range(self, "grad_clip", 0, None, lo_open=True)
        if self.dropout is not None:
            check_range(self, "dropout", 0, 1, hi_open=True)
        check_type(self, "group_by_length", bool, "true or false")
        check_range(self, "seed", 0, 2**63 - 1, integer=True)
        if self.max_steps is not None:
            check_range(self, "max_steps", 1, None, integer=True)
        check_type(self, "eval_every_epoch", bool, "true or false")
        if self.checkpoint_dir is not None:
            check_type(self, "checkpoint_dir", str, "a directory path or null")
        check_range(self, "checkpoint_every_steps", 0, None, integer=True)
        check_type(self, "resume", bool, "true or false")
        check_type(self, "progress", bool, "true or false")
        if self.resume and self.checkpoint_dir is None:
            raise ConfigError("resume", True, "resume only together with a checkpoint_dir", "TrainConfig")
        check_type(self, "device", str, "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
        if not (self.device in ("auto", "cpu", "mps", "cuda") or self.device.startswith("cuda:")):
            raise ConfigError("device", self.device, "'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'", "TrainConfig")


# Fine-tuning after compression: short, gentle, no warm restart of a big learning rate.
FINETUNE_DEFAULTS = TrainConfig(epochs=3, lr=3e-4, schedule="cosine")
