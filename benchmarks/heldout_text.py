"""Held-out English text for embedding benchmarks: prose that is not Python's documentation.

Writes ``benchmarks/results/heldout_sentences.txt`` (one sentence a line), from
text that ships with this machine: the licence texts under
/usr/share/common-licenses (GPL, Apache, MPL, GFDL, ...) and the data-set
descriptions that scikit-learn ships. Sentences are cut with the same rules as
``text:pydoc`` (5 to 60 words, prose only). Used as ``--data text:FILE`` to check
that a model fitted on ``text:pydoc`` holds on other English text.

Run: .venv/bin/python benchmarks/heldout_text.py
"""

from __future__ import annotations

from pathlib import Path

import sklearn

from deepshrink.data.text import _is_prose, _paragraphs, _split_sentences

from _report import ROOT

OUT = ROOT / "benchmarks" / "results" / "heldout_sentences.txt"
SOURCES = sorted(Path("/usr/share/common-licenses").glob("*")) + sorted((Path(sklearn.__file__).parent / "datasets" / "descr").glob("*.rst"))


def heldout_sentences(limit: int = 600) -> list[str]:
    seen: set[str] = set()
    out: list[str] = []
    for path in SOURCES:
        if not path.is_file():
            continue
        text = path.read_text(encoding="utf-8", errors="ignore")
        for para in _paragraphs(text):
            for sentence in _split_sentences(para):
                if _is_prose(sentence) and sentence not in seen:
                    seen.add(sentence)
                    out.append(sentence)
    # Spread the sample over all sources: every k-th sentence.
    step = max(1, len(out) // limit)
    return out[::step][:limit]


if __name__ == "__main__":
    sentences = heldout_sentences()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(sentences) + "\n")
    print(f"{len(sentences)} sentences -> {OUT}")
