"""text:wiki-markov (general English sampled from essential-generators' trigram model) and recipes' extra_text."""

from __future__ import annotations

import importlib.resources

import pytest

import deepshrink as ds
from deepshrink.data.bundle import DataBundle
from deepshrink.data.text import SentenceDataset
from deepshrink.data.text_augment import interleave_sentences
from deepshrink.data.wiki_markov import wiki_markov_sentences
from deepshrink.errors import ConfigError, SpecError
from deepshrink.recipe import ExtraText, _with_extra_text, recipe_from_dict

pytest.importorskip("essential_generators")


@pytest.fixture(scope="module")
def sample() -> list[str]:
    return wiki_markov_sentences(300, seed=3)


def test_sentences_are_distinct_prose_of_the_asked_count(sample: list[str]) -> None:
    assert len(sample) == 300 and len(set(sample)) == 300
    for s in sample:
        words = s.split()
        assert 5 <= len(words) <= 60
        assert s[0].isupper() or s[0] == '"'
        assert s.rstrip("\"')")[-1] in ".!?"
        assert "<br/>" not in s and "  " not in s


def test_sentences_are_deterministic_per_seed(sample: list[str]) -> None:
    assert wiki_markov_sentences(300, seed=3) == sample
    other = wiki_markov_sentences(300, seed=4)
    assert len(set(other) & set(sample)) < 30  # another seed walks elsewhere
    # A shorter request is a prefix of a longer one with the same seed.
    assert wiki_markov_sentences(50, seed=3) == sample[:50]


def test_sentences_are_general_english(sample: list[str]) -> None:
    # The most common English function words make up a good share of the words, as in any English prose.
    words = [w.lower().strip(".,;:\"'()") for s in sample for w in s.split()]
    common = {"the", "of", "and", "in", "to", "a", "is", "was", "as", "for", "by", "with", "that", "on"}
    assert sum(w in common for w in words) / len(words) > 0.2


def test_load_spec_splits_70_10_20() -> None:
    d = ds.data.load("text:wiki-markov:100")
    assert d.task == "text" and d.sizes() == {"train": 70, "val": 10, "test": 20}
    assert d.name == "text:wiki-markov"
    all_sentences = d.train.sentences + d.val.sentences + d.test.sentences
    assert sorted(all_sentences) == sorted(wiki_markov_sentences(100, seed=0))


@pytest.mark.parametrize("spec, match", [("text:wiki-markov:abc", "must be an integer"), ("text:wiki-markov:5", "from 10 to")])
def test_bad_sizes_are_refused(spec: str, match: str) -> None:
    with pytest.raises(SpecError, match=match):
        ds.data.load(spec)


@pytest.mark.parametrize("count", [0, -1, 10**9, 2.5, True])
def test_bad_counts_are_refused(count: object) -> None:
    with pytest.raises(SpecError, match="must be an integer"):
        wiki_markov_sentences(count)  # type: ignore[arg-type]


def test_missing_package_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(name: str) -> object:
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(importlib.resources, "files", missing)
    with pytest.raises(SpecError, match=r"pip install 'deepshrink\[transformers\]'"):
        wiki_markov_sentences(5)


def _text_bundle(sentences: list[str]) -> DataBundle:
    return DataBundle("t", SentenceDataset(sentences), SentenceDataset(["v"]), SentenceDataset(["t"]), (), None, task="text")


@pytest.mark.parametrize("own, extra", [(2, 4), (3, 7), (5, 2), (4, 0), (1, 5)])
def test_interleave_keeps_every_sentence_spread_evenly(own: int, extra: int) -> None:
    own_s = [f"own{i}" for i in range(own)]
    extra_s = [f"x{i}" for i in range(extra)]
    d = interleave_sentences(_text_bundle(own_s), extra_s, source="demo")
    mixed = d.train.sentences
    assert sorted(mixed) == sorted(own_s + extra_s)
    # Each kind keeps its order, and every prefix holds both kinds in proportion (within one sentence).
    assert [s for s in mixed if s.startswith("own")] == own_s and [s for s in mixed if s.startswith("x")] == extra_s
    for cut in range(1, len(mixed) + 1):
        head = mixed[:cut]
        n_own = sum(s.startswith("own") for s in head)
        assert abs(n_own * extra / own - (cut - n_own)) <= extra / own + 1
    assert d.val.sentences == ["v"] and d.test.sentences == ["t"]
    assert d.meta["extra_text"] == {"source": "demo", "sentences": extra}


def test_interleave_refuses_image_data() -> None:
    with pytest.raises(SpecError, match="text data only"):
        interleave_sentences(ds.data.load("synthetic:classification:50"), ["a"], source="demo")


def test_recipe_extra_text_round_trips_and_validates() -> None:
    r = recipe_from_dict({"name": "r", "extra_text": {"sentences": 40}, "stages": [{"finetune": {"epochs": 1}}]})
    assert r.extra_text == ExtraText(source="wiki-markov", sentences=40, seed=0)
    assert recipe_from_dict(r.to_dict()) == r
    with pytest.raises(ConfigError, match="extra_text.source='wikipedia' is invalid"):
        recipe_from_dict({"name": "r", "extra_text": {"source": "wikipedia"}, "stages": [{"finetune": {"epochs": 1}}]})
    with pytest.raises(ConfigError, match="extra_text.count"):
        recipe_from_dict({"name": "r", "extra_text": {"count": 4}, "stages": [{"finetune": {"epochs": 1}}]})
    with pytest.raises(ConfigError, match="extra_text.sentences=1.5"):
        ExtraText(sentences=1.5)  # type: ignore[arg-type]


def test_recipe_extra_text_widens_text_training_split_only() -> None:
    data = ds.data.load("synthetic:text:50")
    widened = _with_extra_text(data, ExtraText(sentences=20, seed=1))
    assert len(widened.train) == len(data.train) + 20
    assert set(wiki_markov_sentences(20, seed=1)) <= set(widened.train.sentences)
    assert widened.val is data.val and widened.test is data.test
    assert _with_extra_text(data, None) is data
    with pytest.raises(ConfigError, match="adds sentences to text data only"):
        _with_extra_text(ds.data.load("synthetic:classification:50"), ExtraText(sentences=5))


def test_run_recipe_reports_the_extra_text() -> None:
    import torch

    torch.manual_seed(0)
    data = ds.data.load("synthetic:text:40")
    model = ds.models.create("minilm")  # the text model the recipes are for (offline)
    recipe = recipe_from_dict({"name": "r", "extra_text": {"sentences": 12, "seed": 2},
                               "stages": [{"finetune": {"epochs": 1, "batch_size": 16, "progress": False, "max_steps": 1}}]})
    report = ds.run_recipe(model, data, recipe)
    assert report.data == {"name": data.name, "train": len(data.train) + 12, "extra_text": {"source": "wiki-markov", "sentences": 12}}
    assert report.to_dict()["data"] == report.data
