"""General English sentences, offline: ``text:wiki-markov``.

Matching a compressed sentence encoder to its original needs text but no
labels, and what the student learns holds on the kind of text it was matched
on. ``text:pydoc`` is Python's documentation only; a model fitted on it alone
loses most on everyday English. There is no general English corpus on a
machine without internet, but the ``essential-generators`` package (MIT) ships
a word-trigram model of a broad set of Wikipedia articles (history, science,
geography, art, law, sport: some 300,000 word pairs and what follows them).
Walking that chain gives locally fluent sentences over the vocabulary and
syntax of encyclopaedic English, as many as asked, deterministically from a
seed, with no text stored here.

The walk starts at a random word pair, follows the model's weighted
transitions, and is cut into sentences with the same rules as ``text:pydoc``
(5 to 60 words, mostly letters, a capital first and a full stop last); the
first and last piece of each walk are dropped (they start or end mid-sentence)
and every sentence is kept once. The trigram file (46 MB) is read with
:mod:`json`; while sampling it takes about 1.3 GB of memory and a few seconds,
freed when the sentences are returned.

Example:
    >>> s = wiki_markov_sentences(20, seed=1)  # doctest: +SKIP
    >>> len(s), len(set(s)), all(5 <= len(x.split()) <= 60 for x in s)  # doctest: +SKIP
    (20, 20, True)
"""

from __future__ import annotations

import importlib.resources
import json
import random
from typing import Any

from ..errors import SpecError
from .bundle import DataBundle

# Words per walk: long enough that most of a walk is whole sentences (only its two
# ends are dropped), short enough that one walk does not dwell on one article.
WALK_WORDS = 300
# A walk that finds nothing new this many times in a row has exhausted the chain
# (only possible when far more sentences are asked than the model can give).
MAX_FRUITLESS_WALKS = 200
DEFAULT_SENTENCES = 5000
MAX_SENTENCES = 200_000
_PACKAGE = "essential_generators"
_MODEL_FILE = "markov_textgen.json"


def _load_chain() -> dict[str, Any]:
    """The trigram chain of essential-generators: "w1 w2" -> {"transitions": [...], "weights": [...]}."""
    try:
        path = importlib.resources.files(_PACKAGE) / _MODEL_FILE
        text = path.read_text(encoding="utf-8")
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise SpecError(
            "text:wiki-markov needs the essential-generators package (its Wikipedia trigram model); "
            "install it with: pip install 'deepshrink[transformers]' (or pip install essential-generators)"
        ) from exc
    chain = json.loads(text)
    if not isinstance(chain, dict) or not chain:
        raise SpecError(f"{_PACKAGE}/{_MODEL_FILE} holds no trigram model; reinstall essential-generators")
    return chain


def _walk(chain: dict[str, Any], keys: list[str], rng: random.Random) -> str:
    """One walk of up to WALK_WORDS words from a random word pair."""
    words = keys[rng.randrange(len(keys))].split()
    while len(words) < WALK_WORDS:
        entry = chain.get(" ".join(words[-2:]))
        transitions = entry.get("transitions") if isinstance(entry, dict) else None
        weights = entry.get("weights") if isinstance(entry, dict) else None
        if not transitions or not weights or len(transitions) != len(weights):
            break
        words.append(str(rng.choices(transitions, weights=weights)[0]))
    # The model marks paragraph breaks as <br/>; they are plain spaces here.
    return " ".join(" ".join(words).replace("<br/>", " ").split())


def wiki_markov_sentences(count: int = DEFAULT_SENTENCES, *, seed: int = 0) -> list[str]:
    """``count`` distinct English sentences sampled from essential-generators' Wikipedia trigram model.

    Deterministic for a given ``seed`` (and version of the model file).

    Example:
        >>> s = wiki_markov_sentences(10, seed=0)  # doctest: +SKIP
        >>> len(s) == len(set(s)) == 10  # doctest: +SKIP
        True
    """
    from .text import _is_prose, _split_sentences

    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_SENTENCES:
        raise SpecError(f"wiki-markov sentence count {count!r} must be an integer from 1 to {MAX_SENTENCES:,}")
    chain = _load_chain()
    keys = sorted(chain)  # sorted: the draws do not depend on the file's key order
    rng = random.Random(seed)
    out: list[str] = []
    seen: set[str] = set()
    fruitless = 0
    while len(out) < count:
        pieces = _split_sentences(_walk(chain, keys, rng))[1:-1]
        fresh = [p for p in pieces if _is_prose(p) and p not in seen]
        fruitless = 0 if fresh else fruitless + 1
        if fruitless >= MAX_FRUITLESS_WALKS:
            raise SpecError(f"the wiki-markov model gave only {len(out):,} distinct sentences; ask for fewer than {count:,}")
        for sentence in fresh:
            if len(out) < count:
                seen.add(sentence)
                out.append(sentence)
    return out


def load_wiki_markov(count: int = DEFAULT_SENTENCES) -> DataBundle:
    """``text:wiki-markov[:N]``: N sampled sentences (seed 0), split 70/10/20 with seed 0 like every text set.

    Example:
        >>> load_wiki_markov(100).sizes()  # doctest: +SKIP
        {'train': 70, 'val': 10, 'test': 20}
    """
    from .text import MIN_SENTENCES, sentence_bundle

    if isinstance(count, bool) or not isinstance(count, int) or not MIN_SENTENCES <= count <= MAX_SENTENCES:
        raise SpecError(f"text:wiki-markov:{count} is invalid: the size must be an integer from {MIN_SENTENCES} to {MAX_SENTENCES:,}")
    return sentence_bundle("text:wiki-markov", wiki_markov_sentences(count, seed=0),
                           {"source": f"{_PACKAGE} {_MODEL_FILE}", "sentences": count})


__all__ = ["DEFAULT_SENTENCES", "MAX_SENTENCES", "load_wiki_markov", "wiki_markov_sentences"]
