"""Analysis: exact parameter, nonzero and MAC counts, latency, reports."""

from __future__ import annotations

import json

import pytest
import torch
from rich.console import Console
from torch import nn
from torch.nn.utils import parametrize

import deepshrink as ds
from deepshrink.analysis import (
    count_macs,
    count_nonzeros,
    count_parameters,
    layer_stats,
    measure_latency,
    summarize,
    total_macs,
)
from deepshrink.errors import ConfigError


class ConvNet(nn.Module):
    """2x6x6 input -> conv 3x3 (pad 1) -> BN -> grouped conv 3x3 stride 2 -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2, padding=1, groups=2, bias=False)
        self.pool = nn.MaxPool2d(1)
        self.fc = nn.Linear(36, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv1(x)).relu()
        x = self.pool(self.conv2(x))
        return self.fc(x.flatten(1))


def test_exact_macs_by_hand() -> None:
    macs = count_macs(ConvNet(), (torch.zeros(2, 2, 6, 6),))
    # Per sample: conv1 4x6x6 outputs x (2 in x 3x3) = 2592; BN one per output = 144;
    # conv2 4x3x3 outputs x (4/2 groups x 3x3) = 648; fc 36 x 5 = 180. Batch of 2 doubles it.
    assert macs == {"conv1": 2 * 2592, "bn": 2 * 144, "conv2": 2 * 648, "fc": 2 * 180}
    assert total_macs(ConvNet(), (torch.zeros(1, 2, 6, 6),)) == 3564


def test_lenet_macs_and_params() -> None:
    model = ds.models.create("lenet5")
    s = summarize(model, ds.models.example_inputs(model))
    # conv1 24x24x20 x 25; conv2 8x8x50 x (20x25); fc1 800x500; fc2 500x10.
    assert {r.name: r.macs for r in s.layers} == {"conv1": 288_000, "conv2": 1_600_000, "fc1": 400_000, "fc2": 5_000}
    assert s.params == 431_080 and s.dense_bytes == 4 * 431_080
    assert s.params == count_parameters(model)


def test_attention_matmuls_are_counted() -> None:
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True)
    macs = count_macs(layer, (torch.zeros(1, 5, 8),))
    # Self-attention on 5 tokens of width 8, 2 heads of 4: in-projection 5x8x24 = 960,
    # Q K^T 2x5x5x4 = 200, A V 200, out-projection 5x8x8 = 320.
    assert macs["self_attn"] == 960 + 200 + 200 + 320
    assert macs["linear1"] == 5 * 8 * 16 and macs["linear2"] == 5 * 16 * 8
    assert macs["norm1"] == macs["norm2"] == 40
    # The fused fast path is restored after counting.
    assert torch.backends.mha.get_fastpath_enabled()


def test_nonzeros_after_zeroing_weights() -> None:
    model = ConvNet()
    with torch.no_grad():
        model.fc.weight[:, :10] = 0.0  # 50 of 180 weights
        model.conv1.bias.zero_()  # 4 biases
    stats = {s.name: s for s in layer_stats(model)}
    assert stats["fc"].params == 185 and stats["fc"].nonzeros == 135
    assert stats["conv1"].params == 76 and stats["conv1"].nonzeros == 72
    assert stats["bn"].params == 8 and stats["bn"].nonzeros == 4  # BN bias starts at zero
    assert count_parameters(model) == 76 + 8 + 72 + 185
    assert count_nonzeros(model) == 72 + 4 + 72 + 135


class Mask(nn.Module):
    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask


def test_parametrized_mask_counts_effective_weights() -> None:
    model = ConvNet()
    mask = torch.ones_like(model.fc.weight)
    mask[0] = 0.0  # 36 weights masked
    parametrize.register_parametrization(model.fc, "weight", Mask(mask))
    s = summarize(model, (torch.zeros(1, 2, 6, 6),))
    fc = next(r for r in s.layers if r.name == "fc")
    # The parametrization's original tensor and mask buffer are not extra layers.
    assert [r.name for r in s.layers] == ["conv1", "bn", "conv2", "fc"]
    assert fc.params == 185 and fc.nonzeros == 185 - 36
    assert fc.macs == 180 and fc.nonzero_macs == 180 - 36


def test_tied_weights_count_once() -> None:
    emb = nn.Embedding(10, 4)
    head = nn.Linear(4, 10, bias=False)
    head.weight = emb.weight
    assert count_parameters(nn.ModuleDict({"emb": emb, "head": head})) == 40


def test_summary_dict_and_table() -> None:
    s = summarize(ConvNet(), (torch.zeros(1, 2, 6, 6),))
    d = json.loads(json.dumps(s.to_dict()))
    assert d["inputs"] == [[1, 2, 6, 6]]
    assert d["totals"]["macs"] == 3564 and d["totals"]["params"] == 341
    assert [row["name"] for row in d["layers"]] == ["conv1", "bn", "conv2", "fc"]
    table = s.table()
    assert table.row_count == 5  # four layers and the total
    console = Console(width=120, record=True)
    console.print(table)
    text = console.export_text()
    assert "conv2" in text and "3,564" in text


def test_latency_positive_median_and_restores_state() -> None:
    model = ds.models.create("lenet300").train()
    threads = torch.get_num_threads()
    r = measure_latency(model, ds.models.example_inputs(model), repeats=7, warmup=2, threads=1)
    assert r["median_ms"] > 0 and r["min_ms"] <= r["median_ms"] <= r["max_ms"]
    assert r["repeats"] == 7 and r["threads"] == 1 and r["batch_size"] == 1
    assert model.training and torch.get_num_threads() == threads
    with pytest.raises(ConfigError, match="repeats"):
        measure_latency(model, ds.models.example_inputs(model), repeats=0)


def test_minilm_summary_counts_attention() -> None:
    model = ds.models.create("minilm")
    ids, mask = ds.models.example_inputs(model)
    seq = ids.shape[1]
    s = summarize(model, (ids, mask))
    hidden, ffn, layers = 384, 1536, 6
    linear = layers * seq * (4 * hidden * hidden + 2 * hidden * ffn)
    attention = layers * 2 * seq * seq * hidden
    norms = (2 * layers + 1) * seq * hidden  # two LayerNorms per block and one after the embeddings
    assert s.macs == linear + attention + norms
    assert s.params == 22_565_376
