"""The headline demo's --quick run writes a report that is true to its files."""

from __future__ import annotations

import json

import deepshrink as ds
from deepshrink.demo import run_demo


def test_quick_demo_report_is_consistent(tmp_path):
    report = run_demo(tmp_path, quick=True)
    on_disk = json.loads((tmp_path / "report.json").read_text())
    assert on_disk == json.loads(json.dumps(report))
    names = [m["name"] for m in report["models"]]
    assert names == ["LeNet-300-100", "LeNet-5"]
    for row, spec, params in zip(report["models"], ["lenet300", "lenet5"], [266_610, 431_080]):
        path = tmp_path / f"{spec}.dsz"
        assert row["compressed_bytes"] == path.stat().st_size
        assert row["original_bytes"] == params * 4
        assert abs(row["ratio"] - row["original_bytes"] / row["compressed_bytes"]) < 1e-9
        assert row["ratio"] > 20  # even the quick run prunes ~92% and shares weights
        assert 0.0 <= row["test_accuracy_after"] <= 1.0 and 0.0 <= row["test_accuracy_before"] <= 1.0
        # The reported accuracy is that of the model reloaded from the file.
        data = ds.data.load("mnist5k")
        assert ds.evaluate(ds.load(path), data.test)["accuracy"] == row["test_accuracy_after"]
    # A second run reuses the cached baselines.
    assert (tmp_path / "baselines" / "lenet5-quick.safetensors").exists()
