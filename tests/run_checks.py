"""Checks on a finished run folder shared by the end-to-end tests (not a test module itself)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, brier_score_loss, f1_score, recall_score, roc_auc_score

MODEL = "fine-tuned (LoRA)"


def check_reported_figures(folder: Path) -> dict[str, Any]:
    """The headline figures in metrics.json, for the model (`finetuned`), every baseline and
    the delivered model (top level), are the ones the saved evaluation probabilities
    (scores.npz) give, recomputed here with scikit-learn; and the predictions file agrees with
    the delivered model's probabilities. Returns the metrics."""
    metrics = json.loads((folder / "metrics.json").read_text())
    labels = json.loads((folder / "labels.json").read_text())["labels"]
    saved = np.load(folder / "scores.npz")
    y = saved["y_true"]
    assert metrics["n_eval"] == len(y) > 0
    assert set(saved.files) == {"y_true", MODEL, "delivered", *metrics["baselines"]}
    methods = [(MODEL, metrics["finetuned"]), *metrics["baselines"].items()]
    for name, figures in [*methods, ("delivered", metrics)]:
        proba = saved[name]
        assert proba.shape == (len(y), len(labels)), name
        pred = proba.argmax(1)
        assert figures["accuracy"] == pytest.approx(accuracy_score(y, pred)), name
        if len(labels) == 2:
            pos = labels.index(metrics["positive_label"])
            is_pos = y == pos
            assert figures["recall"] == pytest.approx(recall_score(is_pos, pred == pos)), name
            assert figures["auc"] == pytest.approx(roc_auc_score(is_pos, proba[:, pos])), name
        else:
            present = sorted(set(y))
            macro_f1 = f1_score(y, pred, labels=present, average="macro", zero_division=0)
            assert figures["f1"] == pytest.approx(macro_f1), name
    if len(labels) == 2:
        proba = saved["delivered"]
        called = proba.argmax(1) == pos
        assert metrics["specificity"] == pytest.approx(recall_score(~is_pos, ~called))
        assert metrics["brier"] == pytest.approx(brier_score_loss(is_pos, proba[:, pos]))
    predictions = folder / "predictions.csv"
    if predictions.is_file():
        import pandas as pd

        written = pd.read_csv(predictions, keep_default_na=False, dtype=str)
        assert len(written) == len(y)
        delivered = saved["delivered"].argmax(1)
        assert written["predicted_label"].tolist() == [labels[k] for k in delivered]
    return metrics
