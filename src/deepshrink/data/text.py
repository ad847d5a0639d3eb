"""Text data for sentence-embedding models: ``text:pydoc`` and ``text:FILE``.

``text:pydoc`` is the English prose of Python's own reference documentation
(``pydoc_data.topics``, which every CPython ships): code blocks, grammar rules,
headings and tables are dropped, wrapped lines are joined, paragraphs are split
into sentences, and sentences of 5 to 60 words are kept once each, in a fixed
order. ``text:FILE`` reads one sentence a line. Both split 70/10/20 with seed 0.

Example:
    >>> d = load_text("pydoc")
    >>> d.task, d.num_classes, len(d.train) > 500
    ('text', None, True)
"""

from __future__ import annotations

import re
from pathlib import Path

from torch.utils.data import Dataset

from ..errors import SpecError
from .bundle import DataBundle, stratified_split

MIN_WORDS = 5
MAX_WORDS = 60
MIN_SENTENCES = 10

# A sentence ends at . ! or ? (optionally closed by a quote or bracket) followed by
# whitespace and a capital letter or an opening quote (pydoc quotes code names, as in
# '"break" cannot appear ...'): "e.g. foo" and "3.14" do not split.
_SENTENCE_END = re.compile(r"(?<=[.!?])([\"')\]]?)\s+(?=[A-Z\"'(])")
_HEADING_RULE = re.compile(r"^\s*([*=\-~^+])\1{2,}\s*$")
_ABBREVIATIONS = ("e.g.", "i.e.", "etc.", "vs.", "cf.", "Mr.", "Dr.", "No.")


class SentenceDataset(Dataset):
    """A list of sentences as a torch Dataset (items are str).

    Example:
        >>> SentenceDataset(["a b", "c"])[1]
        'c'
    """

    def __init__(self, sentences: list[str]) -> None:
        self.sentences = list(sentences)

    def __len__(self) -> int:
        return len(self.sentences)

    def __getitem__(self, i: int) -> str:
        return self.sentences[i]


def _paragraphs(doc: str) -> list[str]:
    """Prose paragraphs of one pydoc topic: unindented blocks that are not headings or rules."""
    out: list[str] = []
    block: list[str] = []
    lines = doc.splitlines() + [""]
    for i, line in enumerate(lines):
        nxt = lines[i + 1] if i + 1 < len(lines) else ""
        if not line.strip():
            if block:
                out.append(" ".join(block))
            block = []
            continue
        # Indented lines are code, grammar productions, tables or nested lists; a line
        # underlined by ***, ===, --- is a heading; neither is prose.
        if line.startswith((" ", "\t")) or _HEADING_RULE.match(line) or _HEADING_RULE.match(nxt):
            if block:
                out.append(" ".join(block))
            block = []
            continue
        text = line.strip()
        if block and re.search(r"[A-Za-z]-$", block[-1]):
            # A word hyphenated across a line break ("zero-" / "argument") joins without a space.
            block[-1] += text
        else:
            block.append(text)
    return out


def _split_sentences(paragraph: str) -> list[str]:
    """Split at sentence ends, then re-join pieces that only ended at an abbreviation."""
    pieces: list[str] = []
    parts = _SENTENCE_END.split(paragraph)
    # re.split with one group yields text, closer, text, closer, ...; keep the closer with its text.
    for i in range(0, len(parts), 2):
        piece = parts[i] + (parts[i + 1] if i + 1 < len(parts) else "")
        if pieces and pieces[-1].endswith(_ABBREVIATIONS):
            pieces[-1] = f"{pieces[-1]} {piece}"
        else:
            pieces.append(piece)
    return pieces


def _is_prose(sentence: str) -> bool:
    words = sentence.split()
    if not MIN_WORDS <= len(words) <= MAX_WORDS:
        return False
    if not (sentence[0].isupper() or sentence[0] == '"') or sentence.rstrip('"\')')[-1:] not in (".", "!", "?"):
        return False
    if "::=" in sentence or sentence.endswith((":", "::")) or any(sentence.endswith(a) for a in _ABBREVIATIONS):
        return False
    letters = sum(c.isalpha() or c.isspace() for c in sentence)
    # Mostly letters: drops lines of symbols, numbers and code fragments.
    return letters >= 0.85 * len(sentence)


def pydoc_sentences() -> list[str]:
    """The deduplicated English sentences of ``pydoc_data.topics``, in a fixed order.

    Example:
        >>> s = pydoc_sentences()
        >>> len(s) == len(set(s)) and all(5 <= len(x.split()) <= 60 for x in s)
        True
    """
    from pydoc_data.topics import topics

    seen: set[str] = set()
    out: list[str] = []
    for key in sorted(topics):
        for para in _paragraphs(topics[key]):
            for raw in _split_sentences(para):
                sentence = " ".join(raw.split())
                if sentence and _is_prose(sentence) and sentence not in seen:
                    seen.add(sentence)
                    out.append(sentence)
    return out


def file_sentences(path: str | Path) -> list[str]:
    """Non-empty lines of a UTF-8 text file, whitespace-normalised, in file order.

    Example:
        >>> file_sentences("/no/such/file.txt")
        Traceback (most recent call last):
        ...
        deepshrink.errors.SpecError: text file '/no/such/file.txt' does not exist; ...
    """
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"text file {str(p)!r} does not exist; use text:pydoc or text:PATH to a file with one sentence a line")
    try:
        text = p.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"text file {str(p)!r} is not UTF-8 text: {exc}") from None
    return [" ".join(line.split()) for line in text.splitlines() if line.strip()]


def load_text(arg: str) -> DataBundle:
    """``pydoc`` or a path to a file with one sentence a line, split 70/10/20 with seed 0.

    Example:
        >>> d = load_text("pydoc")
        >>> set(d.train.sentences).isdisjoint(d.test.sentences)
        True
    """
    if arg == "pydoc":
        sentences, name, source = pydoc_sentences(), "text:pydoc", "pydoc_data.topics"
    else:
        sentences, name, source = file_sentences(arg), f"text:{arg}", str(arg)
    if len(sentences) < MIN_SENTENCES:
        raise SpecError(f"{name} has {len(sentences)} sentences; a text data set needs at least {MIN_SENTENCES}")
    return sentence_bundle(name, sentences, {"source": source})


def sentence_bundle(name: str, sentences: list[str], meta: dict[str, object]) -> DataBundle:
    """A text DataBundle of ``sentences`` split 70/10/20 with seed 0, as every built-in text set is.

    Example:
        >>> sentence_bundle("demo", [f"s{i}" for i in range(10)], {}).sizes()
        {'train': 7, 'val': 1, 'test': 2}
    """
    tr, va, te = stratified_split(None, len(sentences))
    parts = [SentenceDataset([sentences[i] for i in idx]) for idx in (tr, va, te)]
    return DataBundle(name, *parts, input_shape=(), num_classes=None, task="text", meta=meta)
