"""Data that cannot feed the model are refused before any work, with both shapes named, and the model is left as it was."""

from __future__ import annotations

import copy

import pytest
import torch

import deepshrink as ds
from deepshrink.models.inputs import check_data_fits
from deepshrink.surgery import surgery_log

SMALL = ds.data.load("synthetic:classification:64")  # 1x8x8 inputs, 4 classes

VERB_CALLS = {
    "channel_taylor": lambda m, d: ds.prune_(m, ds.ChannelPruning(ratio=0.5, importance="taylor", measure_latency=False),
                                             data=d, example_inputs=(torch.randn(1, 1, 28, 28),)),
    "svd": lambda m, d: ds.factorize_(m, ds.SVD(ratio=0.5, latency=False, progress=False), data=d),
    "tucker": lambda m, d: ds.factorize_(m, ds.Tucker(ratio=0.5, allocation="sensitivity", latency=False, progress=False), data=d),
    "int8": lambda m, d: ds.quantize_(m, ds.Int8(), data=d),
    "pq": lambda m, d: ds.quantize_(m, ds.ProductQuantization(k=16, n_iter=2, samples=16), data=d),
    "finetune": lambda m, d: ds.finetune(m, d, ds.TrainConfig(epochs=1, progress=False)),
    "distill": lambda m, d: ds.distill(m, ds.models.create("lenet5"), d, ds.KD(), ds.TrainConfig(epochs=1, progress=False)),
}


@pytest.mark.parametrize("call", sorted(VERB_CALLS))
def test_inputs_of_another_shape_raise_config_error_and_leave_the_model_unchanged(call):
    torch.manual_seed(0)
    model = ds.models.create("lenet5")  # takes 1x28x28
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ds.ConfigError, match=r"gives inputs of shape \(1, 8, 8\), on which LeNet5 fails"):
        VERB_CALLS[call](model, SMALL)
    after = model.state_dict()
    assert list(after) == list(before) and all(torch.equal(after[k], before[k]) for k in before)
    assert surgery_log(model) == []


def test_text_data_for_an_image_model_names_the_fix():
    with pytest.raises(ds.ConfigError, match="tokenize.*--model minilm"):
        check_data_fits(ds.models.create("lenet5"), ds.data.load("text:pydoc"), "prune_")


def test_fewer_outputs_than_classes_is_refused():
    model = ds.models.create("lenet300", in_features=64, num_classes=3)
    with pytest.raises(ds.ConfigError, match="at most 3 classes.*has 4"):
        ds.finetune(model, SMALL, ds.TrainConfig(epochs=1, progress=False))


def test_text_data_without_an_objective_is_refused():
    model = ds.models.create("lenet300", in_features=64, num_classes=4)
    with pytest.raises(ds.ConfigError, match="embedding_objective"):
        ds.train(model, ds.data.load("text:pydoc"), ds.TrainConfig(epochs=1, progress=False))


def test_data_that_fit_pass_and_the_check_leaves_no_trace():
    model = ds.models.create("lenet300", in_features=64, num_classes=4)
    model.train()
    state = copy.deepcopy(model.state_dict())
    check_data_fits(model, SMALL, "prune_")
    assert model.training  # mode restored
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert not model._forward_hooks  # the hook that reads the outputs is gone
