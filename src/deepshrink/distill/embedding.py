"""Distillation for sentence-embedding models: the student matches its teacher's embeddings.

Used to recover a compressed embedding model (pruned, factorized, quantized
all-MiniLM-L6-v2) on unlabelled sentences: the teacher is the model as it was
before compression. Two signals, both per sentence:

- ``1 - cos(student embedding, teacher embedding)``: what the user measures;
- the relative squared error of the encoder's token states (every real token,
  not only the pooled vector): many more targets per sentence, which is what
  lets a few hundred sentences recover a model without over-fitting them.

Example:
    >>> import torch
    >>> from torch import nn
    >>> class Toy(nn.Module):  # any module mapping a list of sentences to embeddings
    ...     def __init__(self): super().__init__(); self.w = nn.Linear(3, 4)
    ...     def tokenize(self, s): return {"input_ids": torch.ones(len(s), 3), "attention_mask": torch.ones(len(s), 3)}
    ...     def forward(self, input_ids, attention_mask=None): return self.w(input_ids)
    >>> teacher = Toy()
    >>> objective = embedding_objective(teacher)
    >>> float(objective(teacher, ["a", "b"], None).abs().max()) < 1e-6
    True
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SpecError
from ..train.callbacks import TrainState


def _unwrap(model: nn.Module) -> nn.Module:
    # DDP wraps the model: tokenizer and submodules live on .module, the forward goes through the wrapper.
    return getattr(model, "module", model)


def _tokenize(model: nn.Module, sentences: Any) -> dict[str, Tensor]:
    tokenize = getattr(_unwrap(model), "tokenize", None)
    if not callable(tokenize):
        raise SpecError(
            f"{type(_unwrap(model)).__name__} has no tokenize(sentences) method: text data need an embedding model such as minilm"
        )
    if isinstance(sentences, str):
        sentences = [sentences]
    return tokenize(list(sentences))


class _TokenStates:
    """Captures the token states of ``model.encoder`` (if it has one) during a forward pass."""

    def __init__(self, model: nn.Module) -> None:
        self.value: Tensor | None = None
        encoder = getattr(_unwrap(model), "encoder", None)
        self._handle = encoder.register_forward_hook(self._hook) if isinstance(encoder, nn.Module) else None

    def _hook(self, module: nn.Module, args: Any, output: Any) -> None:
        hidden = getattr(output, "last_hidden_state", None)
        if hidden is None and isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
            hidden = output[0]
        if isinstance(hidden, Tensor):
            self.value = hidden

    def __enter__(self) -> _TokenStates:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._handle is not None:
            self._handle.remove()


def embedding_objective(teacher: nn.Module, hidden_weight: float = 1.0) -> Any:
    """An engine objective on text batches: per-sentence embedding and token-state matching to ``teacher``.

    The loss of one sentence is ``1 - cos(e_s, e_t) + hidden_weight * ||h_s - h_t||^2 / ||h_t||^2``,
    with ``h`` the encoder's states of the sentence's real tokens (left out when
    the model has no ``encoder`` submodule or the widths differ). The teacher is
    frozen and put in eval mode.

    Example:
        >>> import deepshrink as ds  # doctest: +SKIP
        >>> teacher = ds.models.create("minilm")  # doctest: +SKIP
        >>> student = copy.deepcopy(teacher)  # doctest: +SKIP
        >>> ds.finetune(student, ds.data.load("text:pydoc"), ds.TrainConfig(epochs=1),  # doctest: +SKIP
        ...             objective=embedding_objective(teacher))
    """
    if hidden_weight < 0:
        raise ValueError(f"hidden_weight={hidden_weight!r} must be >= 0")
    teacher.eval()
    for p in teacher.parameters():
        p.requires_grad_(False)

    def objective(model: nn.Module, batch: Any, state: TrainState | None) -> Tensor:
        tokens = _tokenize(teacher, batch)
        device = next(_unwrap(model).parameters()).device
        ids, mask = tokens["input_ids"].to(device), tokens["attention_mask"].to(device)
        with torch.no_grad(), _TokenStates(teacher) as t_states:
            target = teacher(ids, mask).float()
        with _TokenStates(model) as s_states:
            out = model(ids, mask).float()
        loss = 1.0 - F.cosine_similarity(out, target, dim=-1)
        hs, ht = s_states.value, t_states.value
        if hidden_weight > 0 and hs is not None and ht is not None and hs.shape == ht.shape:
            m = mask.to(hs.dtype).unsqueeze(-1)
            err = ((hs.float() - ht.float()) ** 2 * m).sum(dim=(1, 2))
            ref = (ht.float() ** 2 * m).sum(dim=(1, 2)).clamp(min=1e-12)
            loss = loss + hidden_weight * err / ref
        return loss

    return objective


__all__ = ["embedding_objective"]
