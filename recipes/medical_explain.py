"""Per-patient explanations of a medical-risk score: which fields moved it, which way, how much.

The score explained is the log-odds of the positive class, log(p / (1 - p)). A field's
contribution is the sum of two parts:

- the wide part (the linear model over the encoded raw columns, features.py): exact,
  coefficient x (encoded value - the average training patient's encoded value), summed over
  the field's encoded positions (a number, its was-missing flag, a category's one-hot). The
  wide parts of all fields add up to the wide part's logit minus the average patient's.
- the text part (the fine-tuned encoder reading the record): leave-one-field-out occlusion,
  the score minus the score with that field written `missing` in the record text (the wide
  part's input unchanged, so the difference is the text part's alone). Skipped, as exactly
  zero, while the text head is silent (a run that kept epoch 0).

`explanation` strings list the three largest contributions, e.g. `glu +0.84; bmi +0.31;
age -0.12`. `extra_report` draws a global importance plot (mean absolute contribution per
field over the evaluation rows) and three worked examples, without printing patients' values.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from finetune.data.records import Column, record_text

if TYPE_CHECKING:
    from collections.abc import Callable

    import pandas as pd

    from finetune.data.tables import Examples
    from finetune.evaluation.context import EvalContext

TOP = 3
# Probabilities are clipped this far from 0 and 1 before taking log-odds.
EPS = 1e-6


def log_odds(proba: np.ndarray) -> np.ndarray:
    """The positive class's (label id 1) log-odds from two-class probabilities."""
    p = np.clip(proba[:, 1], EPS, 1 - EPS)
    return np.log(p / (1 - p))


def wide_contributions(model: Any, encoder: Any, features: pd.DataFrame) -> pd.DataFrame:
    """Exact per-field contributions of the wide part to the log-odds (see the docstring)."""
    import pandas as pd

    weight = model.wide.weight.detach().float().cpu().numpy()
    direction = weight[1] - weight[0]  # logit of class 1 minus class 0: the log-odds
    encoded = encoder.transform(features, "the rows to explain")
    center = np.asarray(encoder.center if encoder.center is not None else encoded.mean(axis=0))
    terms = (encoded - center) * direction
    fields = encoder.fields
    return pd.DataFrame(
        {name: terms[:, [f == name for f in fields]].sum(axis=1) for name in dict.fromkeys(fields)}
    )


def text_contributions(
    examples: Examples, predict: Callable[[Examples], np.ndarray], base: np.ndarray
) -> pd.DataFrame:
    """Leave-one-field-out occlusion in the record text: base log-odds minus the log-odds with
    the field written `missing` (the features, which the wide part reads, unchanged)."""
    import pandas as pd

    features = examples.features
    columns = [Column.from_dict(c) for c in features.attrs["columns"]]
    rows = list(features.itertuples(index=False))
    texts: list[str] = []
    for position in range(len(columns)):
        for row in rows:
            occluded = list(row)
            occluded[position] = None
            texts.append(record_text(occluded, columns))
    stacked = pd.concat([features] * len(columns), ignore_index=True)
    stacked.attrs = dict(features.attrs)
    occluded = replace(examples, texts=texts, labels=[], features=stacked, groups=None)
    scores = log_odds(predict(occluded)).reshape(len(columns), len(rows))
    return pd.DataFrame({c.name: base - scores[i] for i, c in enumerate(columns)})


def contributions(
    model: Any, inputs: Any, predict: Callable[[Examples], np.ndarray], examples: Examples
) -> pd.DataFrame:
    """Each row's per-field contributions to its log-odds, wide and text parts added."""
    import pandas as pd

    names = [c["name"] for c in examples.features.attrs["columns"]]
    total = pd.DataFrame(0.0, index=range(len(examples)), columns=names)
    encoder = getattr(inputs, "encoder", None)
    if getattr(model, "wide", None) is not None and encoder is not None:
        wide = wide_contributions(model, encoder, examples.features)
        total[wide.columns] += wide.to_numpy()
    if bool(model.head.weight.detach().abs().max() > 0):  # a silent text part adds nothing
        text = text_contributions(examples, predict, log_odds(predict(examples)))
        total[text.columns] += text.to_numpy()
    return total


def explanation_strings(table: pd.DataFrame, top: int = TOP) -> list[str]:
    """`name +0.21; name -0.08; ...`: the `top` largest contributions of each row."""
    values, names = table.to_numpy(), list(table.columns)
    order = np.argsort(-np.abs(values), axis=1, kind="stable")[:, :top]
    return [
        "; ".join(f"{names[j]} {values[i, j]:+.2f}" for j in row) for i, row in enumerate(order)
    ]


def predict_columns(run: Any, examples: Examples, proba: np.ndarray) -> dict[str, list[Any]]:
    """`risk` (the positive class's probability) and `explanation` for `predict`'s output."""
    table = contributions(run.model, run.inputs, run.predict_proba, examples)
    return {
        "risk": proba[:, 1].round(6).tolist(),
        "explanation": explanation_strings(table),
    }


def explanation_report(context: EvalContext) -> tuple[dict[str, Any], list[str]]:
    """Global importance (plot) and three worked examples on the evaluation rows."""
    if context.model is None or len(context.labels) != 2 or not len(context.evaluation):
        return {}, []
    proba = context.model_scores
    table = contributions(
        context.model, context.model_inputs, context.predict_proba, context.evaluation
    )
    importance = table.abs().mean().sort_values(ascending=False)
    context.plots["importance.png"] = lambda path: _plot_importance(importance, path)
    lines = [
        "## Why the model scores what it scores",
        "",
        "Each field's contribution to a patient's log-odds of the positive class: exact for the "
        "wide (linear) part, from the average training patient; leave-one-field-out occlusion "
        "for the text part (the record with that field written `missing`). `predict` writes "
        "the three largest per patient in its `explanation` column.",
        "",
        "![global importance](plots/importance.png)",
        "",
        "| field | mean absolute contribution (evaluation rows) |",
        "|---|---|",
        *(f"| {name} | {value:.3f} |" for name, value in importance.items()),
        "",
        *_worked_examples(table, proba[:, 1], context.y_eval),
    ]
    return {"importance": {k: round(float(v), 4) for k, v in importance.items()}}, lines


def _worked_examples(table: pd.DataFrame, risk: np.ndarray, y: np.ndarray) -> list[str]:
    """Highest risk, closest to the 0.5 threshold, and the most confident false negative."""
    cases = [("highest risk", int(np.argmax(risk)))]
    cases.append(("borderline (closest to the 0.5 threshold)", int(np.argmin(np.abs(risk - 0.5)))))
    missed = np.flatnonzero((y == 1) & (risk < 0.5))
    if len(missed):
        cases.append(
            ("false negative (positive, lowest risk)", int(missed[np.argmin(risk[missed])]))
        )
    lines = [
        "### Worked examples",
        "",
        "Rows of the evaluation split (their values stay out of the report; row k is line k + 2 "
        "of `predictions.csv`). Contributions in log-odds, largest first.",
        "",
        "| case | evaluation row | outcome | risk | five largest contributions |",
        "|---|---|---|---|---|",
    ]
    strings = explanation_strings(table, top=5)
    for name, row in cases:
        outcome = "positive" if y[row] == 1 else "negative"
        lines.append(f"| {name} | {row} | {outcome} | {risk[row]:.3f} | {strings[row]} |")
    if not len(missed):
        lines.append("| false negative | none at 0.5 | | | |")
    return [*lines, ""]


def _plot_importance(importance: pd.Series, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = importance.iloc[:15][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(shown) + 1.2))
    ax.barh(list(shown.index), shown.to_numpy(), color="#4c72b0")
    ax.set_xlabel("mean |contribution to log-odds| (evaluation rows)")
    ax.set_title("Which fields move the risk score", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
