"""Length-grouped batching of text: every sample once per epoch, similar lengths per batch, deterministic, resumable."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.train.batches import GlobalBatchSampler


def _lengths(n: int, seed: int = 0) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(5, 400, (n,), generator=g)).tolist()


def _epoch(sampler: GlobalBatchSampler, epoch: int, start: int = 0) -> list[list[int]]:
    return [idx.tolist() for _, idx, _ in sampler.batches(epoch, start)]


@pytest.mark.parametrize("n,batch", [(1000, 32), (1001, 32), (31, 8), (5, 8), (64, 1)])
def test_grouped_epoch_is_a_permutation_with_full_batches(n, batch):
    s = GlobalBatchSampler(n, batch, seed=3, lengths=_lengths(n), group_window=4)
    batches = _epoch(s, 0)
    assert len(batches) == len(s)
    assert sorted(i for b in batches for i in b) == list(range(n))
    assert all(len(b) == batch for b in batches[:-1])  # only the last batch may be short


def test_grouped_batches_hold_similar_lengths_and_cut_padding():
    n, batch = 4000, 32
    lengths = torch.tensor(_lengths(n))
    grouped = GlobalBatchSampler(n, batch, seed=0, lengths=lengths.tolist())
    plain = GlobalBatchSampler(n, batch, seed=0)

    def used(sampler):  # real positions / padded positions
        padded = sum(int(lengths[b].max()) * len(b) for _, b, _ in sampler.batches(0))
        return int(lengths.sum()) / padded

    assert used(plain) < 0.6
    assert used(grouped) > 0.95


def test_grouped_order_is_deterministic_differs_per_epoch_and_resumes():
    lengths = _lengths(500)
    a = GlobalBatchSampler(500, 16, seed=1, lengths=lengths)
    b = GlobalBatchSampler(500, 16, seed=1, lengths=lengths)
    assert _epoch(a, 2) == _epoch(b, 2)
    assert _epoch(a, 2) != _epoch(a, 3)
    assert _epoch(a, 2, start=7) == _epoch(a, 2)[7:]
    # batch order is shuffled, not longest first
    first = [max(lengths[i] for i in bt) for bt in _epoch(a, 0)]
    assert first != sorted(first, reverse=True)


def test_grouped_ranks_split_each_global_batch():
    lengths = _lengths(203)
    whole = _epoch(GlobalBatchSampler(203, 8, seed=0, lengths=lengths), 1)
    r0 = _epoch(GlobalBatchSampler(203, 8, seed=0, world_size=2, rank=0, lengths=lengths), 1)
    r1 = _epoch(GlobalBatchSampler(203, 8, seed=0, world_size=2, rank=1, lengths=lengths), 1)
    assert [sorted(x + y) for x, y in zip(r0, r1)] == [sorted(w) for w in whole]


def test_sampler_refuses_bad_lengths():
    with pytest.raises(ValueError, match="one length per sample"):
        GlobalBatchSampler(10, 4, seed=0, lengths=[1, 2, 3])
    with pytest.raises(ValueError, match="group_window"):
        GlobalBatchSampler(10, 4, seed=0, lengths=list(range(10)), group_window=0)


def _seen_batches(group_by_length: bool) -> list[list[str]]:
    data = ds.data.load("text:pydoc")
    seen: list[list[str]] = []
    model = nn.Linear(1, 1)

    def objective(m, batch, state):
        seen.append(list(batch))
        return m.weight.sum() * 0.0 + torch.zeros(len(batch)) + m.bias.sum() ** 2

    cfg = ds.TrainConfig(epochs=1, batch_size=32, group_by_length=group_by_length, progress=False, eval_every_epoch=False)
    ds.finetune(model, data, cfg, objective=objective)
    return seen


def test_text_finetuning_groups_sentences_by_length_unless_told_not_to():
    def spread(batches):  # mean (longest - shortest) characters per batch
        return sum(max(map(len, b)) - min(map(len, b)) for b in batches) / len(batches)

    grouped, plain = _seen_batches(True), _seen_batches(False)
    data = ds.data.load("text:pydoc")
    assert sorted(s for b in grouped for s in b) == sorted(data.train.sentences)
    assert spread(grouped) < 0.25 * spread(plain)


def test_group_by_length_is_validated():
    with pytest.raises(ds.ConfigError, match="group_by_length"):
        ds.TrainConfig(group_by_length="yes")
