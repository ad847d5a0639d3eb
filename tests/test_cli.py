"""The command line: help everywhere, and one-line errors with exit code 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deepshrink.cli import _register_commands, app

_register_commands()
runner = CliRunner()
COMMANDS = ["train", "eval", "compress", "demo", "inspect", "export", "analyze"]


def run(*args: str):
    return runner.invoke(app, list(args))


def test_help_lists_every_command():
    res = run("--help")
    assert res.exit_code == 0
    for cmd in COMMANDS:
        assert cmd in res.output


@pytest.mark.parametrize("cmd", COMMANDS)
def test_every_command_has_help_with_an_example(cmd):
    res = run(cmd, "--help")
    assert res.exit_code == 0
    assert "Example: deepshrink" in res.output


def _assert_clean_error(res, *needles: str):
    assert res.exit_code == 2, res.output
    err = res.stderr
    assert "Traceback" not in err and "Traceback" not in res.stdout
    assert err.strip().startswith("error:"), err
    assert len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, (n, err)


def test_unknown_model_spec(tmp_path):
    out = tmp_path / "m.safetensors"
    res = run("train", "--model", "lenet9000", "--data", "digits", "--out", str(out), "--no-progress")
    _assert_clean_error(res, "lenet9000", "lenet300", "lenet5")
    assert not out.exists()


def test_unknown_data_spec(tmp_path):
    out = tmp_path / "m.safetensors"
    res = run("train", "--model", "lenet300", "--data", "cifar-100-please", "--out", str(out), "--no-progress")
    _assert_clean_error(res, "cifar-100-please", "mnist5k", "digits")
    assert not out.exists()


def test_model_that_cannot_run_on_the_data(tmp_path):
    out = tmp_path / "m.dsz"
    res = run("compress", "--model", "torchvision:mobilenet_v3_small", "--data", "digits", "--recipe", "int8",
              "--out", str(out), "--no-progress")
    _assert_clean_error(res, "torchvision:mobilenet_v3_small", "cannot run on the inputs of digits", "3-channel")
    assert not out.exists()


def test_missing_text_file():
    res = run("eval", "lenet300", "--data", "text:/no/such/file.txt")
    _assert_clean_error(res, "/no/such/file.txt")


def test_missing_weights_file():
    res = run("eval", "lenet300", "--data", "digits", "--weights", "/no/such/weights.safetensors")
    _assert_clean_error(res, "/no/such/weights.safetensors")


def test_missing_dsz_file():
    res = run("inspect", "/no/such/model.dsz")
    _assert_clean_error(res, "/no/such/model.dsz")


def test_bad_recipe_field_leaves_no_output(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("name: bad\nstages:\n  - config: {type: magnitude_pruning, sparsity: 1.5}\n")
    out = tmp_path / "m.dsz"
    res = run("compress", "--model", "lenet300", "--data", "digits", "--recipe", str(recipe), "--out", str(out))
    _assert_clean_error(res, "sparsity", "1.5")
    assert not out.exists()


def test_unknown_recipe_lists_builtin():
    res = run("compress", "--model", "lenet300", "--data", "digits", "--recipe", "no-such-recipe", "--out", "/tmp/x.dsz")
    _assert_clean_error(res, "no-such-recipe", "deep-compression")


def test_unknown_recipe_stage_key(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text("name: bad\nstages:\n  - finetune: {epochs: 1}\n    finetuning: {epochs: 2}\n")
    res = run("compress", "--model", "lenet300", "--data", "digits", "--recipe", str(recipe), "--out", str(tmp_path / "m.dsz"))
    _assert_clean_error(res, "finetuning")


def test_bad_train_option_value(tmp_path):
    res = run("train", "--model", "lenet300", "--data", "digits", "--out", str(tmp_path / "m.safetensors"), "--optimizer", "lion")
    _assert_clean_error(res, "optimizer", "lion", "sgd")


def test_debug_shows_traceback():
    res = runner.invoke(app, ["--debug", "train", "--model", "nope", "--data", "digits", "--out", "/tmp/x.safetensors"])
    assert res.exit_code != 0 and res.exception is not None


def test_train_then_eval_json_round_trip(tmp_path):
    out = tmp_path / "m.safetensors"
    res = run("train", "--model", "lenet300", "--data", "digits", "--epochs", "3", "--augment", "none", "--out", str(out), "--no-progress")
    assert res.exit_code == 0, res.output
    assert out.exists() and not Path(str(out) + ".ckpt").exists()
    res = run("eval", str(out), "--data", "digits", "--json")
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout.strip().splitlines()[-1])
    assert payload["accuracy"] > 0.8
    assert payload["size_bytes"] == out.stat().st_size
    res = run("eval", "lenet300", "--weights", str(out), "--data", "digits", "--json")
    assert json.loads(res.stdout.strip().splitlines()[-1])["accuracy"] == payload["accuracy"]


def test_console_script_exit_code_is_2():
    exe = Path(sys.executable).parent / "deepshrink"
    res = subprocess.run([str(exe), "eval", "nope-model", "--data", "digits"], capture_output=True, text=True)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr and "nope-model" in res.stderr


def test_eval_embedding_model_against_reference(tmp_path):
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(f"This is test sentence number {i} about compressing neural networks." for i in range(40)))
    res = run("eval", "minilm", "--data", f"text:{text}", "--reference", "minilm", "--json")
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout.strip().splitlines()[-1])
    assert payload["cosine"] > 0.9999 and payload["count"] == 8  # 20% of 40 sentences is the test split


def test_eval_split_all_scores_every_item_and_a_bad_split_is_named(tmp_path):
    text = tmp_path / "sentences.txt"
    text.write_text("\n".join(f"Sentence {i} says something different about the weather today." for i in range(40)))
    res = run("eval", "minilm", "--data", f"text:{text}", "--reference", "minilm", "--split", "all", "--json")
    assert res.exit_code == 0, res.output
    payload = json.loads(res.stdout.strip().splitlines()[-1])
    assert payload["count"] == 40 and payload["split"] == "all" and payload["cosine"] > 0.9999
    res = run("eval", "lenet300", "--data", "digits", "--split", "val", "--json")
    assert json.loads(res.stdout.strip().splitlines()[-1])["count"] == 180  # 10% of 1,797 digits
    _assert_clean_error(run("eval", "lenet300", "--data", "digits", "--split", "everything"), "--split", "everything", "all")


def test_eval_text_data_needs_a_reference():
    res = run("eval", "minilm", "--data", "text:pydoc")
    _assert_clean_error(res, "--reference")


def test_compress_with_a_bridged_block_pruning_recipe_reloads_and_evaluates(tmp_path):
    text = tmp_path / "s.txt"
    text.write_text("\n".join(f"Sentence {i} says something short about small models and their layers." for i in range(40)))
    recipe = tmp_path / "bridged.yaml"
    recipe.write_text("name: bridged\nstages:\n  - config: {type: block_pruning, count: 2, bridge: true, bridge_batches: 1, "
                      "samples: 8, measure_latency: false}\n")
    out = tmp_path / "m.dsz"
    res = run("compress", "--model", "minilm", "--data", f"text:{text}", "--recipe", str(recipe), "--out", str(out))
    assert res.exit_code == 0, res.output
    res = run("eval", str(out), "--data", f"text:{text}", "--reference", "minilm", "--json")
    assert res.exit_code == 0, res.output
    assert 0.5 < json.loads(res.stdout.strip().splitlines()[-1])["cosine"] <= 1.0
    import deepshrink as ds
    from deepshrink.prune.bridges import LinearBridge

    assert any(isinstance(m, LinearBridge) for m in ds.load(out).modules())
