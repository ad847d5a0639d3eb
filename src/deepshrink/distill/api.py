"""``distill(student, teacher, data, KD(...), TrainConfig(...))``: teacher-student training on the shared engine.

One verb covers the variants of the survey's distillation section:

- Hinton et al.'s softened-softmax loss (``KD.temperature``, ``KD.alpha``);
- FitNets hints (``KD.hints``): adapters trained together with the student;
- an ensemble of teachers (``teacher=[t1, t2, ...]``): averaged soft targets;
- unlabelled transfer data (``transfer=``): the teacher labels it;
- a teacher-assistant chain (``assistants=[a1, ...]``): teacher -> a1 -> ... -> student;
- a student that is the pruned or factorized version of its teacher: distill after
  ``prune_``/``factorize_`` (masks and other parametrizations stay in force);
- sentence-embedding models on text data (``task == "text"``): the student matches the
  teacher's embeddings (:func:`deepshrink.distill.embedding.embedding_objective`).

Training is :func:`deepshrink.train`: progress, checkpoint/resume and ``torchrun`` work unchanged.

Example:
    >>> import deepshrink as ds
    >>> data = ds.data.load("synthetic:classification:100")
    >>> teacher = ds.models.create("lenet300", in_features=64, num_classes=4)
    >>> student = ds.models.create("mlp", in_features=64, hidden=[16], num_classes=4)
    >>> out = ds.distill(student, teacher, data, ds.KD(temperature=4, alpha=0.9, hints=[("fc1", "fc2")]),
    ...                  ds.TrainConfig(epochs=1, progress=False))
    >>> out["steps"]
    2
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ..data.bundle import DataBundle
from ..errors import ConfigError
from ..models.inputs import check_data_fits
from ..train.batches import fetch
from ..train.callbacks import Callback
from ..train.config import TrainConfig
from ..train.engine import train
from .config import KD
from .hints import FeatureCapture, HintedStudent, make_adapter
from .teacher import freeze, inputs_and_labels, kd_objective


class UnlabelledInputs(Dataset):
    """A view of a data set that yields ``(input,)`` only: labels, if any, are dropped.

    Example:
        >>> from torch.utils.data import TensorDataset
        >>> len(UnlabelledInputs(TensorDataset(torch.zeros(3, 2), torch.zeros(3)))[0])
        1
    """

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[Any]:
        item = self.dataset[i]
        return (item[0] if isinstance(item, (tuple, list)) else item,)


def _teachers(teacher: nn.Module | Sequence[nn.Module]) -> list[nn.Module]:
    teachers = [teacher] if isinstance(teacher, nn.Module) else list(teacher)
    if not teachers or not all(isinstance(t, nn.Module) for t in teachers):
        raise TypeError("teacher must be an nn.Module or a non-empty list of them (an ensemble)")
    return teachers


def _device_of(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _hinted(student: nn.Module, teacher: nn.Module, train_set: Dataset, kd: KD, seed: int) -> HintedStudent:
    """Wrap the student with one adapter per hint, sized by a probe forward pass on two training inputs."""
    s_names = [s for s, _ in kd.hints]
    t_names = [t for _, t in kd.hints]
    for owner, model, names in (("student", student, s_names), ("teacher", teacher, t_names)):
        known = {n for n, _ in model.named_modules()}
        bad = [n for n in names if n not in known]
        if bad:
            raise ConfigError("hints", [list(h) for h in kd.hints], f"module names of the {owner} (no {bad} in it)", "KD")
    x, _ = inputs_and_labels(fetch(train_set, torch.arange(min(2, len(train_set)))))  # type: ignore[arg-type]
    was_training = student.training
    student.eval()
    try:
        with torch.no_grad(), FeatureCapture(student, s_names) as s_cap, FeatureCapture(teacher, t_names) as t_cap:
            student(x.to(_device_of(student)))
            teacher(x.to(_device_of(teacher)))
    finally:
        student.train(was_training)
    # Adapters start from the run's seed, without disturbing the caller's random stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        adapters = [make_adapter(s_cap.features[s], t_cap.features[t]) for s, t in kd.hints]
    return HintedStudent(student, s_names, adapters).to(_device_of(student))


def distill(
    student: nn.Module,
    teacher: nn.Module | Sequence[nn.Module],
    data: DataBundle,
    kd: KD | None = None,
    cfg: TrainConfig | None = None,
    callbacks: Sequence[Callback] = (),
    *,
    transfer: Dataset | None = None,
    assistants: Sequence[nn.Module] = (),
) -> dict[str, Any]:
    """Train ``student`` in place to mimic ``teacher``; returns the engine's result (history, steps, val, ...).

    Args:
        student: the model to train (any classifier, or an embedding model on text data).
        teacher: a trained model, or a list of them whose soft targets are averaged.
        data: train/val/test splits; validation accuracy is reported every epoch.
        kd: temperature, alpha and hints (default ``KD()``).
        cfg: the training settings (default ``TrainConfig()``).
        callbacks: engine callbacks (e.g. a pruning schedule).
        transfer: train on this data set instead of ``data.train``; its labels, if
            any, are ignored and the teacher's predictions are the hard labels.
        assistants: teacher assistants (Mirzadeh et al. 2020): the first learns from the
            teacher, each next one from the previous, the student from the last. The result
            then has ``"stages"``, one engine result per link. With a ``checkpoint_dir``
            each link checkpoints under ``<dir>/link<i>``.

    Example:
        >>> import deepshrink as ds
        >>> data = ds.data.load("synthetic:classification:100")
        >>> teacher = ds.models.create("lenet300", in_features=64, num_classes=4)
        >>> assistant = ds.models.create("mlp", in_features=64, hidden=[64], num_classes=4)
        >>> student = ds.models.create("mlp", in_features=64, hidden=[8], num_classes=4)
        >>> out = ds.distill(student, teacher, data, ds.KD(), ds.TrainConfig(epochs=1, progress=False),
        ...                  assistants=[assistant])
        >>> len(out["stages"])
        2
    """
    kd = kd if kd is not None else KD()
    cfg = cfg or TrainConfig()
    if not isinstance(kd, KD):
        raise TypeError(f"kd must be a deepshrink.KD config; got {type(kd).__name__}")
    if not isinstance(student, nn.Module):
        raise TypeError(f"student must be an nn.Module; got {type(student).__name__}")
    teachers = _teachers(teacher)
    # Student, teachers and assistants all read the data: say which one cannot, before any training.
    for role, model in [("student", student), *[("teacher", t) for t in teachers], *[("assistant", a) for a in assistants]]:
        check_data_fits(model, data, f"distill ({role})")
    if assistants:
        return _chain(student, teachers, list(assistants), data, kd, cfg, callbacks, transfer)
    if data.task == "text":
        return _distill_embeddings(student, teachers, data, kd, cfg, callbacks, transfer)
    if any(t is student for t in teachers):
        raise ValueError("the student cannot be its own teacher: pass a copy (copy.deepcopy) made before compressing it")
    bundle = data
    if transfer is not None:
        bundle = DataBundle(name=f"{data.name}+transfer", train=UnlabelledInputs(transfer), val=data.val, test=data.test,
                            input_shape=data.input_shape, num_classes=data.num_classes, task=data.task, meta=dict(data.meta))
    if kd.hints and len(teachers) != 1:
        raise ConfigError("hints", [list(h) for h in kd.hints], "hints with a single teacher (an ensemble has no one set of modules)", "KD")
    objective = kd_objective(teachers, kd)  # freezes the teachers
    if not kd.hints:
        return train(student, bundle, cfg, callbacks, objective=objective)
    wrapped = _hinted(student, teachers[0], bundle.train, kd, cfg.seed)
    return train(wrapped, bundle, cfg, callbacks, objective=objective)


def _chain(
    student: nn.Module,
    teachers: list[nn.Module],
    assistants: list[nn.Module],
    data: DataBundle,
    kd: KD,
    cfg: TrainConfig,
    callbacks: Sequence[Callback],
    transfer: Dataset | None,
) -> dict[str, Any]:
    if kd.hints:
        raise ConfigError("hints", [list(h) for h in kd.hints],
                          "no hints with teacher assistants (each link has other module names): run distill once per link", "KD")
    stages = []
    current: nn.Module | list[nn.Module] = teachers
    for i, learner in enumerate([*assistants, student]):
        link_cfg = cfg
        if cfg.checkpoint_dir:
            link_cfg = cfg.replace(checkpoint_dir=os.path.join(cfg.checkpoint_dir, f"link{i}"))
        # Callbacks (e.g. a pruning schedule) belong to the student's run, the last link.
        link_callbacks = callbacks if learner is student else ()
        stages.append(distill(learner, current, data, kd, link_cfg, link_callbacks, transfer=transfer))
        current = learner
    return {**stages[-1], "stages": stages}


def _distill_embeddings(
    student: nn.Module,
    teachers: list[nn.Module],
    data: DataBundle,
    kd: KD,
    cfg: TrainConfig,
    callbacks: Sequence[Callback],
    transfer: Dataset | None,
) -> dict[str, Any]:
    from .embedding import embedding_objective

    if len(teachers) != 1 or kd.hints or transfer is not None:
        raise ConfigError("kd", kd, "one teacher, no hints and no transfer set for embedding models on text data"
                          " (the sentences of data.train are the transfer set)", "distill")
    if teachers[0] is student:
        raise ValueError("the student cannot be its own teacher: pass a copy (copy.deepcopy) made before compressing it")
    freeze(teachers[0])
    return train(student, data, cfg, callbacks, objective=embedding_objective(teachers[0]))
