"""Which model a run delivers, and the calibration it serves with, chosen on validation rows
or, with inner folds (train.select_folds), on out-of-fold predictions of the training rows.

Every method (the fine-tuned model at its kept epoch, each baseline) is scored on the run's
validation rows. With `eval.deliver: best` a baseline is delivered when it beats the
fine-tuned model there, on the recipe's primary metric, by more than `MARGIN`; otherwise, and
always with `eval.deliver: finetuned`, the fine-tuned model is. Two-class tasks then get a
calibration map of the delivered method's probabilities (`finetune.evaluation.calibration`),
fitted on the same validation rows. The evaluation rows are never passed here.

With inner folds (`OutOfFold`), every method has a prediction for every training row from a
model fitted without it: the same rule then reads the pooled out-of-fold figure, and a
baseline must also lead the fine-tuned model in the mean over the folds by more than `MARGIN`
(one fold's luck does not carry it); the calibration's candidates are cross-fitted over the
same folds, and the threshold is chosen on the calibrated out-of-fold probabilities.

A blend (`eval.blend`) is the mean of the fine-tuned model's and one baseline's probabilities
(`add_blends`): a form of the fine-tuned model, not a rival to it. With `best`, the validation
figure chooses between the model alone and its blends as it chooses the kept epoch (the higher
one; a tie keeps the model alone), and a baseline must then beat that choice by the margin. A
delivered blend is served by averaging the two at prediction time. Beside each blend, the
frozen probe (`PROBE`) blended with the same baseline is scored for comparison, never served:
it shows how much of a blend's gain is the blend's and how much fine-tuning's.

What the run serves is saved in the run folder's `delivered/` (`save_served`, `load_served`):
`delivered.json`, the baseline's fitted predictor (`predictor.joblib`) and the calibration map
(`calibration.joblib`). joblib files are pickles: load run folders you trust, like any model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from finetune.evaluation.calibration import Calibrator, choose_calibrator
from finetune.evaluation.metrics import (
    MODEL_NAME,
    classification_metrics,
    default_primary_metric,
)

# A baseline is delivered only when it leads the fine-tuned model on the validation rows by
# more than this (in the primary metric's units): a tie-breaker towards the fine-tuned model,
# not a significance test (docs/evaluation.md says why it is small).
MARGIN = 0.005
# The name of the fine-tuned model in metrics.json's `delivered` (baselines go by theirs).
MODEL = "model"
# Figures `classification_metrics` computes, hence computable on validation rows.
VALIDATION_METRICS = ("accuracy", "recall", "f1", "auc", "precision", "specificity")
FOLDER = "delivered"
BLEND = " + "  # a blend's name: the fine-tuned model's (or PROBE's), this, the baseline's
# The frozen backbone's linear probe: blended like the fine-tuned model, for comparison.
PROBE = "embedding_logreg"


def blend_name(baseline: str, of: str = MODEL_NAME) -> str:
    return f"{of}{BLEND}{baseline}"


def is_blend(name: str) -> bool:
    """A blend of the fine-tuned model's, or the probe's for comparison: never a baseline."""
    return name.startswith((MODEL_NAME + BLEND, PROBE + BLEND))


def is_comparison(name: str) -> bool:
    """The probe's blend, scored beside the fine-tuned model's and never served."""
    return name.startswith(PROBE + BLEND)


def add_blends(scores: dict[str, np.ndarray], baselines: list[str]) -> dict[str, np.ndarray]:
    """`scores` with each blend of the fine-tuned model (MODEL_NAME) and a baseline of
    `baselines` added (the mean of their probabilities), each followed, where the probe was
    scored, by the probe's blend with the same baseline (`is_comparison`)."""
    blends = {}
    for b in baselines:
        blends[blend_name(b)] = (scores[MODEL_NAME] + scores[b]) / 2
        if PROBE in scores and b != PROBE:
            blends[blend_name(b, PROBE)] = (scores[PROBE] + scores[b]) / 2
    return {**scores, **blends}


@dataclass
class Served:
    """What a run serves: the delivered method and its calibration (picklable parts)."""

    name: str  # MODEL, a baseline's name or a blend's
    predictor: Any = None  # a baseline's fitted predictor; None for the fine-tuned model
    calibrator: Calibrator | None = None  # two-class tasks; None: probabilities as they are
    blend: bool = False  # serve the mean of the fine-tuned model's and the predictor's

    @property
    def reads_vectors(self) -> bool:
        """The predictor reads the frozen backbone's vectors (embedding_logreg's probe)."""
        return bool(getattr(self.predictor, "reads_vectors", False))

    def calibrate(self, proba: np.ndarray) -> np.ndarray:
        return proba if self.calibrator is None else self.calibrator.apply(proba)


@dataclass
class OutOfFold:
    """Every training row's out-of-fold probabilities by method (the fine-tuned model under
    MODEL_NAME, each baseline under its name), their labels and each row's inner fold."""

    scores: dict[str, np.ndarray]
    y: np.ndarray
    folds: np.ndarray  # each row's fold number

    def describe(self) -> str:
        n_folds = len(np.unique(self.folds))
        return f"out-of-fold predictions of {n_folds} inner folds over {len(self.y)} training rows"


@dataclass
class Delivery:
    """The choice and what decided it (metrics.json's `delivered` and `calibration`)."""

    served: Served
    method: str  # the delivered method's key in the scores (MODEL_NAME or a baseline's name)
    decided: dict[str, Any]  # metrics.json `delivered`
    calibration: dict[str, Any] | None = None  # metrics.json `calibration` (two classes)
    lines: list[str] = field(default_factory=list)  # the console's and report's first lines


def validation_metric(primary: str, n_classes: int) -> str:
    """The recipe's primary metric when validation rows can give it, else the task's default
    (a recipe's own figure, e.g. NDCG@k of a ranking, is computed on evaluation rows only)."""
    return primary if primary in VALIDATION_METRICS else default_primary_metric(n_classes)


def choose_delivered(
    val_scores: dict[str, np.ndarray],
    y_val: np.ndarray,
    labels: list[str],
    primary: str,
    deliver: str,
    deliverable: set[str],
    folds: np.ndarray | None = None,
) -> tuple[str, dict[str, Any], list[str]]:
    """(the delivered method's key, metrics.json's `delivered`, report lines).

    `val_scores` holds every method's validation probabilities (the model under MODEL_NAME);
    `deliverable` names the baselines that left a predictor a run can save. With `folds` (each
    row's inner fold) the scores are out-of-fold predictions of the training rows, and a
    baseline must lead both on them pooled and in the mean over the folds."""
    metric = validation_metric(primary, len(labels))
    decided: dict[str, Any] = {"name": MODEL, "deliver": deliver, "metric": metric}
    if not len(y_val):
        decided["rule"] = "no validation rows: the fine-tuned model, unchallenged"
        return MODEL_NAME, decided, []
    figures = {
        name: classification_metrics(y_val, p, labels)[metric] for name, p in val_scores.items()
    }
    decided.update(
        chosen_on=f"validation ({len(y_val)} rows)",
        margin=MARGIN,
        validation={(MODEL if n == MODEL_NAME else n): v for n, v in figures.items()},
    )
    where = "on the validation rows"
    fold_means: dict[str, float | None] = {}
    if folds is not None:
        where = "on out-of-fold predictions of the training rows"
        decided["chosen_on"] = OutOfFold(val_scores, y_val, folds).describe()
        decided["out_of_fold"] = _fold_figures(val_scores, y_val, folds, labels, metric)
        fold_means = {
            name: decided["out_of_fold"][MODEL if name == MODEL_NAME else name]["fold_mean"]
            for name in val_scores
        }
    own = _own_form(figures, deliverable) if deliver == "best" else MODEL_NAME
    model = figures[own]
    leading = _leading(figures, fold_means, own)
    if not leading:
        if own == MODEL_NAME:
            return MODEL_NAME, decided, []
        decided["name"] = own
        return own, decided, [_blend_line(own, figures, metric, where)]
    leader = leading[0]
    best_value = figures[leader]
    decided["leader"] = leader
    led = (
        f"The baseline {leader} beat the fine-tuned model {where}: {metric} "
        f"{best_value:.3f} against {_shown(model)} (margin {MARGIN})."
    )
    if deliver == "finetuned":
        return (
            MODEL_NAME,
            decided,
            [led + " Delivered: the fine-tuned model (--deliver finetuned)."],
        )
    served = [name for name in leading if name in deliverable]
    if not served:
        return (
            MODEL_NAME,
            decided,
            [led + f" {leader} leaves no saved predictor, so the fine-tuned model is delivered."],
        )
    decided["name"] = served[0]
    note = "" if served[0] == leader else f" ({leader} leaves no saved predictor)"
    return (
        served[0],
        decided,
        [
            led + f" Delivered: {served[0]}{note}; predict and evaluate --run serve it "
            "(--deliver finetuned keeps the fine-tuned model)."
        ],
    )


def _blend_line(blend: str, figures: dict[str, float | None], metric: str, where: str) -> str:
    return (
        f"Delivered: the fine-tuned model blended with {blend[len(MODEL_NAME + BLEND) :]} "
        f"(the mean of their probabilities): {metric} {_shown(figures[blend])} {where} "
        f"against {_shown(figures[MODEL_NAME])} for the model alone; no baseline beat it by "
        f"more than {MARGIN}."
    )


def _own_form(figures: dict[str, float | None], deliverable: set[str]) -> str:
    """The fine-tuned model alone or one of its blends (eval.blend) that a run can serve:
    the higher figure, as the kept epoch is chosen (a blend is the fine-tuned model with a
    baseline's probabilities averaged in, not a rival to it); a tie keeps the model alone."""
    blends = [n for n in figures if is_blend(n) and not is_comparison(n)]
    forms = [MODEL_NAME] + [n for n in blends if n in deliverable]
    scored = [n for n in forms if figures[n] is not None]
    return max(scored, key=lambda n: figures[n]) if scored else MODEL_NAME


def _leading(
    figures: dict[str, float | None], fold_means: dict[str, float | None], own: str = MODEL_NAME
) -> list[str]:
    """Baselines that lead the fine-tuned model (`own`: alone or blended) by more than the
    margin (and, with inner folds, in the mean over the folds too), best first (ties: the
    recipe's order). Blends are never baselines."""
    model = figures[own]

    def leads(name: str) -> bool:
        value = figures[name]
        if value is None or (model is not None and value - model <= MARGIN):
            return False
        mine, theirs = fold_means.get(own), fold_means.get(name)
        return mine is None or theirs is None or theirs - mine > MARGIN

    return sorted(
        (name for name in figures if name != MODEL_NAME and not is_blend(name) and leads(name)),
        key=lambda name: -figures[name],
    )


def _fold_figures(
    scores: dict[str, np.ndarray],
    y: np.ndarray,
    folds: np.ndarray,
    labels: list[str],
    metric: str,
) -> dict[str, dict[str, Any]]:
    """metrics.json `delivered.out_of_fold`: each method's figure on the out-of-fold
    predictions, pooled and per inner fold (mean, std, each fold's)."""
    out = {}
    for name, p in scores.items():
        per_fold = [
            classification_metrics(y[folds == k], p[folds == k], labels)[metric]
            for k in np.unique(folds)
        ]
        defined = [v for v in per_fold if v is not None]
        out[MODEL if name == MODEL_NAME else name] = {
            "pooled": classification_metrics(y, p, labels)[metric],
            "fold_mean": float(np.mean(defined)) if defined else None,
            "fold_std": float(np.std(defined)) if defined else None,
            "per_fold": per_fold,
        }
    return out


def _shown(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def deliver(
    val_scores: dict[str, np.ndarray],
    y_val: np.ndarray,
    labels: list[str],
    primary: str,
    settings: Any,
    predictors: dict[str, Any],
    seed: int,
    folds: np.ndarray | None = None,
) -> Delivery:
    """The delivered method (choose_delivered) and, for two classes, its calibration map fitted
    on its validation probabilities. `settings` is the run's EvalConfig (deliver, calibrate).
    With `folds` (each row's inner fold), `val_scores` are out-of-fold predictions of the
    training rows `y_val` (`OutOfFold`), and the calibration is cross-fitted over those folds."""
    # A blend is served by its baseline's predictor with the fine-tuned model beside it.
    blends = {blend_name(b): p for b, p in predictors.items() if blend_name(b) in val_scores}
    predictors = {**predictors, **blends}
    method, decided, lines = choose_delivered(
        val_scores, y_val, labels, primary, settings.deliver, set(predictors), folds
    )
    served = Served(
        decided["name"],
        predictors.get(method) if method != MODEL_NAME else None,
        blend=is_blend(method),
    )
    if lines:
        decided["note"] = " ".join(lines)
    delivery = Delivery(served, method, decided, lines=lines)
    if len(labels) == 2:
        fitted_on = None if folds is None else decided["chosen_on"]
        calibrator, how = choose_calibrator(
            settings.calibrate if len(y_val) else "none",
            val_scores[method][:, 1],
            y_val,
            seed,
            folds,
            fitted_on,
        )
        served.calibrator = calibrator if calibrator.method != "none" else None
        delivery.calibration = {"method": calibrator.method, **how}
    return delivery


def calibration_figures(
    calibration: dict[str, Any], y_eval: np.ndarray, before: np.ndarray, after: np.ndarray
) -> dict[str, Any]:
    """metrics.json `calibration`: how it was chosen, with the Brier score and log-loss of the
    delivered method's P(positive) on the evaluation rows before and after (reported only)."""
    from finetune.evaluation.calibration import brier, log_loss

    y = np.asarray(y_eval) == 1
    return {
        **calibration,
        "brier_before": brier(y, before[:, 1]),
        "brier_after": brier(y, after[:, 1]),
        "log_loss_before": log_loss(y, before[:, 1]),
        "log_loss_after": log_loss(y, after[:, 1]),
    }


def save_served(folder: Path, served: Served, decided: dict[str, Any]) -> None:
    """Write `folder`/delivered/: what the run serves, so `load_served` rebuilds it."""
    import joblib

    target = folder / FOLDER
    target.mkdir()
    calibration = served.calibrator.method if served.calibrator is not None else "none"
    info = {"name": served.name, "calibration": calibration, "blend": served.blend}
    info["decided"] = decided
    (target / "delivered.json").write_text(json.dumps(info, indent=2), encoding="utf-8")
    if served.predictor is not None:
        joblib.dump(served.predictor, target / "predictor.joblib")
    if served.calibrator is not None:
        joblib.dump(served.calibrator, target / "calibration.joblib")


def load_served(folder: Path) -> Served | None:
    """What a run folder serves (None: a folder written before delivery existed, which serves
    its fine-tuned model uncalibrated)."""
    import joblib

    target = folder / FOLDER
    if not (target / "delivered.json").is_file():
        return None
    info = json.loads((target / "delivered.json").read_text(encoding="utf-8"))
    predictor = calibrator = None
    if (target / "predictor.joblib").is_file():
        predictor = joblib.load(target / "predictor.joblib")
    if (target / "calibration.joblib").is_file():
        calibrator = joblib.load(target / "calibration.joblib")
    return Served(info["name"], predictor, calibrator, blend=bool(info.get("blend", False)))


def portable(served: Served | None) -> dict[str, Any] | None:
    """What a run serves as plain scikit-learn parts that an exported predict.py applies over
    the merged model: `name`, `uses_model` (False: the baseline alone), `text_model` (a text
    baseline's vectorizer, classifier and class count, or None), `calibration`
    (`calibration.as_numbers`, or None), and `probe` (the frozen probe's `weight` and
    `bias`, or None).
    {} when the run serves its fine-tuned model as it is. A served probe reads the frozen
    backbone's vectors, so the export writes the backbone without its adapter, with the probe
    as its head (`uses_model`: that backbone). None when the run serves the probe blended with
    the fine-tuned model, whose two backbones one exported model cannot hold."""
    from finetune.evaluation.calibration import as_numbers

    if served is None:
        return {}
    predictor = served.predictor
    probe = getattr(predictor, "probe", None) if served.reads_vectors else None
    if predictor is not None and not hasattr(predictor, "portable") and probe is None:
        return None
    if probe is not None and served.blend:
        return None
    calibration = as_numbers(served.calibrator)
    if predictor is None and calibration is None:
        return {}
    return {
        "name": served.name,
        "uses_model": predictor is None or served.blend or probe is not None,
        "text_model": predictor.portable() if hasattr(predictor, "portable") else None,
        "calibration": calibration,
        "probe": None if probe is None else {"weight": probe.weight, "bias": probe.bias},
    }


def delivered_name(metrics: dict[str, Any]) -> str:
    """The delivered method's row name in reports (MODEL_NAME for the fine-tuned model)."""
    name = (metrics.get("delivered") or {}).get("name", MODEL)
    return MODEL_NAME if name == MODEL else name
