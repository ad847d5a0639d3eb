"""`deepshrink eval`: accuracy of a classifier, or embedding similarity to a reference model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from torch import nn
from torch.utils.data import ConcatDataset, Dataset

from .. import data as data_mod
from .. import models
from ..cli import _handles_errors, app, print_json
from ..data import DataBundle
from ..errors import ConfigError, SpecError
from ..models.inputs import check_data_fits
from ..train.embeddings import embedding_similarity
from ..train.engine import evaluate
from .common import build_model, model_from_weights_file


SPLITS = ("test", "val", "train", "all")


def scored_items(bundle: DataBundle, split: str) -> Dataset:
    """The items ``deepshrink eval`` scores: one split, or every item (``all``: a file held out in full).

    Example:
        >>> import deepshrink as ds
        >>> d = ds.data.load("synthetic:classification:100")
        >>> len(scored_items(d, "all")) == sum(d.sizes().values()), len(scored_items(d, "test")) == len(d.test)
        (True, True)
    """
    if split == "all":
        return ConcatDataset([bundle.train, bundle.val, bundle.test])
    return getattr(bundle, split)


def resolve_model(target: str, bundle: DataBundle | None, weights: str | None) -> tuple[nn.Module, int]:
    """A model from a spec or a file (.dsz, .safetensors), and its size in bytes.

    The size is the file's size on disk for a file, and fp32 dense bytes for a spec.
    """
    path = Path(target)
    if path.suffix in (".dsz", ".safetensors") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(2, "model file not found", str(path))
        if path.suffix == ".dsz":
            from ..codec import load as load_dsz

            model = load_dsz(path)
        elif path.suffix == ".safetensors":
            model = model_from_weights_file(path)
        else:
            raise SpecError(f"{path} is neither a .dsz nor a .safetensors file; give a model spec or one of those")
        return model, path.stat().st_size
    model = build_model(target, bundle, weights)
    return model, sum(p.numel() * 4 for p in model.parameters())


@app.command("eval")
@_handles_errors
def eval_command(
    target: str = typer.Argument(..., metavar="MODEL_SPEC_OR_FILE", help="A model spec, a .dsz or a .safetensors file."),
    data: str = typer.Option(..., "--data", help="Data spec; its test split is used unless --split says otherwise."),
    split: str = typer.Option("test", "--split", help="Which items to score: test, val, train, or all (every item of the data)."),
    weights: Optional[str] = typer.Option(None, "--weights", help="Weights for a model spec (.safetensors or .pt)."),
    reference: Optional[str] = typer.Option(None, "--reference", help="Reference embedding model (e.g. minilm) for text data."),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Evaluate a model on the test split.

    Example: deepshrink eval lenet5.dsz --data mnist5k --json

    Example: deepshrink eval F.dsz --data text:sentences.txt --reference minilm

    Example: deepshrink eval F.dsz --data text:other.txt --reference minilm --split all
    """
    if split not in SPLITS:
        raise ConfigError("--split", split, f"one of {', '.join(SPLITS)}")
    bundle = data_mod.load(data)
    items = scored_items(bundle, split)
    model, size = resolve_model(target, bundle, weights)  # a spec is built for the data and checked there
    model.eval()
    if Path(target).is_file():
        check_data_fits(model, bundle, "eval")
    if bundle.task == "text":
        if reference is None:
            raise SpecError("text data needs --reference MODEL (e.g. --reference minilm) to compare embeddings against")
        ref = models.create(reference)
        metrics = embedding_similarity(model, ref, items)
        result = {"cosine": metrics["cosine"], "cosine_min": metrics["cosine_min"], "size_bytes": size, "count": int(metrics["count"]),
                  "split": split}
        line = f"mean cosine similarity to {reference}: {metrics['cosine']:.4f} on {int(metrics['count'])} sentences ({split})"
    else:
        metrics = evaluate(model, items)
        result = {"accuracy": metrics["accuracy"], "loss": metrics["loss"], "size_bytes": size, "count": int(metrics["count"]),
                  "split": split}
        line = f"{split} accuracy: {metrics['accuracy']:.4f} on {int(metrics['count'])} samples; size {size:,} bytes"
    if json_out:
        print_json(result)
    else:
        typer.echo(line)
