"""OBS channel selection (importance="obs") and real-token rows for text: costs equal the refit's error, selection beats
mean activation after the same refit, heads go whole, padding never enters the statistics."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.data.bundle import DataBundle
from deepshrink.data.text import SentenceDataset, load_text
from deepshrink.errors import ConfigError
from deepshrink.prune import obs
from deepshrink.prune.obs import input_grams, obs_elimination
from deepshrink.prune.reconstruct import reconstruct_consumers
from deepshrink.data.token_rows import batch_mask, real_rows


def _refit_error(x: torch.Tensor, w: torch.Tensor, keep: list[int]) -> float:
    """Relative error of the best least-squares output of ``x[:, keep]`` against ``x @ w``."""
    y = x @ w
    b = torch.linalg.lstsq(x[:, keep], y).solution
    return float(((x[:, keep] @ b - y) ** 2).sum() / (y**2).sum())


def test_first_cost_is_exactly_the_refit_error(monkeypatch):
    monkeypatch.setattr(obs, "DAMPING", 0.0)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(500, 6, generator=g, dtype=torch.float64) @ torch.randn(6, 6, generator=g, dtype=torch.float64)
    w = torch.randn(6, 3, generator=g, dtype=torch.float64)
    scores = obs_elimination([x.T @ x], [w], [torch.arange(6).view(6, 1)], steps=6)
    first = int(torch.argmin(scores))
    expected = _refit_error(x, w, [j for j in range(6) if j != first])
    assert float(scores[first]) == pytest.approx(expected, rel=1e-6)
    # and it is the cheapest single removal
    assert expected <= min(_refit_error(x, w, [j for j in range(6) if j != k]) for k in range(6)) + 1e-12


def test_a_duplicated_input_goes_first_at_no_cost():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(400, 5, generator=g, dtype=torch.float64)
    x = torch.cat([x, x[:, 2:3]], dim=1)  # unit 5 copies unit 2
    w = torch.randn(6, 4, generator=g, dtype=torch.float64)
    scores = obs_elimination([x.T @ x / 400], [w], [torch.arange(6).view(6, 1)], steps=6)
    assert int(torch.argmin(scores)) in (2, 5)
    assert float(scores.min()) < 0.01  # zero but for the 1% damping of the Gram diagonal


def test_units_of_several_columns_are_removed_together():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(300, 8, generator=g, dtype=torch.float64)
    w = torch.randn(8, 2, generator=g, dtype=torch.float64)
    w[4:6] *= 1e-3  # the third "head" (columns 4, 5) barely contributes
    scores = obs_elimination([x.T @ x / 300], [w], [torch.arange(8).view(4, 2)], steps=4)
    assert scores.shape == (4,) and int(torch.argmin(scores)) == 2
    assert torch.isinf(scores).sum() == 1  # the last unit standing is never removed


def _mlp_data(n: int = 512) -> DataBundle:
    g = torch.Generator().manual_seed(0)
    basis = torch.randn(6, 16, generator=g)
    x = torch.randn(n, 6, generator=g) @ basis + 0.05 * torch.randn(n, 16, generator=g)  # low-rank inputs
    y = torch.zeros(n, dtype=torch.long)
    ds_ = torch.utils.data.TensorDataset(x, y)
    return DataBundle("lowrank", ds_, ds_, ds_, (16,), 4, "classification")


@torch.no_grad()
def _output_error(model: nn.Module, original: nn.Module, x: torch.Tensor) -> float:
    ref = original(x)
    return float(((model(x) - ref) ** 2).sum() / (ref**2).sum())


def test_obs_selection_beats_mean_activation_after_the_same_refit():
    torch.manual_seed(0)
    original = nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4)).eval()
    data = _mlp_data()
    x = data.val.tensors[0]
    errors = {}
    for importance in ("mean_activation", "obs"):
        model = copy.deepcopy(original)
        cfg = ds.ChannelPruning(ratio=0.75, importance=importance, reconstruct=True, measure_latency=False, batchnorm_samples=0)
        ds.prune_(model, cfg, data=data, example_inputs=(x[:2],))
        assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [16, 16, 4]
        errors[importance] = _output_error(model.eval(), original, x)
    assert errors["obs"] < errors["mean_activation"]


def test_obs_needs_the_refit_and_linear_consumers():
    with pytest.raises(ConfigError, match="reconstruct"):
        ds.ChannelPruning(importance="obs")
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 4))
    data = ds.data.load("synthetic:classification:64")  # 1 x 8 x 8 inputs
    cfg = ds.ChannelPruning(ratio=0.5, importance="obs", reconstruct=True, measure_latency=False)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ConfigError, match="Conv2d"):
        ds.prune_(model, cfg, data=data, example_inputs=(torch.zeros(1, 1, 8, 8),))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # nothing was cut


def test_real_rows_drop_padding_and_grams_count_real_tokens_only():
    ids = torch.tensor([[5, 6, 0], [7, 0, 0]])
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert batch_mask((ids, mask)).tolist() == [[True, True, False], [True, False, False]]
    assert batch_mask((ids, ids)) is None  # token ids are not a mask
    assert batch_mask((torch.zeros(2, 3, 4),)) is None

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(8, 4)
            self.lin = nn.Linear(4, 2)

        def forward(self, input_ids, attention_mask):
            return self.lin(self.emb(input_ids))

    m = Tokens()
    gram = input_grams(m, [(ids, mask)])[m.lin]
    real = real_rows(m.emb(ids), mask.bool()).detach().double()
    assert real.shape == (3, 4)
    torch.testing.assert_close(gram, real.T @ real / 3)


def test_reconstruct_ignores_padding_rows():
    """The refit of a text model does not change when more padding is added to its batches."""

    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.emb = nn.Embedding(10, 6)
            self.fc1, self.fc2 = nn.Linear(6, 12), nn.Linear(12, 3)

        def forward(self, input_ids, attention_mask):
            return self.fc2(torch.relu(self.fc1(self.emb(input_ids))))

    original = Tokens().eval()
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, 10, (16, 5), generator=g)
    mask = torch.ones(16, 5, dtype=torch.long)
    mask[8:, 3:] = 0
    padded_ids = torch.cat([ids, torch.zeros(16, 4, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([mask, torch.zeros(16, 4, dtype=torch.long)], dim=1)
    fits = []
    for batch in ((ids, mask), (padded_ids, padded_mask)):
        pruned = copy.deepcopy(original)
        from deepshrink.prune.structured import replay_channel_prune

        keep = list(range(0, 12, 2))
        replay_channel_prune(pruned, {"op": "channel_prune", "module": "fc1", "out": keep})
        replay_channel_prune(pruned, {"op": "channel_prune", "module": "fc2", "in": keep})
        reconstruct_consumers(pruned, original, ["fc2"], [batch])
        fits.append(pruned.fc2.weight.detach().clone())
    torch.testing.assert_close(fits[0], fits[1])


def test_minilm_obs_keeps_whole_heads_and_is_closer_than_mean_activation():
    sentences = load_text("pydoc").train.sentences
    data = DataBundle("text:pydoc-64", SentenceDataset(sentences[:96]), SentenceDataset([]), SentenceDataset([]), (), None, task="text")
    held = sentences[200:232]
    original = ds.models.create("minilm").eval()
    reference = original.encode(held)
    cosines = {}
    for importance in ("mean_activation", "obs"):
        model = copy.deepcopy(original)
        cfg = ds.ChannelPruning(ratio=0.5, head_ratio=0.5, importance=importance, reconstruct=True, batches=3,
                                reconstruct_batches=3, measure_latency=False)
        ds.prune_(model, cfg, data=data, example_inputs=ds.models.example_inputs(model))
        layer = model.encoder.encoder.layer[0]
        assert layer.attention.self.num_attention_heads == 6 and layer.attention.self.query.out_features == 6 * 32
        assert layer.intermediate.dense.out_features == 768
        cosines[importance] = float(torch.nn.functional.cosine_similarity(model.encode(held), reference).mean())
    assert cosines["obs"] > cosines["mean_activation"]
