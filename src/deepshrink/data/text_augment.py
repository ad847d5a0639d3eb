"""Word-replacement augmentation of sentences, for distilling embedding models on little text.

Recovering a compressed sentence encoder by matching its uncompressed teacher
needs inputs only, no labels, so any text can serve; but a few hundred
sentences of one domain (``text:pydoc`` is Python's documentation) teach the
student that domain only, and the fit does not carry over to other English. The
teacher answers for *any* input, so the cheapest way to widen the distribution
is to perturb the sentences we have (the idea of TinyBERT's data augmentation,
Jiao et al. 2020, without its masked-language-model proposals): in a share of
the sentences of each batch, a share of the words is replaced by words drawn
from the tokenizer's vocabulary. Sentences keep their length and much of their
syntax, while the student sees the whole vocabulary in context, including the
many words the training text never uses.

Example:
    >>> import torch
    >>> g = torch.Generator().manual_seed(0)
    >>> out = replace_words(["the cat sat on the mat"], ["dog", "tree"], rate=1.0, share=1.0, generator=g)
    >>> all(w in ("dog", "tree") for w in out[0].split())
    True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from ..errors import SpecError
from .bundle import DataBundle

# Word-piece continuations (BERT "##ing"), and the word-start markers of
# SentencePiece ("\u2581word") and byte-level BPE ("\u0120word").
_CONTINUATION = "##"
_WORD_START = ("\u2581", "\u0120")

# In a batch, this share of the sentences is augmented (the rest stay real, so the
# student keeps seeing natural text), and in those, this share of the words is replaced.
WORD_SHARE = 0.7
WORD_RATE = 0.4


def vocabulary_words(tokenizer: Any) -> list[str]:
    """Whole alphabetic words (2+ letters) of a Hugging Face tokenizer's vocabulary, in vocabulary order.

    Example:
        >>> class Tok:
        ...     def get_vocab(self): return {"[CLS]": 0, "the": 1, "##ing": 2, "\u2581cat": 3, "a": 4, "42": 5}
        >>> vocabulary_words(Tok())
        ['the', 'cat']
    """
    get_vocab = getattr(tokenizer, "get_vocab", None)
    vocab = get_vocab() if callable(get_vocab) else getattr(tokenizer, "vocab", None)
    if not isinstance(vocab, dict) or not vocab:
        raise SpecError(
            f"{type(tokenizer).__name__} has no vocabulary to draw words from; "
            "augment='words' needs a Hugging Face tokenizer (get_vocab()), or use augment='none'"
        )
    words: list[str] = []
    seen: set[str] = set()
    for token, _ in sorted(vocab.items(), key=lambda kv: kv[1]):
        if not isinstance(token, str) or token.startswith(_CONTINUATION):
            continue
        word = token[1:] if token.startswith(_WORD_START) else token
        if len(word) >= 2 and word.isascii() and word.isalpha() and word not in seen:
            seen.add(word)
            words.append(word)
    if not words:
        raise SpecError(f"the vocabulary of {type(tokenizer).__name__} holds no whole alphabetic words; use augment='none'")
    return words


def model_words(model: Any) -> list[str]:
    """:func:`vocabulary_words` of ``model.tokenizer`` (through a DDP wrapper); SpecError when the model has none.

    Example:
        >>> model_words(object())
        Traceback (most recent call last):
        ...
        deepshrink.errors.SpecError: object has no tokenizer to draw replacement words from; word augmentation needs a text model such as minilm (or use augment: none)
    """
    tokenizer = getattr(getattr(model, "module", model), "tokenizer", None)
    if tokenizer is None:
        raise SpecError(f"{type(model).__name__} has no tokenizer to draw replacement words from; "
                        "word augmentation needs a text model such as minilm (or use augment: none)")
    return vocabulary_words(tokenizer)


def replace_words(
    sentences: Sequence[str],
    words: Sequence[str],
    *,
    rate: float = WORD_RATE,
    share: float = WORD_SHARE,
    generator: torch.Generator,
) -> list[str]:
    """Replace a ``rate`` of the words in a ``share`` of ``sentences`` by words drawn uniformly from ``words``.

    Deterministic given the generator's state; sentences that are not chosen come back unchanged.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> replace_words(["keep me as I am"], ["x"], rate=0.5, share=0.0, generator=g)
        ['keep me as I am']
    """
    if not 0.0 <= rate <= 1.0 or not 0.0 <= share <= 1.0:
        raise ValueError(f"rate={rate!r} and share={share!r} must lie in [0, 1]")
    if not words:
        raise ValueError("words is empty: there is nothing to draw replacements from")
    out: list[str] = []
    for sentence in sentences:
        chosen = float(torch.rand((), generator=generator)) < share
        tokens = sentence.split()
        if not chosen or not tokens:
            out.append(sentence)
            continue
        hit = torch.rand(len(tokens), generator=generator) < rate
        picks = torch.randint(len(words), (len(tokens),), generator=generator)
        out.append(" ".join(words[int(p)] if h else t for t, h, p in zip(tokens, hit.tolist(), picks.tolist())))
    return out


def widen_text_data(data: DataBundle, words: Sequence[str], *, copies: int = 1, rate: float = WORD_RATE, seed: int = 0) -> DataBundle:
    """``data`` whose training split also holds ``copies`` word-replaced versions of every sentence.

    Each sentence is followed by its copies (so any prefix of the split, such as
    the first calibration batches, mixes real and replaced text); validation and
    test splits are unchanged. Only for text data.

    Example:
        >>> from deepshrink.data.text import SentenceDataset
        >>> d = DataBundle("t", SentenceDataset(["a b c d"]), SentenceDataset([]), SentenceDataset([]), (), None, task="text")
        >>> widen_text_data(d, ["x"], rate=1.0).train.sentences
        ['a b c d', 'x x x x']
    """
    from .text import SentenceDataset

    if data.task != "text":
        raise SpecError(f"{data.name} holds {data.task} data; word replacement widens text data only")
    if copies < 0:
        raise ValueError(f"copies={copies!r} must be >= 0")
    generator = torch.Generator().manual_seed(seed)
    widened: list[str] = []
    for i in range(len(data.train)):  # type: ignore[arg-type]
        sentence = data.train[i]
        widened.append(sentence)
        widened.extend(replace_words([sentence] * copies, words, rate=rate, share=1.0, generator=generator))
    meta = {**data.meta, "widened": {"copies": copies, "rate": rate, "seed": seed}}
    return DataBundle(data.name, SentenceDataset(widened), data.val, data.test, data.input_shape, data.num_classes, data.task, meta)


__all__ = ["WORD_RATE", "WORD_SHARE", "model_words", "replace_words", "vocabulary_words", "widen_text_data"]
