"""Recovering an embedding model by matching its original: the objective and the recipe path on text data."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import deepshrink as ds
from deepshrink.distill.embedding import embedding_objective
from deepshrink.recipe import recipe_from_dict
from deepshrink.train.embeddings import embedding_similarity


@pytest.fixture(scope="module")
def minilm() -> nn.Module:
    return ds.models.create("minilm")


def test_objective_is_zero_for_the_teacher_itself(minilm: nn.Module) -> None:
    student = copy.deepcopy(minilm)
    loss = embedding_objective(minilm)(student, ["A first sentence.", "And a second, longer one here."], None)
    assert loss.shape == (2,)
    assert float(loss.abs().max()) < 1e-5


def test_objective_counts_token_states(minilm: nn.Module) -> None:
    student = copy.deepcopy(minilm)
    with torch.no_grad():
        student.encoder.encoder.layer[0].output.dense.weight.mul_(1.5)
    sentences = ["The quick brown fox jumps over the lazy dog."]
    with_states = embedding_objective(minilm, hidden_weight=1.0)(student, sentences, None)
    without = embedding_objective(minilm, hidden_weight=0.0)(student, sentences, None)
    assert float(with_states) > float(without) > 0


def test_objective_needs_a_tokenizer() -> None:
    with pytest.raises(ds.SpecError, match="tokenize"):
        embedding_objective(nn.Linear(2, 2))(nn.Linear(2, 2), ["x"], None)


def test_text_recipe_finetune_moves_towards_the_original() -> None:
    """A damaged copy fine-tuned by a recipe on text data gets closer to the model it started as."""
    minilm = ds.models.create("minilm")  # fresh: the other tests froze the shared one as a teacher
    data = ds.data.load("text:pydoc")
    damaged = copy.deepcopy(minilm)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in damaged.named_parameters():
            if p.dim() == 2 and "embeddings" not in name:
                p.add_(torch.randn_like(p) * 0.02)
    start = embedding_similarity(damaged, minilm, data.val)["cosine"]
    # The recipe's reference is the model as it is when the recipe starts: here the damaged one,
    # so a fine-tune-only recipe must keep it where it is (cosine to itself stays ~1).
    recipe = recipe_from_dict({"name": "ft", "stages": [{"finetune": {"epochs": 1, "max_steps": 2, "batch_size": 16,
                                                                       "lr": 1e-5, "progress": False}}]})
    report = ds.run_recipe(damaged, data, recipe)
    assert report.stages[0]["val"]["cosine"] > 0.995
    # Matching the undamaged model as teacher moves the damaged one towards it.
    ds.finetune(damaged, data, ds.TrainConfig(epochs=1, max_steps=4, batch_size=16, lr=1e-4, progress=False),
                objective=embedding_objective(minilm))
    assert embedding_similarity(damaged, minilm, data.val)["cosine"] > start + 0.1
