"""The cross-validation report: mean ± std tables over the folds, the folds with links to their
own run reports, and ROC and calibration plots of the pooled out-of-fold predictions.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from finetune.evaluation.folds import OPERATING
from finetune.evaluation.metrics import HEADLINE
from finetune.markdown import figure, table
from finetune.reporting.report import (
    cell,
    delivery_lines,
    method_entries,
    metrics_table,
    plot_calibration,
    plot_roc,
)


def write_summary_report(
    folder: Path,
    title: str,
    metrics: dict[str, Any],
    labels: list[str],
    facts: dict[str, Any],
    y_pooled: np.ndarray,
    scores: dict[str, np.ndarray],
) -> None:
    """report.md: mean ± std tables, the folds with links to their reports, pooled plots."""
    entries = method_entries(metrics)
    parts = _results_section(title, metrics, facts)
    if len(labels) == 2:
        parts += _binary_section(metrics, entries)
        parts += _pooled_plots_section(folder, y_pooled, scores)
    parts += _folds_section(metrics, list(entries))
    (folder / "report.md").write_text("\n".join(parts), encoding="utf-8")


def _results_section(title: str, metrics: dict[str, Any], facts: dict[str, Any]) -> list[str]:
    """The title, the run's facts and the mean ± std table of the headline metrics."""
    delivered = [part for line in delivery_lines(metrics) for part in (f"**{line}**", "")]
    return [
        f"# {title}",
        "",
        *delivered,
        table(["", ""], [[f"**{key}**", str(value)] for key, value in facts.items()]),
        "",
        f"## Results: mean ± standard deviation over {metrics['n_folds']} folds",
        "",
        "Every method is fitted on the same training rows and scored on the same held-out fold; "
        "the spread is the sample standard deviation over folds.",
        "",
        table(["method", *HEADLINE], metrics_table(metrics)),
        "",
    ]


def _binary_section(metrics: dict[str, Any], entries: dict[str, dict[str, Any]]) -> list[str]:
    """Two classes: specificity, precision and Brier, then the operating point if any."""
    parts = [
        f"Positive class: {metrics.get('positive_label')}. Recall is sensitivity; Brier "
        "score is the mean squared error of P(positive), lower is better.",
        "",
        table(
            ["method", "specificity", "precision", "Brier"],
            [
                [name, *[cell(m, key) for key in ("specificity", "precision", "brier")]]
                for name, m in entries.items()
            ],
        ),
        "",
    ]
    points = {n: m["operating_point"] for n, m in entries.items() if m.get("operating_point")}
    return parts + (_operating_section(points) if points else [])


def _operating_section(points: dict[str, dict[str, Any]]) -> list[str]:
    """What each method's per-fold threshold for the target recall gives on the held-out folds."""
    target = next(iter(points.values()))["target_recall"]
    return [
        f"Decision threshold for recall {target:g}: each fold chooses it on its own "
        "validation rows (inside its training part); the figures are what that fixed "
        "threshold gives on the held-out fold, so recall misses the target by chance "
        "as it would on new patients:",
        "",
        table(
            ["method", *OPERATING, "thresholds per fold"],
            [
                [
                    n,
                    *[cell(p, key) for key in OPERATING],
                    ", ".join(f"{t:.3f}" for t in p["thresholds"]),
                ]
                for n, p in points.items()
            ],
        ),
        "",
    ]


def _pooled_plots_section(
    folder: Path, y_pooled: np.ndarray, scores: dict[str, np.ndarray]
) -> list[str]:
    """Draws plots/roc.png and plots/calibration.png from the pooled out-of-fold scores."""
    import matplotlib

    matplotlib.use("Agg")
    plots = folder / "plots"
    plots.mkdir(exist_ok=True)
    plot_roc(y_pooled, scores, plots / "roc.png")
    plot_calibration(y_pooled, scores, plots / "calibration.png")
    return [
        "ROC and calibration of the pooled out-of-fold predictions (every row scored by "
        "the fold that held it out):",
        "",
        "![ROC](plots/roc.png)",
        "",
        "![calibration](plots/calibration.png)",
        "",
    ]


def _folds_section(metrics: dict[str, Any], methods: list[str]) -> list[str]:
    """Each fold: its link, sizes, kept epoch and every method's AUC; folds that kept the start."""
    parts = [
        "## Folds",
        "",
        "AUC of each method on each held-out fold; every fold folder is a complete run "
        "(model, report, predictions) that `recipe.load(folder)` reloads.",
        "",
        table(
            ["fold", "rows fitted", "held out", "kept epoch", "delivered", *methods],
            [
                [
                    f"[{fold['folder']}]({fold['folder']}/report.md)",
                    str(fold["n_train"]),
                    str(fold["n_eval"]),
                    str(fold["best_epoch"]),
                    str(fold.get("delivered", "model")),
                    figure((fold.get("finetuned") or fold).get("auc")),
                    *[figure(fold["baselines"][name].get("auc")) for name in methods[1:]],
                ]
                for fold in metrics["folds"]
            ],
        ),
        "",
    ]
    kept_start = [f["fold"] for f in metrics["folds"] if f["best_epoch"] == 0]
    if kept_start:
        parts += [
            f"In fold(s) {', '.join(map(str, kept_start))} the validation rows (or inner folds) "
            "preferred the starting point (epoch 0: the probe on frozen embeddings, or the "
            "hybrid's logistic regression) to every fine-tuned epoch.",
            "",
        ]
    return parts
