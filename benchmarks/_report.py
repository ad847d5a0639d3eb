"""Shared helper of the benchmark scripts: replace one section of BENCHMARKS.md."""

from __future__ import annotations

import platform
from datetime import date
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def machine() -> str:
    """One line naming the machine and software the figures came from."""
    return (f"{date.today().isoformat()}, {torch.get_num_threads()} CPU threads ({platform.machine()}), no GPU used, "
            f"torch {torch.__version__.split('+')[0]}, Python {platform.python_version()}")


def write_section(key: str, markdown: str) -> None:
    """Put ``markdown`` between the markers of section ``key`` in BENCHMARKS.md (appended if new)."""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n\nEvery figure here comes from a script in `benchmarks/` that anyone can rerun.\n"
    begin, end = f"<!-- begin:{key} -->", f"<!-- end:{key} -->"
    block = f"{begin}\n{markdown.strip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.write_text(text)
