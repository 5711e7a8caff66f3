"""Reliability: a run killed with SIGKILL mid-training resumes from its checkpoint and ends
with the metrics of an uninterrupted run; nothing that looks finished is left behind."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time

FINAL = ("accuracy", "recall", "f1", "auc")


def train_command(model_dir, data, output, *extra):
    return [
        sys.executable,
        "-m",
        "finetune.cli",
        "customer-service",
        "train",
        "--data",
        str(data[0]),
        "--eval-data",
        str(data[1]),
        "--model",
        str(model_dir),
        "--epochs",
        "8",
        "--seed",
        "3",
        "--output",
        str(output),
        "--set",
        "train.batch_size=8",
        "--set",
        "train.checkpoint_steps=3",
        "--set",
        "model.lora_r=4",
        *extra,
    ]


def test_sigkill_then_resume_matches_uninterrupted(tiny_model_dir, small_csvs, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    killed = tmp_path / "killed"
    state = tmp_path / "killed.checkpoint" / "state.pt"
    process = subprocess.Popen(
        train_command(tiny_model_dir, small_csvs, killed),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not state.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not killed.exists(), "the run finished before it could be killed"
    assert not (killed / "metrics.json").exists()

    resumed = subprocess.run(
        train_command(tiny_model_dir, small_csvs, killed, "--resume"),
        env=env,
        capture_output=True,
        text=True,
    )
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    step = int(re.search(r"Resuming from the checkpoint at step (\d+)", resumed.stdout).group(1))
    assert step > 0
    assert not state.parent.exists(), "the checkpoint outlived the finished run"

    from recipes.customer_service import recipe

    straight = tmp_path / "straight"
    recipe.train(
        recipe.config(
            data={"path": str(small_csvs[0]), "eval_path": str(small_csvs[1])},
            model={"name": str(tiny_model_dir), "lora_r": 4},
            train={"epochs": 8, "seed": 3, "batch_size": 8, "checkpoint_steps": 3},
            output=str(straight),
        ),
        show_progress=False,
    )
    a = json.loads((killed / "metrics.json").read_text())
    b = json.loads((straight / "metrics.json").read_text())
    for key in FINAL:
        assert abs(a[key] - b[key]) <= 0.005, (key, a[key], b[key])
    history_a = json.loads((killed / "history.json").read_text())["epochs"]
    history_b = json.loads((straight / "history.json").read_text())["epochs"]
    assert [h["epoch"] for h in history_a] == [h["epoch"] for h in history_b]


def test_resume_without_checkpoint_starts_fresh_and_needs_output(tiny_model_dir, small_csvs):
    from finetune.errors import UserError
    from recipes.customer_service import recipe

    config = recipe.config(resume=True, data={"path": str(small_csvs[0])})
    try:
        recipe.train(config, show_progress=False)
    except UserError as error:
        assert "--resume needs the --output" in str(error)
    else:
        raise AssertionError("resume without --output must fail")
