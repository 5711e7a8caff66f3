"""Scale-out: the unchanged CLI under `torchrun` with two CPU processes (gloo) trains data
parallel and writes one complete run folder."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

from run_checks import check_reported_figures


def torchrun_train(*args: str) -> subprocess.CompletedProcess:
    """`finetune customer-service train ARGS` in two CPU processes under torchrun (gloo)."""
    torchrun = Path(sys.executable).with_name("torchrun")
    command = str(torchrun) if torchrun.exists() else shutil.which("torchrun")
    assert command, "torchrun ships with torch"
    return subprocess.run(
        [command, "--standalone", "--nproc_per_node", "2", "-m", "finetune.cli"]
        + ["customer-service", "train", "--set", "model.lora_r=4", *args],
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_torchrun_two_processes_write_one_complete_run(tiny_model_dir, small_csvs, tmp_path):
    output = tmp_path / "ddp"
    result = torchrun_train(
        "--data",
        str(small_csvs[0]),
        "--eval-data",
        str(small_csvs[1]),
        "--model",
        str(tiny_model_dir),
        "--max-steps",
        "6",
        "--output",
        str(output),
        "--set",
        "train.batch_size=8",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Run folder:") == 1  # only process 0 reports and writes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp"]  # no temporary leftovers
    metrics = json.loads((output / "metrics.json").read_text())
    for key in ("accuracy", "recall", "f1", "auc", "baselines", "per_class"):
        assert key in metrics, key
    assert json.loads((output / "environment.json").read_text())["processes"] == 2
    check_reported_figures(output)  # process 0's figures are those of the probabilities it saved
    # Each process took half of every epoch's batches: 6 steps cover more than one epoch.
    batches = math.ceil(metrics["n_train"] / 8)
    last = json.loads((output / "history.json").read_text())["epochs"][-1]
    assert last["epoch"] == round(6 / math.ceil(batches / 2), 3)


def test_torchrun_cross_validation_writes_one_summary(tiny_model_dir, small_csvs, tmp_path):
    """Every process trains every fold in step; only process 0 writes the folds and summary."""
    output = tmp_path / "cv"
    result = torchrun_train(
        "--data",
        str(small_csvs[1]),
        "--model",
        str(tiny_model_dir),
        "--max-steps",
        "2",
        "--output",
        str(output),
        "--set",
        "eval.folds=2",
        "--set",
        "train.batch_size=4",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("Run folder:") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cv"]  # no temporary leftovers
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["n_folds"] == 2 and metrics["n_eval"] == 18  # every row held out once
    for fold in ("fold-1", "fold-2"):
        assert json.loads((output / fold / "environment.json").read_text())["processes"] == 2
