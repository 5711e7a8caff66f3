"""The Banking77 benchmark script keeps working (on a tiny slice of any intent dataset)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_rows

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "customer_service_banking77.py"


def test_benchmark_runs_on_a_tiny_slice(tmp_path):
    for name, n, seed in (("train", 20, 1), ("test", 6, 2)):
        frame = pd.DataFrame(make_rows(n, seed)).rename(columns={"label": "category"})
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    output = tmp_path / "result.json"
    subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--data-dir",
            str(tmp_path),
            "--max-steps",
            "2",
            "--set",
            "model.lora_layers=3",  # the cached-lower-layers path on the real MiniLM
            "--output",
            str(output),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(output.read_text())
    methods = [row["method"] for row in result["rows"]]
    assert methods[0].startswith("plain Trainer")
    assert methods[1] == "recipe default (LoRA) model.lora_layers=3"
    assert {"baseline: tfidf_logreg", "baseline: embedding_logreg"} <= set(methods)
    reference, recipe_row = result["rows"][0], result["rows"][1]
    # Ratios are against the plain Trainer row (speed: samples/s; memory: peak RSS).
    assert reference["speed_ratio"] == reference["rss_ratio"] == 1
    assert recipe_row["speed_ratio"] == pytest.approx(
        recipe_row["samples_per_second"] / reference["samples_per_second"]
    )
    assert recipe_row["rss_ratio"] == pytest.approx(
        recipe_row["peak_rss_mb"] / reference["peak_rss_mb"]
    )
    # Scored on the 18 test rows, with the real pretrained MiniLM (its frozen embeddings
    # separate these three intents; a random encoder would not).
    for row in result["rows"]:
        assert round(row["accuracy"] * 18, 6).is_integer(), row
    baselines = {row["method"]: row for row in result["rows"][2:]}
    assert baselines["baseline: embedding_logreg"]["accuracy"] > 0.9
    assert recipe_row["predict_per_second"] > 0


def test_shape_memory_benchmark_runs():
    script = SCRIPT.parent / "shape_memory.py"
    command = [sys.executable, str(script), "--steps", "3", "--trim", "--round", "8"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=SCRIPT.parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "start:" in done.stdout and "end:" in done.stdout
