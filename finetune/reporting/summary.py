"""One evaluation report from many run folders: what CI publishes and what a buyer reads.

`finetune report RUN [RUN ...] --output DIR` writes `report.md` and a self-contained
`report.html` (plots embedded), built only from what the run folders hold (config.yaml,
metrics.json, environment.json, scores.npz, plots/), so it never needs a model. With a floors
file it also checks every run against the minimum metrics kept in the repo, so a regression
turns CI red.

The summary table's figures are each run's delivered model's (what it serves: the fine-tuned
model, or a baseline that beat it on validation rows, calibrated or not), with the delivered
method named; each run's own table shows every method's own figures. Floors read the
fine-tuned model's own figures (`finetuned` in metrics.json): they guard the recipe's model
against regressions, which a delivered baseline would otherwise hide. A floor named
`delivered.<metric>` reads what the run serves instead.
"""

from __future__ import annotations

import base64
import html
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finetune.errors import UserError
from finetune.evaluation.metrics import (
    HEADLINE,
    MODEL_NAME,
    default_primary_metric,
    finetuned_figures,
)
from finetune.files import staged
from finetune.markdown import figure, table

SUMMARY_COLUMNS = (
    "run",
    "recipe",
    "dataset",
    "model",
    "quant",
    *HEADLINE,
    "best baseline",
    "delivered",
    "train time",
    "peak memory",
)


@dataclass
class RunRecord:
    """What the summary needs from one finished run folder."""

    folder: Path
    name: str
    config: dict[str, Any]
    metrics: dict[str, Any]
    environment: dict[str, Any]
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    y_true: np.ndarray | None = None

    @property
    def recipe(self) -> str:
        return self.config.get("recipe", "?")

    @property
    def floor_key(self) -> str:
        """The run's entry in a floors file: its recipe, or `recipe/task` for a recipe with
        tasks (customer-service/intent, customer-service/reply), whose figures differ."""
        task = (self.config.get("options") or {}).get("task")
        return f"{self.recipe}/{task}" if task else self.recipe

    @property
    def dataset(self) -> str:
        return self.metrics.get("eval_source") or self.config.get("data", {}).get("path") or "?"

    @property
    def primary_metric(self) -> str:
        """The recipe's metric for ranking methods, as the run saved it (older runs: the
        task's default)."""
        saved = self.metrics.get("primary_metric")
        if saved:
            return saved
        return default_primary_metric(2 if self.metrics.get("average") == "binary" else 3)

    def best_baseline(self) -> tuple[str, dict[str, Any]] | None:
        """The baseline that scores highest on the run's primary metric (None: no baseline
        has it)."""
        metric = self.primary_metric
        baselines = self.metrics.get("baselines") or _reply_baselines(self.metrics)
        scored = [(n, b) for n, b in baselines.items() if b.get(metric) is not None]
        if not scored:
            return None
        return max(scored, key=lambda item: item[1][metric])


def _reply_baselines(metrics: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """A reply run's baselines in the headline's terms: its accuracy, recall and F1 are the
    intent consistency of the replies."""
    reply = metrics.get("reply") or {}
    return {
        name: {key: figures.get(f"intent_{key}") for key in ("accuracy", "recall", "f1")}
        for name, figures in reply.items()
        if name != "model"
    }


def load_record(folder: str | Path) -> RunRecord:
    import yaml

    folder = Path(folder)
    missing = [n for n in ("metrics.json", "config.yaml") if not (folder / n).is_file()]
    if missing:
        raise UserError(f"{folder} is not a finished run folder ({', '.join(missing)} missing).")
    config = yaml.safe_load((folder / "config.yaml").read_text(encoding="utf-8")) or {}
    metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    env_file = folder / "environment.json"
    environment = json.loads(env_file.read_text(encoding="utf-8")) if env_file.is_file() else {}
    record = RunRecord(folder, folder.name, config, metrics, environment)
    scores_file = folder / "scores.npz"
    if scores_file.is_file():
        with np.load(scores_file) as data:
            record.y_true = data["y_true"]
            record.scores = {k: data[k] for k in data.files if k != "y_true"}
    return record


def summary_row(record: RunRecord) -> list[str]:
    model = record.config.get("model", {})
    best = record.best_baseline()
    metric = record.primary_metric
    best_text = f"{best[0]} ({_metric_name(metric)} {figure(best[1][metric])})" if best else "n/a"
    seconds = record.metrics.get("train_seconds") or (record.metrics.get("train") or {}).get(
        "train_seconds"
    )
    memory = record.environment.get("peak_gpu_memory_mb") or record.environment.get("peak_rss_mb")
    return [
        record.name,
        record.recipe,
        record.dataset,
        str(model.get("name", "?")),
        str(model.get("quant", "none")),
        *[figure(record.metrics.get(k)) for k in HEADLINE],
        best_text,
        _delivered_text(record.metrics),
        f"{seconds:.0f} s" if isinstance(seconds, int | float) else "n/a",
        f"{memory:.0f} MB" if isinstance(memory, int | float) else "n/a",
    ]


def _delivered_text(metrics: dict[str, Any]) -> str:
    """The delivered method (and calibration) of a run; per-fold counts for cross-validation."""
    delivered = metrics.get("delivered")
    if not delivered:
        return "fine-tuned"
    if "counts" in delivered:
        return ", ".join(f"{n} x{c}" for n, c in delivered["counts"].items())
    name = "fine-tuned" if delivered.get("name", "model") == "model" else delivered["name"]
    method = (metrics.get("calibration") or {}).get("method", "none")
    return name if method == "none" else f"{name} + {method}"


def _metric_name(metric: str) -> str:
    names = {"auc": "AUC", "f1": "F1", "ndcg_at_k": "NDCG@k", "recall_at_k": "recall@k"}
    return names.get(metric, metric)


def plot_roc_curves(record: RunRecord, path: Path) -> bool:
    """ROC of each method: the positive class for two classes, macro one-vs-rest otherwise."""
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    if record.y_true is None or not record.scores:
        return False
    y = record.y_true
    fig, ax = plt.subplots(figsize=(5, 5))
    grid = np.linspace(0, 1, 201)
    for name, proba in record.scores.items():
        classes = [1] if proba.shape[1] == 2 else range(proba.shape[1])
        curves = []
        for k in classes:
            if (y == k).all() or not (y == k).any():
                continue
            fpr, tpr, _ = roc_curve(y == k, proba[:, k])
            curves.append(np.interp(grid, fpr, tpr))
        if curves:
            ax.plot(grid, np.mean(curves, axis=0), label=name)
    ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    kind = "positive class" if next(iter(record.scores.values())).shape[1] == 2 else "macro OvR"
    ax.set_title(f"ROC ({kind})")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def metric_value(metrics: dict[str, Any], name: str) -> Any:
    """A figure of metrics.json by name: a top-level key, or a dotted path into nested ones
    (`ranking.model.ndcg@10`); None when absent."""
    if name in metrics:
        return metrics[name]
    value: Any = metrics
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value if isinstance(value, int | float) else None


def check_floors(records: list[RunRecord], floors: dict[str, dict[str, float]]) -> list[str]:
    """Every metric below its floor, as messages (empty: all runs pass). A run's floors are
    its `floor_key`'s, else its recipe's; floors that no run reads fail too (a renamed key
    must not switch its floors off)."""
    failures, read = [], set()
    for record in records:
        key = record.floor_key if record.floor_key in floors else record.recipe
        read.add(key)
        for metric, floor in (floors.get(key) or {}).items():
            if metric.startswith("delivered."):
                value = metric_value(record.metrics, metric.removeprefix("delivered."))
            else:
                own = finetuned_figures(record.metrics)
                value = own[metric] if metric in own else metric_value(record.metrics, metric)
            if value is None or value < floor:
                failures.append(f"{record.name} ({key}): {metric} {figure(value)} < floor {floor}")
    unread = [key for key in floors if key not in read]
    return failures + [
        f"no run for the floors of '{key}' (recipe or recipe/task)" for key in unread
    ]


def load_floors(path: str | Path) -> dict[str, dict[str, float]]:
    from finetune.config import load_yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"Floors file not found: {path}.")
    floors = load_yaml(path, holds="recipes to their floors (recipe: {metric: minimum})")
    for recipe, metrics in floors.items():
        if not isinstance(metrics, dict) or not all(
            isinstance(v, int | float) for v in metrics.values()
        ):
            raise UserError(f"{path}: '{recipe}' must map metric names to numbers.")
    return floors


def write_summary(
    folders: list[str | Path], output: str | Path, floors: dict[str, dict[str, float]] | None = None
) -> tuple[Path, list[str], list[list[str]]]:
    """Write report.md + report.html for `folders` into `output`.

    Returns (report folder, floor failures, summary table rows).
    """
    import matplotlib

    matplotlib.use("Agg")
    if not folders:
        raise UserError("Give at least one run folder.")
    records = [load_record(f) for f in folders]
    names = [r.name for r in records]
    for i, record in enumerate(records):  # two runs may share a folder name
        if names.count(record.name) > 1:
            record.name = f"{record.name}-{i + 1}"
    failures = check_floors(records, floors or {})
    output = Path(output)
    with staged(output) as tmp:
        blocks = _blocks(records, tmp, failures, floors)
        (tmp / "report.md").write_text(_markdown(blocks), encoding="utf-8")
        (tmp / "report.html").write_text(_html(blocks, tmp), encoding="utf-8")
        (tmp / "summary.json").write_text(
            json.dumps(
                {
                    "runs": [
                        dict(zip(SUMMARY_COLUMNS, summary_row(r), strict=True)) for r in records
                    ],
                    "floor_failures": failures,
                },
                indent=2,
            ),
            encoding="utf-8",
        )
    return output, failures, [summary_row(r) for r in records]


# A report is a list of blocks, rendered twice: ("h1"|"h2"|"p", text), ("table", header,
# rows), ("img", relative path, caption).
Block = tuple


def _blocks(
    records: list[RunRecord], folder: Path, failures: list[str], floors: dict | None
) -> list[Block]:
    blocks: list[Block] = [
        ("h1", "Evaluation report"),
        (
            "p",
            f"{len(records)} run(s). Metrics on each run's evaluation split; recall, F1 and AUC "
            "are the positive class's for two-class tasks and macro averages otherwise. The "
            "best baseline is the one highest on its recipe's primary metric (named in the "
            "cell): macro-F1 for multiclass tasks, AUC for two-class risk, NDCG@k for "
            "recommendation.",
        ),
        ("table", list(SUMMARY_COLUMNS), [summary_row(r) for r in records]),
    ]
    if floors is not None:
        verdict = (
            "All runs are at or above their floors."
            if not failures
            else ("Below the floor: " + "; ".join(failures))
        )
        blocks.append(("p", verdict))
    for record in records:
        blocks.append(("h2", f"{record.name}: {record.recipe} on {record.dataset}"))
        own = finetuned_figures(record.metrics)
        rows = [[MODEL_NAME, *[figure(own.get(k)) for k in HEADLINE]]]
        for name, figures in (record.metrics.get("baselines") or {}).items():
            rows.append([name, *[figure(figures.get(k)) for k in HEADLINE]])
        blocks.append(("table", ["method", *HEADLINE], rows))
        images = folder / "images"
        images.mkdir(exist_ok=True)
        roc = images / f"{record.name}-roc.png"
        if plot_roc_curves(record, roc):
            blocks.append(("img", f"images/{roc.name}", "ROC"))
        for plot, caption in (
            ("confusion_matrix.png", "confusion matrix"),
            ("calibration.png", "calibration"),
            ("comparison.png", "fine-tuned vs baselines"),
        ):
            source = record.folder / "plots" / plot
            if source.is_file():
                target = images / f"{record.name}-{plot}"
                shutil.copyfile(source, target)
                blocks.append(("img", f"images/{target.name}", caption))
    return blocks


def _markdown(blocks: list[Block]) -> str:
    parts = []
    for block in blocks:
        if block[0] == "h1":
            parts.append(f"# {block[1]}")
        elif block[0] == "h2":
            parts.append(f"## {block[1]}")
        elif block[0] == "p":
            parts.append(block[1])
        elif block[0] == "table":
            parts.append(table(block[1], block[2]))
        elif block[0] == "img":
            parts.append(f"![{block[2]}]({block[1]})")
    return "\n\n".join(parts) + "\n"


def _html(blocks: list[Block], folder: Path) -> str:
    esc = html.escape
    body = []
    for block in blocks:
        if block[0] in ("h1", "h2"):
            body.append(f"<{block[0]}>{esc(block[1])}</{block[0]}>")
        elif block[0] == "p":
            body.append(f"<p>{esc(block[1])}</p>")
        elif block[0] == "table":
            head = "".join(f"<th>{esc(h)}</th>" for h in block[1])
            rows = "".join(
                "<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in block[2]
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif block[0] == "img":
            data = base64.b64encode((folder / block[1]).read_bytes()).decode("ascii")
            body.append(
                f'<figure><img alt="{esc(block[2])}" src="data:image/png;base64,{data}">'
                f"<figcaption>{esc(block[2])}</figcaption></figure>"
            )
    style = (
        "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:4px 8px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "figure{display:inline-block;margin:0.5em}img{max-width:480px}"
    )
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>Evaluation report</title>'
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )
