"""Reliability: a run killed with SIGKILL mid-training resumes from its checkpoint and ends
with the metrics of an uninterrupted run; nothing that looks finished is left behind."""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from finetune.errors import UserError

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


# In-process resumes: every checkpoint a run writes is kept (copied aside), then put back as
# the checkpoint of another output folder and resumed from there.


def _config(model_dir, data, output, **train):
    from recipes.customer_service import recipe

    return recipe.config(
        data={"path": str(data[0]), "eval_path": str(data[1])},
        model={"name": str(model_dir), "lora_r": 4},
        train={"epochs": 2, "seed": 3, "batch_size": 8, "checkpoint_steps": 2, **train},
        output=str(output),
    )


@pytest.fixture(scope="module")
def recorded_run(tiny_model_dir, small_csvs, tmp_path_factory):
    """An uninterrupted run and copies of every checkpoint it wrote, in order."""
    from finetune.training.checkpoint import Checkpoints
    from recipes.customer_service import recipe

    folder = tmp_path_factory.mktemp("recorded")
    kept: list[Path] = []
    save = Checkpoints.save

    def save_and_keep(self, state):
        save(self, state)
        kept.append(folder / f"state-{len(kept)}.pt")
        shutil.copy(self.path, kept[-1])

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Checkpoints, "save", save_and_keep)
        recipe.train(_config(tiny_model_dir, small_csvs, folder / "straight"), show_progress=False)
    return folder / "straight", kept


def _mid_epoch(states: list[Path]) -> Path:
    """A checkpoint written in the middle of the second epoch."""
    import torch

    for path in states:
        state = torch.load(path, weights_only=True)
        if state["epoch"] == 1 and state["batch_in_epoch"] > 0:
            return path
    raise AssertionError("no mid-epoch checkpoint")


def _place(state: Path, output: Path) -> Path:
    target = output.with_name(output.name + ".checkpoint") / "state.pt"
    target.parent.mkdir(parents=True)
    shutil.copy(state, target)
    return target


def test_resume_mid_epoch_continues_exactly(recorded_run, tiny_model_dir, small_csvs, tmp_path):
    """Same weights, same dropout masks after the resume: the probabilities are identical,
    not merely close (a generator left unsaved or redrawn shows up as a difference)."""
    from recipes.customer_service import recipe

    straight, states = recorded_run
    resumed = tmp_path / "resumed"
    _place(_mid_epoch(states), resumed)
    config = _config(tiny_model_dir, small_csvs, resumed)
    recipe.train(replace(config, resume=True), show_progress=False)
    a, b = np.load(straight / "scores.npz"), np.load(resumed / "scores.npz")
    np.testing.assert_array_equal(a["fine-tuned (LoRA)"], b["fine-tuned (LoRA)"])
    history = [json.loads((f / "history.json").read_text()) for f in (straight, resumed)]
    assert history[0] == history[1]


def test_resume_refuses_a_checkpoint_of_other_settings(
    recorded_run, tiny_model_dir, small_csvs, tmp_path
):
    from recipes.customer_service import recipe

    output = tmp_path / "other"
    state = _place(recorded_run[1][0], output)
    config = _config(tiny_model_dir, small_csvs, output, learning_rate=5e-4, batch_size=4)
    with pytest.raises(UserError) as error:
        recipe.train(replace(config, resume=True), show_progress=False)
    message = str(error.value)
    assert "train.batch_size 8 there, 4 now" in message
    assert "train.learning_rate 0.001 there, 0.0005 now" in message
    assert "train.seed" not in message and "\n" not in message
    assert state.is_file()  # refused, and kept


def test_resume_refuses_tensors_that_do_not_fit(recorded_run, tiny_model_dir, small_csvs, tmp_path):
    import torch

    from recipes.customer_service import recipe

    output = tmp_path / "renamed"
    target = _place(_mid_epoch(recorded_run[1]), output)
    state = torch.load(target, weights_only=True)
    name = next(iter(state["trainable"]))
    state["trainable"]["renamed.weight"] = state["trainable"].pop(name)
    torch.save(state, target)
    config = _config(tiny_model_dir, small_csvs, output)
    with pytest.raises(UserError, match=rf"missing {re.escape(name)}; not in the model: renamed"):
        recipe.train(replace(config, resume=True), show_progress=False)


def test_copy_into_refuses_names_and_shapes_it_cannot_place():
    import torch

    from finetune.training.loop import _copy_into

    model = torch.nn.Linear(3, 2)
    state = {"weight": torch.zeros(2, 3), "bias": torch.zeros(2)}
    _copy_into(model, state)
    assert float(model.weight.detach().abs().sum()) == 0.0
    with pytest.raises(UserError, match=r"missing bias; not in the model: extra"):
        _copy_into(model, {"weight": torch.ones(2, 3), "extra": torch.ones(2)})
    with pytest.raises(UserError, match=r"other shapes: bias \(3,\) there, \(2,\) in the model"):
        _copy_into(model, {"weight": torch.ones(2, 3), "bias": torch.ones(3)})
    assert float(model.weight.detach().abs().sum()) == 0.0  # nothing copied from a refused state


def test_train_keeps_an_existing_checkpoint_unless_overwrite(
    recorded_run, tiny_model_dir, small_csvs, tmp_path
):
    from finetune.cli import recipe_app
    from recipes.customer_service import recipe

    output = tmp_path / "again"
    state = _place(recorded_run[1][0], output)
    args = ["train", "--data", str(small_csvs[0]), "--eval-data", str(small_csvs[1])]
    args += ["--model", str(tiny_model_dir), "--output", str(output), "--max-steps", "2"]
    result = CliRunner().invoke(recipe_app(recipe), args)
    assert result.exit_code == 2
    assert "pass --resume to continue or --overwrite to start afresh" in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert state.is_file() and not output.exists()
    result = CliRunner().invoke(recipe_app(recipe), [*args, "--overwrite"])
    assert result.exit_code == 0, result.output
    assert (output / "metrics.json").is_file() and not state.parent.exists()


def test_rng_state_round_trips_every_generator_through_the_file(tmp_path):
    import torch

    from finetune.training.checkpoint import restore_rng, rng_state

    generator = torch.Generator().manual_seed(1)

    def draw():
        return (
            random.random(),
            float(np.random.standard_normal()),
            float(torch.rand(1)),
            float(torch.rand(1, generator=generator)),
            float(torch.rand(1, device="cuda")) if torch.cuda.is_available() else None,
        )

    np.random.standard_normal()  # leaves a cached Gaussian: part of numpy's state too
    torch.save(rng_state({"loader": generator}), tmp_path / "rng.pt")
    first = draw()
    restore_rng(torch.load(tmp_path / "rng.pt", weights_only=True), {"loader": generator})
    assert draw() == first
