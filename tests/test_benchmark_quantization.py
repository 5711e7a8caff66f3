"""The quantization benchmark keeps working (tiny random BERT, a few rows, one step each)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "quantization.py"


def test_quantization_benchmark_runs_on_a_tiny_slice(tiny_model_dir, tmp_path):
    output, table = tmp_path / "result.json", tmp_path / "table.md"
    subprocess.run(
        [sys.executable, str(SCRIPT), "--models", str(tiny_model_dir), "--quants", "none", "4bit"]
        + ["--limit", "42", "--eval-limit", "14", "--max-steps", "1", "--batch-size", "8"]
        + ["--output", str(output), "--table", str(table)],
        check=True,
        capture_output=True,
        text=True,
    )
    rows = json.loads(output.read_text())["rows"]
    assert [row["quant"] for row in rows] == ["none", "4bit"]
    assert all(row["device"] == "cpu" and row["memory_kind"] == "peak RSS" for row in rows)
    assert rows[1]["weights_mb"] < rows[0]["weights_mb"]  # packed 4-bit weights are smaller
    assert rows[1]["weights_ratio"] == pytest.approx(rows[1]["weights_mb"] / rows[0]["weights_mb"])
    assert rows[1]["speed_ratio"] == pytest.approx(
        rows[1]["samples_per_second"] / rows[0]["samples_per_second"]
    )
    # --max-steps 1 and --eval-limit 14 are honoured: one step, accuracy over exactly 14 rows.
    assert all(row["steps"] == 1 for row in rows)
    assert all(round(row["accuracy"] * 14, 6).is_integer() for row in rows)
    assert table.read_text().startswith("| model | quant | device | peak_memory_mb")


def test_gpu_check_refuses_to_run_without_a_gpu(tmp_path):
    if shutil.which("nvidia-smi"):
        pytest.skip("a GPU machine: run benchmarks/gpu_check.sh itself")
    script = SCRIPT.parent / "gpu_check.sh"
    done = subprocess.run(["bash", str(script), str(tmp_path)], capture_output=True, text=True)
    assert done.returncode != 0 and "no NVIDIA GPU" in done.stderr
