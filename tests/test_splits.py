"""The evaluation split never moves with the training seed; overlap between splits is reported."""

from __future__ import annotations

import pandas as pd
import pytest

from finetune.data.tables import shared_texts
from finetune.errors import UserError
from recipes.customer_service import recipe


def _held_out(path, seed: int, split_seed: int | None = None) -> list[str]:
    data = {"path": str(path)}
    if split_seed is not None:
        data["split_seed"] = split_seed
    config = recipe.config(data=data, train={"seed": seed})
    return list(recipe.split(config).evaluation.texts)


def test_training_seed_does_not_move_the_evaluation_split(small_csvs):
    train_csv, _ = small_csvs
    assert _held_out(train_csv, seed=1) == _held_out(train_csv, seed=2)
    assert _held_out(train_csv, seed=1) != _held_out(train_csv, seed=1, split_seed=7)


def test_cross_validation_folds_do_not_move_with_the_training_seed(small_csvs, monkeypatch):
    from finetune import crossval

    train_csv, _ = small_csvs
    seen = []
    monkeypatch.setattr(
        crossval, "fold_indices", lambda labels, k, seed: seen.append(seed) or 1 / 0
    )
    for seed in (1, 2):
        config = recipe.config(
            data={"path": str(train_csv)}, train={"seed": seed}, eval={"folds": 3}
        )
        with pytest.raises(ZeroDivisionError):
            crossval.cross_validate(recipe, config, show_progress=False)
    assert seen == [42, 42]


def test_shared_texts_counts_evaluation_texts_seen_in_training():
    train = ["Where is my parcel?", "refund please", "card declined"]
    evaluation = ["where  is my PARCEL?", "new question", "refund please", "refund please"]
    found = shared_texts(train, evaluation)
    assert found["count"] == 3 and found["share"] == 0.75
    assert found["examples"] == ["where  is my PARCEL?", "refund please"]
    assert shared_texts(train, ["something else"]) is None


def test_run_reports_overlap_between_training_and_evaluation(tiny_model_dir, tmp_path):
    rows = [
        {"text": f"ticket template {i % 4} about {lab}", "label": lab}
        for i in range(24)
        for lab in ("refund", "delivery")
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "t.csv", index=False)
    config = recipe.config(
        data={"path": str(tmp_path / "t.csv"), "positive_label": "refund"},
        model={"name": str(tiny_model_dir), "lora_r": 4},
        train={"max_steps": 2},
        output=str(tmp_path / "run"),
    )
    run = recipe.train(config, show_progress=False)
    overlap = run.metrics["overlap"]
    assert overlap["count"] == run.metrics["n_eval"]  # every held-out text is a template copy
    assert "also occur in the training data" in (run.folder / "report.md").read_text()


def test_target_recall_needs_validation_rows(tiny_model_dir, tmp_path):
    rows = [{"text": f"text {i}", "label": "yes" if i % 2 else "no"} for i in range(30)]
    pd.DataFrame(rows).to_csv(tmp_path / "b.csv", index=False)
    config = recipe.config(
        data={"path": str(tmp_path / "b.csv"), "val_fraction": 0.0},
        model={"name": str(tiny_model_dir)},
        eval={"target_recall": 0.9},
        output=str(tmp_path / "run"),
    )
    with pytest.raises(UserError, match="chosen on validation rows"):
        recipe.train(config, show_progress=False)
