"""Word-replacement augmentation of text batches (TrainConfig(augment="words"))."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import deepshrink as ds
from deepshrink.data.text_augment import WORD_SHARE, replace_words, vocabulary_words, widen_text_data, word_weights

SENTENCES = ["The quick brown fox jumps over the lazy dog near the river bank today.",
             "Every function returns a value, even when that value is None."]


def test_vocabulary_words_are_whole_alphabetic_words() -> None:
    words = vocabulary_words(ds.models.create("minilm").tokenizer)
    assert len(words) > 10_000
    assert "the" in words and "river" in words
    assert all(w.isalpha() and w.isascii() and len(w) >= 2 and not w.startswith("#") for w in words)
    assert len(set(words)) == len(words)


def test_vocabulary_words_refuses_a_tokenizer_without_vocabulary() -> None:
    with pytest.raises(ds.SpecError, match="augment='none'"):
        vocabulary_words(object())


def test_replace_words_keeps_length_and_replaces_at_the_rate() -> None:
    words = [f"w{i}x" for i in range(50)]
    sentences = [" ".join(f"s{j}" for j in range(40))] * 50
    out = replace_words(sentences, words, rate=0.25, share=1.0, generator=torch.Generator().manual_seed(1))
    replaced = sum(t.startswith("w") for s in out for t in s.split())
    assert all(len(s.split()) == 40 for s in out)
    assert abs(replaced / (50 * 40) - 0.25) < 0.03
    # rate 0 and share 0 change nothing; the same seed gives the same batch.
    g = torch.Generator().manual_seed(1)
    assert replace_words(SENTENCES, words, rate=0.0, share=1.0, generator=g) == SENTENCES
    assert replace_words(SENTENCES, words, rate=1.0, share=0.0, generator=g) == SENTENCES
    a = replace_words(SENTENCES, words, rate=0.5, share=1.0, generator=torch.Generator().manual_seed(3))
    b = replace_words(SENTENCES, words, rate=0.5, share=1.0, generator=torch.Generator().manual_seed(3))
    assert a == b and a != SENTENCES


def test_replace_words_follows_the_weights() -> None:
    words = [f"w{i}x" for i in range(100)]
    sentences = [" ".join(f"s{j}" for j in range(50))] * 40
    g = torch.Generator().manual_seed(0)
    only_one = torch.zeros(100)
    only_one[7] = 1.0
    out = replace_words(sentences, words, rate=1.0, share=1.0, generator=g, weights=only_one)
    assert {t for s in out for t in s.split()} == {"w7x"}
    # Zipf over rank: the first words of the vocabulary are drawn more often than the last, as the weights say.
    weights = word_weights(100)
    out = replace_words(sentences * 5, words, rate=1.0, share=1.0, generator=g, weights=weights)
    counts = torch.zeros(100, dtype=torch.float64)
    for s in out:
        for t in s.split():
            counts[int(t[1:-1])] += 1
    share = counts / counts.sum()
    assert abs(float(share[:10].sum() - weights[:10].sum())) < 0.02 and abs(float(share[-10:].sum() - weights[-10:].sum())) < 0.02
    assert float(share[:10].sum()) > 1.5 * float(share[-10:].sum())
    with pytest.raises(ValueError, match="weights"):
        replace_words(SENTENCES, words, generator=g, weights=torch.ones(3))


def test_word_weights_mix_zipf_and_uniform() -> None:
    w = word_weights(20_000)
    assert abs(float(w.sum()) - 1.0) < 1e-9 and bool((w[:-1] >= w[1:]).all())
    # Half of the mass is uniform: no word is rarer than half a uniform draw.
    assert float(w.min()) >= 0.5 / 20_000
    assert torch.allclose(word_weights(10, uniform=1.0), torch.full((10,), 0.1, dtype=torch.float64))
    with pytest.raises(ValueError, match="uniform"):
        word_weights(10, uniform=1.5)


def test_widen_text_data_uses_the_weights() -> None:
    data = ds.data.load("text:pydoc")
    only_one = torch.zeros(3, dtype=torch.float64)
    only_one[2] = 1.0
    wide = widen_text_data(data, ["alpha", "beta", "gamma"], copies=2, rate=1.0, weights=only_one)
    assert len(wide.train) == 3 * len(data.train)
    assert wide.train[0] == data.train[0] and set(wide.train[1].split()) == {"gamma"}
    assert wide.val.sentences == data.val.sentences
    assert wide.meta["widened"]["draws"] == "weighted"


def test_replace_words_checks_its_arguments() -> None:
    g = torch.Generator()
    with pytest.raises(ValueError, match="rate"):
        replace_words(SENTENCES, ["a"], rate=1.5, generator=g)
    with pytest.raises(ValueError, match="words is empty"):
        replace_words(SENTENCES, [], generator=g)


class _Recorder(nn.Module):
    """A text 'model' with a tokenizer; the objective records the batches the engine hands it."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.tokenizer = ds.models.create("minilm").tokenizer


def _seen_batches(augment: str, seed: int = 0) -> list[list[str]]:
    data = ds.data.load("text:pydoc")
    model = _Recorder()
    seen: list[list[str]] = []

    def objective(m: nn.Module, batch: list[str], state: object) -> Tensor:
        seen.append(list(batch))
        return (m.w * 0).sum() + torch.zeros(len(batch))

    ds.train(model, data, ds.TrainConfig(epochs=1, max_steps=3, batch_size=32, augment=augment, seed=seed,
                                         progress=False, eval_every_epoch=False), objective=objective)
    return seen


def test_engine_augments_text_batches_deterministically() -> None:
    plain = _seen_batches("none")
    augmented = _seen_batches("words")
    assert augmented == _seen_batches("words")  # resumable: the same seed, the same batches
    changed = [a != p for pa, aa in zip(plain, augmented) for p, a in zip(pa, aa)]
    # About WORD_SHARE of the sentences are changed, the rest are left as they are.
    assert abs(sum(changed) / len(changed) - WORD_SHARE) < 0.08
    assert all(len(a.split()) == len(p.split()) for pa, aa in zip(plain, augmented) for p, a in zip(pa, aa))


def test_augmentation_must_fit_the_data() -> None:
    with pytest.raises(ds.ConfigError, match="augment"):
        _seen_batches("shift")
    images = ds.data.load("synthetic:classification:64")
    model = ds.models.create("lenet300", in_features=64, num_classes=4)
    with pytest.raises(ds.ConfigError, match="augment"):
        ds.train(model, images, ds.TrainConfig(epochs=1, augment="words", progress=False))


def test_words_need_a_model_with_a_tokenizer() -> None:
    data = ds.data.load("text:pydoc")
    model = nn.Linear(2, 2)
    with pytest.raises(ds.SpecError, match="no tokenizer"):
        ds.train(model, data, ds.TrainConfig(epochs=1, max_steps=1, augment="words", progress=False),
                 objective=lambda m, b, s: m.weight.sum())
