"""The training loop's state saves and loads itself; a loop restored from a mid-epoch state
finishes exactly where an uninterrupted one does."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from finetune.errors import UserError
from finetune.evaluation.metrics import validation_figures
from finetune.modeling.classifiers import build_for_training
from finetune.training.checkpoint import Checkpoints, LoopState
from finetune.training.loop import Rows, TrainingLoop, trainable_state
from recipes.customer_service import recipe


def test_loop_state_round_trips_through_the_checkpoint_file(tmp_path):
    state = LoopState(
        step=7,
        epoch=1,
        batch_in_epoch=3,
        seen=28,
        elapsed=1.5,
        running=[0.9, 0.7],
        history=[{"epoch": 0, "step": 0, "train_loss": None}],
        losses=[(5, 0.8)],
        best_epoch=0,
        best_key=(0.5, -0.7),
        best_state={"head.weight": torch.ones(2, 3)},
        trainable={"head.weight": torch.zeros(2, 3)},
        optimizer={"state": {}, "param_groups": []},
        scheduler={"last_epoch": 7},
        rng={"torch": torch.get_rng_state()},
    )
    checkpoints = Checkpoints(tmp_path / "run", settings={"train.seed": 3})
    checkpoints.save(state)
    assert checkpoints.read()["settings"] == {"train.seed": 3}  # beside the state, not in it
    loaded = checkpoints.load()
    assert loaded.best_key == (0.5, -0.7) and isinstance(loaded.best_key, tuple)
    for name in ("step", "epoch", "batch_in_epoch", "seen", "elapsed", "running", "history"):
        assert getattr(loaded, name) == getattr(state, name), name
    assert [tuple(x) for x in loaded.losses] == state.losses
    assert torch.equal(loaded.best_state["head.weight"], state.best_state["head.weight"])
    assert torch.equal(loaded.rng["torch"], state.rng["torch"])


def _loop(
    model_dir, folder, checkpoints_class=Checkpoints, validation=6, loop_class=None, **train
) -> TrainingLoop:
    config = recipe.config(
        model={"name": str(model_dir), "lora_r": 4, "head_init": "random"},
        train={"epochs": 2, "batch_size": 4, "checkpoint_steps": 3, "seed": 1, **train},
    )
    torch.manual_seed(0)
    model, inputs, _ = build_for_training("text", config, 2, False, "cpu")
    texts = ["where is my parcel", "refund me now", "I cannot log in", "money back please"]
    ids = inputs.encode([f"{t} {i}" for i in range(4) for t in texts])
    labels = np.array([0, 1, 0, 1] * 4)
    return (loop_class or TrainingLoop)(
        model,
        Rows(ids, labels),
        Rows(ids[:validation], labels[:validation]),
        config.train,
        inputs,
        "cpu",
        False,
        checkpoints=checkpoints_class(folder),
        show_progress=False,
        validation_figures=validation_figures,
    )


@pytest.mark.parametrize("ema", [0.0, 0.9])
def test_a_loop_restored_mid_epoch_ends_like_an_uninterrupted_one(tiny_model_dir, tmp_path, ema):
    first_save = tmp_path / "first.pt"

    class KeepFirst(Checkpoints):
        def save(self, state: LoopState) -> None:
            super().save(state)
            if not first_save.exists():
                shutil.copy(self.path, first_save)

    straight = _loop(tiny_model_dir, tmp_path / "straight", KeepFirst, ema_decay=ema)
    result = straight.run()
    resumed = _loop(tiny_model_dir, tmp_path / "resumed", ema_decay=ema)
    resumed.checkpoints.folder.mkdir(parents=True)
    shutil.copy(first_save, resumed.checkpoints.path)
    saved = resumed.checkpoints.load()
    assert (saved.step, saved.epoch, saved.batch_in_epoch) == (3, 0, 3)  # mid first epoch
    again = resumed.run(resume=True)
    assert again.history == result.history and again.best_epoch == result.best_epoch
    assert again.losses == result.losses and again.steps == result.steps == 8
    a, b = trainable_state(straight.model), trainable_state(resumed.model)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0)


def test_the_moving_average_is_what_is_delivered_and_never_feeds_training(tiny_model_dir, tmp_path):
    """train.ema_decay: the weights after each step, averaged with the ramped decay, are the
    delivered weights (no validation rows: the last average); training itself is unchanged."""
    after_steps = []

    class Recording(TrainingLoop):
        def _update_ema(self) -> None:
            after_steps.append(trainable_state(self.model))
            super()._update_ema()

    plain = _loop(tiny_model_dir, tmp_path / "plain", validation=0)
    plain_result = plain.run()
    averaged = _loop(
        tiny_model_dir, tmp_path / "ema", validation=0, loop_class=Recording, ema_decay=0.9
    )
    start = trainable_state(averaged.model)
    result = averaged.run()
    assert result.losses == plain_result.losses and len(after_steps) == result.steps == 8
    last = after_steps[-1]
    for name, expected in start.items():
        for step, weights in enumerate(after_steps):
            decay = min(0.9, (1 + step) / (10 + step))
            expected = decay * expected + (1 - decay) * weights[name]
        delivered = trainable_state(averaged.model)[name]
        torch.testing.assert_close(delivered, expected)
        # The plain loop delivers its last weights, which the averaged loop trained too.
        torch.testing.assert_close(trainable_state(plain.model)[name], last[name])
    assert any(not torch.allclose(trainable_state(averaged.model)[n], last[n]) for n in last), (
        "the average should differ from the last weights"
    )


def test_mixup_on_text_is_refused_in_one_line(tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match=r"train.mixup=0.4 mixes images; text inputs cannot"):
        _loop(tiny_model_dir, tmp_path / "mixup", mixup=0.4)
    with pytest.raises(UserError, match=r"Set train.cutmix to 0\.$"):
        _loop(tiny_model_dir, tmp_path / "cutmix", cutmix=1.0)
