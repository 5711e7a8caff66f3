"""The loop-vs-Trainer benchmark script keeps working (a tiny slice, the tiny model)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import make_rows

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "loop_vs_trainer.py"


def test_loop_vs_trainer_runs_both_sides_on_the_same_rows(tiny_model_dir, tmp_path):
    for name, n, seed in (("train", 20, 1), ("test", 6, 2)):
        frame = pd.DataFrame(make_rows(n, seed)).rename(columns={"label": "category"})
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    output = tmp_path / "result.json"
    command = [sys.executable, str(SCRIPT), "--data-dir", str(tmp_path), "--rows", "40"]
    command += ["--model", str(tiny_model_dir), "--output", str(output)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(output.read_text())
    loop, trainer = result["runs"]
    assert (loop["method"], trainer["method"]) == ("engine loop", "transformers.Trainer")
    # The same slice and one epoch on both sides: 40 rows in batches of 32 is 2 steps each.
    for run in (loop, trainer):
        assert run["n_train"] == 40 and run["steps"] == 2, run
        assert run["n_test"] == loop["n_test"] > 0
        assert round(run["accuracy"] * run["n_test"], 6).is_integer()
        assert run["peak_rss_mb"] >= run["rss_before_training_mb"] > 0
    assert result["speed_ratio"] == pytest.approx(
        loop["samples_per_second"] / trainer["samples_per_second"]
    )
    assert result["rss_ratio"] == pytest.approx(loop["peak_rss_mb"] / trainer["peak_rss_mb"])
    keeps = result["speed_ratio"] >= 1.2 or result["rss_ratio"] <= 0.8
    assert result["keeps_the_loop"] is keeps
    assert "engine loop" in done.stdout and "loop / Trainer" in done.stdout
