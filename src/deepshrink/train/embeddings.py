"""Evaluation of sentence-embedding models against a reference model."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from ..errors import SpecError


def _encode(model: nn.Module, sentences: list[str], batch_size: int) -> torch.Tensor:
    encode = getattr(model, "encode", None)
    if not callable(encode):
        raise SpecError(f"{type(model).__name__} has no encode(sentences) method; an embedding model such as minilm is needed")
    return encode(sentences, batch_size=batch_size)


@torch.inference_mode()
def embedding_similarity(model: nn.Module, reference: nn.Module, dataset: Dataset, batch_size: int = 64) -> dict[str, float]:
    """Mean (and worst) cosine similarity of ``model``'s sentence embeddings to ``reference``'s.

    Example:
        >>> import deepshrink as ds  # doctest: +SKIP
        >>> m = ds.models.create("minilm")  # doctest: +SKIP
        >>> embedding_similarity(m, m, ds.data.load("text:pydoc").test)["cosine"]  # doctest: +SKIP
        1.0
    """
    sentences = [dataset[i] for i in range(len(dataset))]  # type: ignore[arg-type]
    if not sentences:
        raise SpecError("the data set has no sentences to compare embeddings on")
    a = _encode(model, sentences, batch_size).float()
    b = _encode(reference, sentences, batch_size).float()
    cos = F.cosine_similarity(a, b, dim=-1)
    return {"cosine": float(cos.mean()), "cosine_min": float(cos.min()), "count": float(len(sentences))}
