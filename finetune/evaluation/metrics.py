"""Accuracy, recall, F1 and AUC for every recipe, model and baseline alike (scikit-learn).

Binary tasks report recall, F1 and AUC of the positive class. Multiclass tasks report macro
precision, recall and F1 over the classes present in the evaluation labels *or* in the
predictions, as scikit-learn's `precision_recall_fscore_support(average="macro")` does without
`labels=`: a class absent from a small evaluation split and never predicted has nothing to
measure, so it is left out rather than counted as zero; a class the model predicts that the
split lacks counts, since each of those predictions is wrong (precision 0; its recall and F1
count as 0, as in scikit-learn). The macro one-vs-rest AUC is over the classes present in the
evaluation labels (it is undefined for the others).

`evaluate_module_path()` is the same definitions as a local Hugging Face `evaluate` module, so
a `transformers.Trainer(compute_metrics=...)` gets exactly the numbers of a run's report.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
    roc_curve,
)

HEADLINE = ("accuracy", "recall", "f1", "auc")
# The fine-tuned model's name among the methods: its key in every scores mapping (evaluation
# probabilities, EvalContext.scores, scores.npz) and its row in reports; baselines go by theirs.
MODEL_NAME = "fine-tuned (LoRA)"


def default_primary_metric(n_classes: int) -> str:
    """Macro-F1 for multiclass tasks (one-vs-rest AUC is near 1 for every method on many
    classes, so it cannot rank them); the positive class's AUC for two-class tasks (F1 at the
    0.5 threshold depends on a threshold a risk model is not used at)."""
    return "auc" if n_classes == 2 else "f1"


def classification_metrics(
    y_true: np.ndarray | list[int],
    proba: np.ndarray,
    label_names: list[str],
    positive: int | None = None,
) -> dict[str, Any]:
    """Headline metrics plus per-class figures from true label ids and class probabilities.

    `positive` picks the positive class of a binary task (default: the second label).
    """
    y_true = np.asarray(y_true, dtype=int)
    proba = np.asarray(proba, dtype=np.float64)
    n_classes = len(label_names)
    if proba.shape != (len(y_true), n_classes):
        raise ValueError(f"proba has shape {proba.shape}, expected {(len(y_true), n_classes)}")
    y_pred = proba.argmax(axis=1)
    all_ids = list(range(n_classes))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=all_ids, zero_division=0
    )
    class_auc = [_one_vs_rest_auc(y_true, proba[:, k], k) for k in all_ids]
    in_truth = [k for k in all_ids if support[k] > 0]
    # scikit-learn's macro average without labels=: the truth's classes and the predicted ones.
    averaged = sorted(set(in_truth) | set(y_pred.tolist()))

    if n_classes == 2:
        pos = 1 if positive is None else positive
        is_pos = y_true == pos
        headline = {
            "recall": float(recall[pos]),
            "f1": float(f1[pos]),
            "precision": float(precision[pos]),
            "auc": class_auc[pos],
            "positive_label": label_names[pos],
            # Sensitivity's twin: the share of negatives correctly called negative.
            "specificity": float(recall[1 - pos]),
            "brier": float(brier_score_loss(is_pos, proba[:, pos])) if len(y_true) else None,
        }
    else:
        aucs = [class_auc[k] for k in in_truth if class_auc[k] is not None]
        headline = {
            "recall": float(np.mean(recall[averaged])) if averaged else 0.0,
            "f1": float(np.mean(f1[averaged])) if averaged else 0.0,
            "precision": float(np.mean(precision[averaged])) if averaged else 0.0,
            "auc": float(np.mean(aucs)) if aucs else None,
        }
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        **headline,
        "average": "binary" if n_classes == 2 else "macro",
        "n": int(len(y_true)),
        "per_class": {
            label_names[k]: {
                "precision": float(precision[k]),
                "recall": float(recall[k]),
                "f1": float(f1[k]),
                "auc": class_auc[k],
                "support": int(support[k]),
            }
            for k in all_ids
        },
    }


def _one_vs_rest_auc(y_true: np.ndarray, scores: np.ndarray, k: int) -> float | None:
    is_k = y_true == k
    if is_k.all() or not is_k.any():
        return None  # undefined without both positives and negatives
    return float(roc_auc_score(is_k, scores))


def confusion(y_true: np.ndarray | list[int], proba: np.ndarray, n_classes: int) -> np.ndarray:
    return confusion_matrix(
        np.asarray(y_true), np.asarray(proba).argmax(axis=1), labels=list(range(n_classes))
    )


def finetuned_figures(metrics: dict[str, Any]) -> dict[str, Any]:
    """The fine-tuned model's own figures in a run's metrics.json: its `finetuned` entry (the
    top level holds the delivered model's, which may be a baseline or calibrated); runs written
    before delivery existed kept them at the top level."""
    return metrics.get("finetuned") or metrics


def headline(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The four numbers every table shows."""
    return {name: metrics.get(name) for name in HEADLINE}


def choose_threshold(
    y_true: np.ndarray | list[int], scores: np.ndarray, target_recall: float, positive: int = 1
) -> float | None:
    """The highest threshold on P(positive) whose recall on these rows reaches `target_recall`
    (None without both classes). Call it on validation rows, never on the rows it is judged on.
    """
    y = np.asarray(y_true) == positive
    scores = np.asarray(scores, dtype=np.float64)
    if y.all() or not y.any():
        return None
    # Every distinct score is a threshold (drop_intermediate=False), from high to low after
    # roc_curve's leading inf (nothing called positive). Recall first reaches the target where it
    # rises, at a positive's score; that highest such threshold keeps the most specificity.
    _, recall, thresholds = roc_curve(y, scores, drop_intermediate=False)
    reached = np.flatnonzero(recall[1:] >= target_recall - 1e-12)
    if not reached.size:  # a target above 1: the lowest positive score, as near as it gets
        return float(scores[y].min())
    return float(thresholds[1 + reached[0]])


def at_threshold(
    y_true: np.ndarray | list[int], scores: np.ndarray, threshold: float, positive: int = 1
) -> dict[str, float | None]:
    """Recall, specificity and precision of calling P(positive) >= `threshold` positive."""
    y = np.asarray(y_true) == positive
    called = np.asarray(scores, dtype=np.float64) >= threshold
    return {
        "recall": float(called[y].mean()) if y.any() else None,
        "specificity": float((~called[~y]).mean()) if (~y).any() else None,
        "precision": float(called[y].sum() / called.sum()) if called.any() else None,
    }


def operating_point(
    y_val: np.ndarray,
    val_scores: np.ndarray,
    y_eval: np.ndarray,
    eval_scores: np.ndarray,
    target_recall: float,
    positive: int = 1,
) -> dict[str, Any] | None:
    """A decision threshold chosen on validation rows, then judged on the evaluation rows.

    The evaluation recall is whatever that fixed threshold gives there: near the target when
    the validation rows resemble the evaluation rows, not equal to it by construction.
    """
    threshold = choose_threshold(y_val, val_scores, target_recall, positive)
    if threshold is None:
        return None
    return {
        "target_recall": float(target_recall),
        "threshold": threshold,
        "chosen_on": f"validation ({len(y_val)} rows)",
        "validation_recall": at_threshold(y_val, val_scores, threshold, positive)["recall"],
        **at_threshold(y_eval, eval_scores, threshold, positive),
    }


def validation_figures(proba: np.ndarray, labels: np.ndarray) -> dict[str, float | None]:
    """Log-loss, accuracy, macro-F1 and AUC of the validation rows (AUC as in the report: the
    positive class's for two classes, else macro one-vs-rest; None where undefined): what the
    training loop ranks epochs by (`train.select_metric`)."""
    true_proba = np.clip(proba[np.arange(len(labels)), labels], 1e-12, 1)
    names = [str(k) for k in range(proba.shape[1])]
    return {
        "val_loss": float(-np.mean(np.log(true_proba))),
        "val_accuracy": float((proba.argmax(1) == labels).mean()),
        "val_f1": float(f1_score(labels, proba.argmax(1), average="macro")),
        "val_auc": classification_metrics(labels, proba, names)["auc"],
    }


def evaluate_module_path() -> str:
    """Folder of the `evaluate` module computing `classification_metrics`' figures.

    `evaluate.load(evaluate_module_path())` loads it from disk (no network); see the module's
    docstring for its arguments.
    """
    from importlib.resources import files

    return str(files("finetune.evaluation") / "metric_modules" / "finetune_classification")
