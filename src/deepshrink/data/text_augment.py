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

Replacement words are not drawn uniformly: a uniform draw over some 20,000
vocabulary words almost always gives a rare one (the median everyday English
word is among a vocabulary's first 200), so the student would learn rare words
in Python's syntax and little of the common ones that other text is made of.
Tokenizer vocabularies list frequent words first (WordPiece and SentencePiece
vocabularies by frequency or score, byte-level BPE by merge order), so
:func:`word_weights` mixes a Zipf law over vocabulary rank with a uniform
share that keeps every word in reach.

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
# Chosen with minilm-svd (calibrated on pydoc plus two rank-weighted copies), 4 epochs of fine-tuning,
# scored on the training and validation splits of two held-out English texts (never their test
# splits): uniform words at 0.4 / 0.7 gave licences 0.858, everyday 0.843, pydoc validation 0.930;
# rank-weighted words at 0.6 / 0.9 gave 0.859 / 0.854 / 0.917 (more of other English, less of pydoc);
# at 0.8 / 1.0 licence text fell (0.848 over all its sentences; pydoc 0.893).
WORD_SHARE = 0.9
WORD_RATE = 0.6
# word_weights: this share of the draws is uniform over the vocabulary, the rest follow
# 1 / (rank + RANK_OFFSET); the offset keeps "the", "of", "and" from taking most draws.
UNIFORM_SHARE = 0.5
RANK_OFFSET = 50.0


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


def word_weights(count: int, *, uniform: float = UNIFORM_SHARE, offset: float = RANK_OFFSET) -> torch.Tensor:
    """Draw probabilities for ``count`` words in vocabulary (frequency) order: Zipf over rank mixed with uniform.

    ``uniform`` of the mass is spread evenly, the rest is proportional to ``1 / (rank + offset)``.

    Example:
        >>> w = word_weights(1000)
        >>> round(float(w.sum()), 6), bool(w[0] > w[10] > w[999] > 0)
        (1.0, True)
    """
    if count < 1:
        raise ValueError(f"count={count!r} must be >= 1")
    if not 0.0 <= uniform <= 1.0 or offset <= 0:
        raise ValueError(f"uniform={uniform!r} must lie in [0, 1] and offset={offset!r} must be > 0")
    zipf = 1.0 / (torch.arange(count, dtype=torch.float64) + offset)
    return (1.0 - uniform) * zipf / zipf.sum() + uniform / count


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


def model_word_draws(model: Any) -> tuple[list[str], torch.Tensor]:
    """The words augmentation draws for ``model`` and their :func:`word_weights`: what the engine and recipes use.

    Example:
        >>> model_word_draws(object())
        Traceback (most recent call last):
        ...
        deepshrink.errors.SpecError: object has no tokenizer to draw replacement words from; word augmentation needs a text model such as minilm (or use augment: none)
    """
    words = model_words(model)
    return words, word_weights(len(words))


def replace_words(
    sentences: Sequence[str],
    words: Sequence[str],
    *,
    rate: float = WORD_RATE,
    share: float = WORD_SHARE,
    generator: torch.Generator,
    weights: torch.Tensor | None = None,
) -> list[str]:
    """Replace a ``rate`` of the words in a ``share`` of ``sentences`` by words drawn from ``words``.

    Draws follow ``weights`` (one probability per word, e.g. :func:`word_weights`), or are
    uniform when it is None. Deterministic given the generator's state; sentences that are
    not chosen come back unchanged.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> replace_words(["keep me as I am"], ["x"], rate=0.5, share=0.0, generator=g)
        ['keep me as I am']
    """
    if not 0.0 <= rate <= 1.0 or not 0.0 <= share <= 1.0:
        raise ValueError(f"rate={rate!r} and share={share!r} must lie in [0, 1]")
    if not words:
        raise ValueError("words is empty: there is nothing to draw replacements from")
    if weights is not None and (weights.dim() != 1 or len(weights) != len(words) or bool((weights < 0).any()) or float(weights.sum()) <= 0):
        raise ValueError(f"weights must be {len(words)} non-negative numbers, one per word, not all zero")
    out: list[str] = []
    for sentence in sentences:
        chosen = float(torch.rand((), generator=generator)) < share
        tokens = sentence.split()
        if not chosen or not tokens:
            out.append(sentence)
            continue
        hit = torch.rand(len(tokens), generator=generator) < rate
        if weights is None:
            picks = torch.randint(len(words), (len(tokens),), generator=generator)
        else:
            picks = torch.multinomial(weights, len(tokens), replacement=True, generator=generator)
        out.append(" ".join(words[int(p)] if h else t for t, h, p in zip(tokens, hit.tolist(), picks.tolist())))
    return out


def widen_text_data(
    data: DataBundle,
    words: Sequence[str],
    *,
    copies: int = 1,
    rate: float = WORD_RATE,
    seed: int = 0,
    weights: torch.Tensor | None = None,
) -> DataBundle:
    """``data`` whose training split also holds ``copies`` word-replaced versions of every sentence.

    Replacement words follow ``weights`` as in :func:`replace_words`.

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
        widened.extend(replace_words([sentence] * copies, words, rate=rate, share=1.0, generator=generator, weights=weights))
    meta = {**data.meta, "widened": {"copies": copies, "rate": rate, "seed": seed, "draws": "uniform" if weights is None else "weighted"}}
    return DataBundle(data.name, SentenceDataset(widened), data.val, data.test, data.input_shape, data.num_classes, data.task, meta)


def interleave_sentences(data: DataBundle, extra: Sequence[str], *, source: str) -> DataBundle:
    """``data`` whose training split also holds ``extra``, spread evenly between its own sentences.

    Interleaved rather than appended, so that any prefix of the split (the first
    calibration batches of a stage) holds both kinds of text in proportion.
    Validation and test splits are unchanged. Only for text data.

    Example:
        >>> from deepshrink.data.text import SentenceDataset
        >>> d = DataBundle("t", SentenceDataset(["a", "b"]), SentenceDataset([]), SentenceDataset([]), (), None, task="text")
        >>> interleave_sentences(d, ["x", "y", "z", "w"], source="demo").train.sentences
        ['a', 'x', 'y', 'b', 'z', 'w']
    """
    from .text import SentenceDataset

    if data.task != "text":
        raise SpecError(f"{data.name} holds {data.task} data; extra sentences widen text data only")
    own = [data.train[i] for i in range(len(data.train))]  # type: ignore[arg-type]
    mixed: list[str] = []
    taken = 0
    for i, sentence in enumerate(own):
        mixed.append(sentence)
        # After own sentence i, the extra sentences up to the (i+1)/n share of them.
        upto = (i + 1) * len(extra) // len(own)
        mixed.extend(extra[taken:upto])
        taken = upto
    mixed.extend(extra[taken:])
    meta = {**data.meta, "extra_text": {"source": source, "sentences": len(extra)}}
    return DataBundle(data.name, SentenceDataset(mixed), data.val, data.test, data.input_shape, data.num_classes, data.task, meta)


__all__ = ["RANK_OFFSET", "UNIFORM_SHARE", "WORD_RATE", "WORD_SHARE", "interleave_sentences", "model_word_draws", "model_words", "replace_words", "vocabulary_words",
           "widen_text_data", "word_weights"]
