"""The Banking77 benchmark script keeps working (on a tiny slice of any intent dataset)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
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
    recipe_row = result["rows"][1]
    assert recipe_row["speed_ratio"] > 0 and recipe_row["rss_ratio"] > 0
    assert 0 <= recipe_row["accuracy"] <= 1 and recipe_row["predict_per_second"] > 0


def test_shape_memory_benchmark_runs():
    script = SCRIPT.parent / "shape_memory.py"
    command = [sys.executable, str(script), "--steps", "3", "--trim", "--round", "8"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=SCRIPT.parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "start:" in done.stdout and "end:" in done.stdout
