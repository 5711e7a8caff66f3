"""The best epoch is chosen on a validation figure that fits the task (train.select_metric)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from finetune.errors import UserError
from finetune.evaluation.metrics import validation_figures
from finetune.modeling.classifiers import build_for_training
from finetune.training import loop as train_module
from recipes.customer_service import recipe

VAL_LABELS = np.array([0, 0, 0, 0, 1, 1, 1, 1])


def binary(p_positive: list[float]) -> np.ndarray:
    p = np.array(p_positive)
    return np.column_stack([1 - p, p])


# Validation probabilities at the start (epoch 0) and after epochs 1 and 2.
SCRIPT = [
    # Start: uninformative (AUC 0.5, everything called negative).
    binary([0.4] * 8),
    # Epoch 1: right at the 0.5 threshold more often (macro-F1 0.75) but ranks worse (AUC 0.75).
    binary([0.6, 0.1, 0.1, 0.1, 0.7, 0.7, 0.7, 0.05]),
    # Epoch 2: ranks every positive above every negative (AUC 1.0), all below 0.5 (F1 0.33).
    binary([0.1, 0.1, 0.1, 0.1, 0.3, 0.3, 0.3, 0.3]),
]


def run_fit(model_dir, monkeypatch, select_metric: str):
    """Two epochs of `fit` on a tiny model whose validation probabilities follow SCRIPT; returns
    the result, the trainable weights at each validation, and the weights after fit."""
    config = recipe.config(
        model={"name": str(model_dir), "lora_r": 4, "head_init": "random"},
        train={"epochs": 2, "batch_size": 4, "select_metric": select_metric, "seed": 0},
    )
    model, inputs, _ = build_for_training("text", config, 2, False, "cpu")
    texts = ["where is my parcel", "refund me now", "I cannot log in", "money back please"] * 2
    ids = inputs.encode(texts)
    snapshots = []

    def scripted(model, *args, **kwargs):
        snapshots.append(train_module.trainable_state(model))
        return SCRIPT[len(snapshots) - 1]

    monkeypatch.setattr(train_module, "predict_proba", scripted)
    result = train_module.fit(
        model,
        ids,
        np.array([0, 1, 0, 1, 1, 0, 1, 0]),
        ids,
        VAL_LABELS,
        config.train,
        inputs,
        "cpu",
        False,
        show_progress=False,
        validation_figures=validation_figures,
    )
    assert len(snapshots) == 3
    return result, snapshots, train_module.trainable_state(model)


def test_binary_task_keeps_the_auc_best_epoch_not_the_f1_best(tiny_model_dir, monkeypatch):
    history = [validation_figures(p, VAL_LABELS) for p in SCRIPT]
    assert history[1]["val_f1"] > history[2]["val_f1"]  # F1 at 0.5 prefers epoch 1...
    assert history[2]["val_auc"] > history[1]["val_auc"]  # ...AUC prefers epoch 2
    result, snapshots, restored = run_fit(tiny_model_dir, monkeypatch, "auto")
    assert result.select_metric == "auc"
    assert result.best_epoch == 2
    assert [record["val_auc"] for record in result.history] == [0.5, 0.75, 1.0]
    # The weights kept are the ones that were validated at the chosen epoch.
    for name, tensor in restored.items():
        torch.testing.assert_close(tensor, snapshots[2][name], rtol=0, atol=0)


def test_select_metric_f1_keeps_the_f1_best_epoch(tiny_model_dir, monkeypatch):
    result, snapshots, restored = run_fit(tiny_model_dir, monkeypatch, "f1")
    assert result.select_metric == "f1" and result.best_epoch == 1
    assert any(not torch.equal(restored[n], snapshots[2][n]) for n in restored)
    for name, tensor in restored.items():
        torch.testing.assert_close(tensor, snapshots[1][name], rtol=0, atol=0)


def test_default_select_metric_by_task_and_bad_values():
    assert train_module.selection_metric("auto", 2) == "auc"
    assert train_module.selection_metric("auto", 14) == "f1"
    assert train_module.selection_metric("loss", 2) == "loss"
    with pytest.raises(UserError, match="train.select_metric must be one of"):
        recipe.config(train={"select_metric": "accuracy"})
