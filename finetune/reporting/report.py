"""The run report: a Markdown page with plots, the same for every recipe.

It reads only what the run folder already holds (metrics, history, confusion matrix), so a
report can be rebuilt from a finished run without the model.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from finetune.evaluation.metrics import HEADLINE, MODEL_NAME, finetuned_figures
from finetune.evaluation.selection import BLEND, PROBE, blend_name, is_blend, is_comparison
from finetune.markdown import figure, table


def cell(figures: dict[str, Any], key: str) -> str:
    """A figure, with its spread when it has one (`<key>_std`, from cross-validation)."""
    value, std = figures.get(key), figures.get(f"{key}_std")
    return figure(value) if value is None or std is None else f"{value:.3f} ± {std:.3f}"


def method_entries(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each method's own figures: the fine-tuned model's (`finetuned`), then the baselines',
    then its blends with baselines (eval.blend)."""
    return {
        MODEL_NAME: finetuned_figures(metrics),
        **metrics.get("baselines", {}),
        **metrics.get("blends", {}),
    }


def delivered_row_name(metrics: dict[str, Any]) -> str | None:
    """The name of a row for the delivered model when its figures are not one method's own
    (a baseline or a calibrated model is delivered; cross-validation: delivery varied by fold);
    None when the run delivers its fine-tuned model as it is (or predates delivery)."""
    delivered = metrics.get("delivered")
    if not delivered:
        return None
    calibrated = (metrics.get("calibration") or {}).get("method", "none") != "none"
    if "counts" in delivered:  # cross-validation: one choice per fold
        only_model = set(delivered["counts"]) == {"model"}
        return None if only_model and not delivered.get("calibrated") else "delivered (per fold)"
    name = MODEL_NAME if delivered.get("name", "model") == "model" else delivered["name"]
    if name == MODEL_NAME and not calibrated:
        return None
    method = metrics["calibration"]["method"] if calibrated else ""
    return f"delivered: {name}" + (f" + {method}" if method else "")


def metrics_table(metrics: dict[str, Any]) -> list[list[str]]:
    """Rows of (method, accuracy, recall, F1, AUC): the delivered model when its figures are
    not one method's own, the fine-tuned model, then baselines.

    Cross-validated figures read `mean ± std`.
    """
    delivered = delivered_row_name(metrics)
    rows = [[delivered, *[cell(metrics, k) for k in HEADLINE]]] if delivered else []
    for name, figures in method_entries(metrics).items():
        rows.append([name, *[cell(figures, k) for k in HEADLINE]])
    return rows


# Fonts with Chinese (and Japanese) glyphs, by family name, tried when the default font lacks
# a label's characters (matplotlib's bundled DejaVu Sans has no CJK).
CJK_FONTS = (
    "Noto Sans CJK SC",
    "Noto Sans SC",
    "Source Han Sans SC",
    "WenQuanYi Zen Hei",
    "WenQuanYi Micro Hei",
    "Droid Sans Fallback",
    "SimHei",
    "Microsoft YaHei",
    "PingFang SC",
    "Heiti SC",
    "AR PL UMing CN",
)


@functools.cache
def _glyphs(font_path: str) -> frozenset[int]:
    from matplotlib.ft2font import FT2Font

    return frozenset(FT2Font(font_path).get_charmap())


def plot_labels(labels: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Class labels as the plots can draw them, and the matplotlib settings to draw them with.

    As they are when the default font has their characters, else in an installed font that
    has them (CJK_FONTS), else numbered `#1`, `#2`, ... (the report then prints which number
    is which label): a label of missing glyphs would be drawn as empty boxes."""
    from matplotlib import font_manager

    needed = {ord(ch) for label in labels for ch in label if not ch.isspace()}
    if needed <= _glyphs(font_manager.findfont(font_manager.FontProperties())):
        return list(labels), {}
    installed = {font.name: font.fname for font in font_manager.fontManager.ttflist}
    for family in CJK_FONTS:
        if family in installed and needed <= _glyphs(installed[family]):
            return list(labels), {"font.family": "sans-serif", "font.sans-serif": [family]}
    return [f"#{i}" for i in range(1, len(labels) + 1)], {}


def label_key(labels: list[str]) -> list[str]:
    """The report's table of numbered labels, when the plots had to number them."""
    shown, _ = plot_labels(labels)
    if shown == list(labels):
        return []
    return [
        "No installed font has these labels' characters, so the plots number them:",
        "",
        table(["in the plots", "label"], [list(pair) for pair in zip(shown, labels, strict=True)]),
        "",
    ]


def delivery_lines(metrics: dict[str, Any]) -> list[str]:
    """What the run serves and why, for the first lines of the console and the report."""
    delivered = metrics.get("delivered")
    if not delivered:
        return []
    if "counts" in delivered:
        counts = ", ".join(f"{n} in {c}" for n, c in delivered["counts"].items())
        chosen_on = delivered.get("chosen_on", "each fold's validation rows")
        lines = [f"Delivered model, chosen on {chosen_on}: {counts} fold(s)."]
        calibration = metrics.get("calibration")
        if calibration and delivered.get("calibrated"):
            methods = ", ".join(f"{n} in {c}" for n, c in calibration["methods"].items())
            lines.append(
                f"Calibration, chosen per fold: {methods}; held-out Brier score "
                f"{cell(calibration, 'brier_before')} before, "
                f"{cell(calibration, 'brier_after')} after."
            )
        return lines
    if delivered.get("note"):
        lines = [delivered["note"]]
    elif "validation" in delivered:
        figures = delivered["validation"]
        # A recipe may name the fine-tuned model's variant (recommendation: the re-ranker).
        mine = delivered.get("method") if delivered.get("method") in figures else "model"
        others = [
            v
            for n, v in figures.items()
            if n not in ("model", mine) and not is_blend(n) and v is not None
        ]
        lines = [
            f"Delivered: the fine-tuned model; no baseline beat it on {_deciding(delivered)} "
            f"by more than {delivered['margin']} {delivered['metric']} (fine-tuned "
            f"{figure(figures.get(mine))}, best baseline {figure(max(others, default=None))})."
        ]
    else:
        lines = [f"Delivered: the fine-tuned model ({delivered.get('rule', '')})."]
    lines += comparison_lines(delivered)
    calibration = metrics.get("calibration")
    if calibration and calibration.get("method") != "none":
        lines.append(
            f"Its probabilities are calibrated ({calibration['method']}, fitted on the "
            f"{calibration['fitted_on']}); evaluation Brier score "
            f"{figure(calibration['brier_before'])} before, "
            f"{figure(calibration['brier_after'])} after."
        )
    if "chosen_on" in delivered:
        parts = ["Delivered model"]
        parts += ["calibration"] if "calibration" in metrics else []
        parts += ["threshold"] if metrics.get("operating_point") else []
        lines.append(f"{how_chosen(parts)} chosen on {rows_that_chose(delivered['chosen_on'])}.")
    return lines


def _deciding(delivered: dict[str, Any]) -> str:
    if "out_of_fold" in delivered:
        return "out-of-fold predictions of the training rows"
    return "the validation rows"


def comparison_lines(delivered: dict[str, Any]) -> list[str]:
    """The frozen probe's blends beside the fine-tuned model's (eval.blend), on the rows that
    chose: a blend's gain is fine-tuning's only as far as it beats the probe's."""
    figures = delivered.get("validation", {})
    lines = []
    for name, value in figures.items():
        if not is_comparison(name):
            continue
        baseline = name.split(BLEND, 1)[1]
        lines.append(
            f"For comparison, never served: the frozen probe ({PROBE}) blended with "
            f"{baseline} the same way scores {delivered['metric']} {figure(value)} on "
            f"{_deciding(delivered)}, against {figure(figures.get(blend_name(baseline)))} for "
            f"the fine-tuned model blended with it and {figure(figures.get('model'))} alone."
        )
    return lines


def how_chosen(parts: list[str]) -> str:
    """'A', 'A and B', 'A, B and C'."""
    return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} and {parts[-1]}"


def rows_that_chose(chosen_on: str) -> str:
    """metrics.json `delivered.chosen_on` in words ('validation (40 rows)': '40 validation
    rows'; out-of-fold choices already say it)."""
    if chosen_on.startswith("validation (") and chosen_on.endswith(" rows)"):
        return f"{chosen_on[len('validation (') : -len(' rows)')]} validation rows"
    return chosen_on


def plot_confusion(matrix: np.ndarray, labels: list[str], path: Path) -> None:
    import matplotlib.pyplot as plt

    labels, settings = plot_labels(labels)
    with plt.rc_context(settings):
        _draw_confusion(plt, matrix, labels, path)


def _draw_confusion(plt: Any, matrix: np.ndarray, labels: list[str], path: Path) -> None:

    totals = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, totals, out=np.zeros_like(matrix, dtype=float), where=totals > 0)
    # At most 16 inches: a 77-class matrix at 0.35 inch each was a 3,300-pixel image that
    # raised peak memory (docs/benchmarks.md, "Memory"); smaller print keeps labels readable.
    size = min(16.0, max(5.0, 0.35 * len(labels) + 2))
    fontsize = 9 if len(labels) <= 20 else 7 if len(labels) <= 40 else 5
    fig, ax = plt.subplots(figsize=(size + 1, size))
    image = ax.imshow(normalised, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(len(labels)), labels, fontsize=fontsize)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if len(labels) <= 20:
        for i in range(len(labels)):
            for j in range(len(labels)):
                if matrix[i, j]:
                    colour = "white" if normalised[i, j] > 0.5 else "black"
                    ax.text(
                        j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7, color=colour
                    )
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of true class")
    ax.set_title("Confusion matrix (evaluation split)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_training(losses: list[list[float]], history: list[dict[str, Any]], path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if losses:
        steps, values = zip(*losses, strict=True)
        ax.plot(steps, values, label="train loss (10-step mean)", color="tab:blue")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    with_val = [h for h in history if "val_f1" in h]
    if with_val:
        other = ax.twinx()
        other.plot(
            [h["step"] for h in with_val],
            [h["val_f1"] for h in with_val],
            "o-",
            color="tab:orange",
            label="validation macro-F1",
        )
        other.set_ylabel("validation macro-F1")
    fig.legend(loc="lower center", ncol=2, fontsize=8)
    ax.set_title("Training")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_comparison(metrics: dict[str, Any], path: Path) -> None:
    import matplotlib.pyplot as plt

    entries = method_entries(metrics)
    names = list(entries)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    width = 0.8 / len(names)
    for i, figures in enumerate(entries.values()):
        values = [figures.get(k) or 0.0 for k in HEADLINE]
        ax.bar(np.arange(len(HEADLINE)) + i * width, values, width, label=names[i])
    ax.set_xticks(np.arange(len(HEADLINE)) + width * (len(names) - 1) / 2, HEADLINE)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Fine-tuned model vs baselines (evaluation split)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_roc(y_true: np.ndarray, scores: dict[str, np.ndarray], path: Path) -> None:
    """ROC curves of P(positive) for the model and each baseline (binary tasks)."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, proba in scores.items():
        fpr, tpr, _ = roc_curve(y_true == 1, proba[:, 1])
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax.set_xlabel("false positive rate (1 - specificity)")
    ax.set_ylabel("true positive rate (recall)")
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("ROC (evaluation split)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_calibration(y_true: np.ndarray, scores: dict[str, np.ndarray], path: Path) -> None:
    """Reliability diagram: mean predicted P(positive) against the observed rate, per bin."""
    import matplotlib.pyplot as plt
    from sklearn.calibration import calibration_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, proba in scores.items():
        observed, predicted = calibration_curve(
            y_true == 1, proba[:, 1], n_bins=10, strategy="quantile"
        )
        ax.plot(predicted, observed, "o-", label=name, markersize=3)
    ax.plot([0, 1], [0, 1], ":", color="grey", label="perfectly calibrated")
    ax.set_xlabel("mean predicted probability (decile bins)")
    ax.set_ylabel("observed share of positives")
    ax.legend(fontsize=8, loc="upper left")
    ax.set_title("Calibration (evaluation split)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def binary_section(
    metrics: dict[str, Any], y_true: np.ndarray, scores: dict[str, np.ndarray], plots: Path
) -> list[str]:
    """Sensitivity/specificity, calibration and the operating point of a two-class task."""
    plot_roc(y_true, scores, plots / "roc.png")
    plot_calibration(y_true, scores, plots / "calibration.png")
    entries = method_entries(metrics)
    delivered = delivered_row_name(metrics)
    if delivered:
        entries = {delivered: metrics, **entries}
    rows = [
        [name, *[figure(m.get(k)) for k in ("recall", "specificity", "precision", "brier")]]
        for name, m in entries.items()
    ]
    parts = [
        f"## Two-class view (positive class: {metrics.get('positive_label')})",
        "",
        "Recall is sensitivity. Brier score: mean squared error of P(positive), lower is better.",
        "",
        table(["method", "recall", "specificity", "precision", "Brier"], rows),
        "",
    ]
    points = {n: m.get("operating_point") for n, m in entries.items() if m.get("operating_point")}
    if points:
        target = next(iter(points.values()))["target_recall"]
        parts += [
            f"Decision threshold for recall {target:g}, chosen on the "
            f"{next(iter(points.values()))['chosen_on']}, never on the evaluation rows; the "
            "figures are what that fixed threshold gives on the evaluation rows (recall lands "
            "near the target, not on it, as it would on new data):",
            "",
            table(
                ["method", "threshold", "validation recall", "recall", "specificity", "precision"],
                [
                    [
                        n,
                        *[
                            figure(p[k])
                            for k in (
                                "threshold",
                                "validation_recall",
                                "recall",
                                "specificity",
                                "precision",
                            )
                        ],
                    ]
                    for n, p in points.items()
                ],
            ),
            "",
        ]
    parts += calibration_lines(metrics.get("calibration"))
    parts += ["![ROC](plots/roc.png)", "", "![calibration](plots/calibration.png)", ""]
    return parts


def calibration_lines(calibration: dict[str, Any] | None) -> list[str]:
    """How the delivered model's probabilities were calibrated, and what it did to the
    evaluation rows' Brier score and log-loss."""
    if not calibration:
        return []
    chosen = calibration["method"]
    losses = calibration.get("cross_fitted_log_loss")
    how = (
        "chosen by the lowest log-loss cross-fitted on the validation rows ("
        + ", ".join(f"{m} {v:.4f}" for m, v in losses.items())
        + ")"
        if losses
        else f"as set (eval.calibrate: {calibration['setting']})"
    )
    note = f" {calibration['note']}." if calibration.get("note") else ""
    return [
        f"Calibration of the delivered model: **{chosen}**, fitted on the "
        f"{calibration['fitted_on']}, {how}.{note} On the evaluation rows (reported, never "
        f"used): Brier score {figure(calibration['brier_before'])} before, "
        f"{figure(calibration['brier_after'])} after; log-loss "
        f"{figure(calibration['log_loss_before'])} before, "
        f"{figure(calibration['log_loss_after'])} after.",
        "",
    ]


def write_report(
    folder: Path,
    title: str,
    metrics: dict[str, Any],
    history: list[dict[str, Any]],
    losses: list[list[float]],
    matrix: np.ndarray,
    labels: list[str],
    facts: dict[str, Any],
    notes: list[str],
    y_true: np.ndarray | None = None,
    scores: dict[str, np.ndarray] | None = None,
    sections: list[str] | None = None,
) -> None:
    """Write report.md and its plots into `folder` (plots under plots/).

    `scores` (class probabilities per method, the model first) with `y_true` add ROC and
    calibration plots for two-class tasks; `sections` are a recipe's own Markdown sections.
    """
    import matplotlib

    matplotlib.use("Agg")  # headless: CI and servers have no display
    plots = folder / "plots"
    plots.mkdir(exist_ok=True)
    plot_confusion(matrix, labels, plots / "confusion_matrix.png")
    plot_training(losses, history, plots / "training.png")
    plot_comparison(metrics, plots / "comparison.png")

    average = "macro over classes" if metrics.get("average") == "macro" else "positive class"
    per_class = [
        [label, *[figure(v[k]) for k in ("precision", "recall", "f1", "auc")], str(v["support"])]
        for label, v in metrics["per_class"].items()
    ]
    epochs = [
        [
            figure(h.get(k))
            for k in ("epoch", "step", "train_loss", "val_loss", "val_accuracy", "val_f1")
        ]
        for h in history
    ]
    parts = [f"# {title}", ""]
    for line in delivery_lines(metrics):
        parts += [f"**{line}**", ""]
    parts += [
        table(["", ""], [[f"**{k}**", str(v)] for k, v in facts.items()]),
        "",
        "## Results on the evaluation split",
        "",
        f"Recall, F1 and AUC: {average}"
        + (" (one-vs-rest AUC)." if metrics.get("average") == "macro" else "."),
        "Baselines are fitted on exactly the rows the model trains on and scored on the same "
        "split.",
        "",
        table(["method", *HEADLINE], metrics_table(metrics)),
        "",
        "![comparison](plots/comparison.png)",
        "",
    ]
    if scores and y_true is not None and len(labels) == 2:
        parts += binary_section(metrics, y_true, scores, plots)
    parts += list(sections or [])
    parts += [
        "## Training",
        "",
        table(["epoch", "step", "train loss", "val loss", "val accuracy", "val macro-F1"], epochs),
        "",
        "![training](plots/training.png)",
        "",
        "## Per class",
        "",
        "Of the delivered model." if delivered_row_name(metrics) else "",
        table(["class", "precision", "recall", "F1", "AUC", "support"], per_class),
        "",
        "![confusion matrix](plots/confusion_matrix.png)",
        "",
        *label_key(labels),
    ]
    if notes:
        parts += ["## Notes", "", *[f"- {note}" for note in notes], ""]
    (folder / "report.md").write_text("\n".join(parts), encoding="utf-8")
