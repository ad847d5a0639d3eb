"""Example inputs for a model: what analysis, tracing and export feed it.

Example:
    >>> import deepshrink as ds
    >>> (x,) = example_inputs(ds.models.create("lenet5"), batch_size=2)
    >>> tuple(x.shape)
    (2, 1, 28, 28)
"""

from __future__ import annotations

from collections.abc import Iterator
import io
from contextlib import contextmanager, redirect_stderr
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..errors import ConfigError, SpecError
from ..surgery import model_spec

if TYPE_CHECKING:
    from ..data.bundle import DataBundle

# Used for text models when no data is given: fixed, so that measurements repeat.
SAMPLE_SENTENCES = (
    "Deep compression makes neural networks smaller without losing accuracy.",
    "The quick brown fox jumps over the lazy dog.",
    "Pruning removes weights that contribute little to the output.",
    "A sentence encoder maps text to a vector of fixed length.",
)


def example_inputs(
    model_or_spec: nn.Module | str, data_bundle: DataBundle | None = None, batch_size: int = 1
) -> tuple[Tensor, ...]:
    """A tuple of example inputs suitable for ``model(*inputs)``.

    Images: the first ``batch_size`` items of the data's test split when a
    data bundle is given, else uniform noise in [0, 1] (seeded) of the model's
    input shape. Text models (those with a ``tokenizer``, such as ``minilm``):
    ``(input_ids, attention_mask)`` for the first test sentences, or for fixed
    sample sentences. Raises :class:`SpecError` when the shape cannot be inferred.

    Example:
        >>> import deepshrink as ds
        >>> ids, mask = example_inputs("minilm", batch_size=2)
        >>> ids.shape == mask.shape and ids.shape[0] == 2
        True
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size={batch_size!r} must be an integer >= 1")
    if isinstance(model_or_spec, str) and model_or_spec != "minilm" and data_bundle is None:
        from . import create

        model_or_spec = create(model_or_spec)  # its tokenizer or input shape decides
    is_text = data_bundle is not None and data_bundle.task == "text"
    tokenizer = _tokenizer(model_or_spec) if (is_text or data_bundle is None) else None
    if is_text or tokenizer is not None:
        if tokenizer is None:
            raise SpecError("text data needs a model with a tokenizer (e.g. minilm or hf:DIR with tokenizer files)")
        if data_bundle is not None:
            split = data_bundle.test if len(data_bundle.test) else data_bundle.train  # type: ignore[arg-type]
            sentences = [split[i % len(split)] for i in range(batch_size)]  # type: ignore[arg-type]
        else:
            sentences = [SAMPLE_SENTENCES[i % len(SAMPLE_SENTENCES)] for i in range(batch_size)]
        batch = tokenizer(sentences, padding=True, truncation=True, max_length=256, return_tensors="pt")
        return batch["input_ids"], batch["attention_mask"]
    if data_bundle is not None:
        split = data_bundle.test if len(data_bundle.test) else data_bundle.train  # type: ignore[arg-type]
        items = [split[i % len(split)] for i in range(batch_size)]  # type: ignore[arg-type]
        xs = [item[0] if isinstance(item, (tuple, list)) else item for item in items]
        return (torch.stack([torch.as_tensor(x) for x in xs]),)
    shape = _input_shape(model_or_spec)
    generator = torch.Generator().manual_seed(0)
    return (torch.rand((batch_size, *shape), generator=generator),)


@contextmanager
def eval_mode(*models: nn.Module) -> Iterator[None]:
    """Put ``models`` in eval mode for the block, then back in the mode each was in.

    Example:
        >>> m = nn.Linear(2, 2)
        >>> with eval_mode(m):
        ...     m.training
        False
        >>> m.training
        True
    """
    modes = [m.training for m in models]
    try:
        for m in models:
            m.eval()
        yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


@torch.no_grad()
def run_once(model: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, Exception | None]:
    """``(model(*inputs), None)``, or ``(None, what it raised)``: eval mode, no gradients, the mode restored after.

    Example:
        >>> out, exc = run_once(nn.Linear(2, 3), (torch.zeros(1, 2),))
        >>> tuple(out.shape), exc
        ((1, 3), None)
    """
    try:
        # torch.fx GraphModules print the failing line of generated code to stderr before raising;
        # the caller reports the error itself.
        with eval_mode(model), redirect_stderr(io.StringIO()):
            return model(*inputs), None
    except Exception as exc:  # noqa: BLE001 - whatever it raises, the caller decides what it means
        return None, exc


def forward_error(model: nn.Module, inputs: tuple[Any, ...]) -> Exception | None:
    """What ``model(*inputs)`` raises, or None when it runs: eval mode, no gradients, the mode restored after.

    For checks before work starts (do these inputs suit the model? does it still run with a layer
    swapped?): eval mode, so that a check never moves batch-norm statistics.

    Example:
        >>> forward_error(nn.Linear(2, 2), (torch.zeros(1, 2),)) is None
        True
        >>> type(forward_error(nn.Linear(2, 2), (torch.zeros(1, 3),))).__name__
        'RuntimeError'
    """
    return run_once(model, inputs)[1]


def _tokenizer(model_or_spec: nn.Module | str) -> Any:
    if model_or_spec == "minilm":
        from .minilm import load_minilm_tokenizer

        return load_minilm_tokenizer()  # without loading the 90 MB of weights
    if isinstance(model_or_spec, str):
        from . import create

        model_or_spec = create(model_or_spec)
    return getattr(model_or_spec, "tokenizer", None)


def _input_shape(model_or_spec: nn.Module | str) -> tuple[int, ...]:
    if isinstance(model_or_spec, str):
        from . import create

        model_or_spec = create(model_or_spec)
    model = model_or_spec
    shape = getattr(model, "example_input_shape", None)
    if shape is not None:
        return tuple(int(s) for s in shape)
    spec = model_spec(model) or {}
    kwargs = spec.get("kwargs", {})
    if spec.get("spec") == "lenet300":
        features = int(kwargs.get("in_features", 784))
        return (1, 28, 28) if features == 784 else (features,)
    if spec.get("spec") == "lenet5":
        side = int(kwargs.get("image_size", 28))
        return (int(kwargs.get("in_channels", 1)), side, side)
    first = next((m for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))), None)
    if isinstance(first, nn.Linear):
        return (first.in_features,)
    raise SpecError(
        f"cannot infer an input shape for {type(model).__name__}; pass data_bundle=... "
        "or set model.example_input_shape = (C, H, W)"
    )


def _first_tensor(out: Any) -> Tensor | None:
    if isinstance(out, Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], Tensor):
        return out[0]
    return getattr(out, "logits", None)


def check_data_fits(model: nn.Module, data: DataBundle, owner: str) -> None:
    """Raise ConfigError, before any work, when ``data`` cannot feed ``model``.

    Two items run through the model (eval mode, no gradients, on the model's
    device): an input the model refuses (another image size, channel count or
    feature width; text for an image model) or fewer outputs than the data
    have classes is reported with both shapes and the fix, instead of a torch
    error from deep inside a method after the model was partly changed. Items
    of a kind this check does not know are left to the caller.

    Example:
        >>> import deepshrink as ds
        >>> check_data_fits(ds.models.create("lenet5"), ds.data.load("digits"), "prune_")
        Traceback (most recent call last):
        ...
        deepshrink.errors.ConfigError: prune_.data='digits' is invalid: expected data whose inputs the model takes: ...
    """
    split = next((s for s in (data.test, data.train, data.val) if len(s)), None)  # type: ignore[arg-type]
    if split is None:
        return
    # Text models take sentences through tokenize(sentences), the contract of the text objectives.
    tokenize = getattr(model, "tokenize", None)
    if data.task == "text" and not callable(tokenize):
        raise ConfigError("data", data.name, f"data that {type(model).__name__} takes: {data.name} is text, and text "
                          "needs a model with a tokenize(sentences) method, a sentence encoder such as --model minilm", owner)
    try:
        if data.task == "text":
            batch = tokenize([split[i % len(split)] for i in range(2)])  # type: ignore[arg-type,misc]
            sample: tuple[Any, ...] = (batch["input_ids"], batch["attention_mask"])
        else:
            sample = example_inputs(model, data, batch_size=2)
    except (TypeError, RuntimeError, ValueError, IndexError, KeyError):
        return  # items of a kind we cannot batch: left to the method that reads them
    param = next(model.parameters(), None)
    if param is not None and param.device.type != "meta":
        sample = tuple(t.to(param.device) if isinstance(t, Tensor) else t for t in sample)
    shape = tuple(sample[0].shape[1:]) if isinstance(sample[0], Tensor) else "?"
    output, exc = run_once(model, sample)
    if exc is not None:
        what = "sentences" if data.task == "text" else f"inputs of shape {shape}"
        raise ConfigError(
            "data", data.name,
            f"data whose inputs the model takes: {data.name} gives {what}, on which {type(model).__name__} fails "
            f"({type(exc).__name__}: {str(exc)[:160]}). Use data made for this model, or build the model for this "
            "data (the CLI builds --model from the data's input shape and class count)",
            owner,
        )
    logits = _first_tensor(output)
    classes = data.num_classes
    if data.task == "classification" and classes and logits is not None and logits.dim() == 2 and logits.shape[1] < classes:
        raise ConfigError(
            "data", data.name,
            f"data with at most {logits.shape[1]} classes, the model's outputs: {data.name} has {classes}. "
            "Build the model with num_classes matching the data",
            owner,
        )
