"""Text data for sentence-embedding models: ``text:pydoc`` and ``text:FILE``."""

from __future__ import annotations

from torch.utils.data import Dataset


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
