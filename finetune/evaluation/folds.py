"""Stratified K-fold cross-validation as an evaluation protocol: the folds, and the summary
of the figures over them (the mean under each figure's usual name, `<name>_std` its spread).

Every labelled row is held out exactly once; `finetune.crossval` runs one ordinary run per fold
and hands their metrics to `summarise`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from finetune.errors import UserError

# Figures averaged over folds, for the model and each baseline (the binary ones when present).
AVERAGED = ("accuracy", "recall", "f1", "auc", "precision", "specificity", "brier")
# At each fold's own threshold (chosen on that fold's validation rows, inside its training
# part): figures on the held-out fold. Thresholds are listed per fold, never averaged.
OPERATING = ("recall", "specificity", "precision")


def fold_indices(labels: list[str], folds: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """(train, held-out) row indices of each fold, stratified by label and seeded."""
    from collections import Counter

    from sklearn.model_selection import StratifiedKFold

    counts = Counter(labels)
    if len(counts) < 2:
        raise UserError("Cross-validation needs at least two classes in the data.")
    rarest, n_rarest = min(counts.items(), key=lambda kv: kv[1])
    if n_rarest < folds:
        raise UserError(
            f"--folds {folds} needs at least {folds} examples of every class; '{rarest}' has "
            f"{n_rarest}. Use fewer folds or add examples."
        )
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return [
        (train.tolist(), held.tolist())
        for train, held in splitter.split(np.zeros(len(labels)), labels)
    ]


def _spread(values: list[Any]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (ddof=1) of the defined values."""
    defined = [float(v) for v in values if v is not None]
    if not defined:
        return None, None
    std = float(np.std(defined, ddof=1)) if len(defined) > 1 else 0.0
    return float(np.mean(defined)), std


def _average(entries: list[dict[str, Any]]) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    for key in AVERAGED:
        if any(key in entry for entry in entries):
            summary[key], summary[f"{key}_std"] = _spread([e.get(key) for e in entries])
    points = [e.get("operating_point") for e in entries]
    if any(points):
        defined = [p for p in points if p]
        point: dict[str, Any] = {
            "target_recall": defined[0]["target_recall"],
            "chosen_on": _chosen_on([p.get("chosen_on") for p in defined]),
            "thresholds": [p["threshold"] for p in defined],
        }
        for key in OPERATING:
            point[key], point[f"{key}_std"] = _spread([p[key] for p in defined])
        summary["operating_point"] = point
    return summary


def _chosen_on(each: list[str | None]) -> str:
    """Which rows the folds decided on (each fold's `chosen_on`): its validation rows, or
    out-of-fold predictions of inner folds of its training part (train.select_folds)."""
    if any(str(chosen or "").startswith("out-of-fold") for chosen in each):
        return "out-of-fold predictions of inner folds of each fold's training part"
    return "each fold's validation rows (inside its training part)"


def _delivered(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """How often each method was delivered (each fold decides on its own validation rows or
    inner folds)."""
    from collections import Counter

    names = [(fold.get("delivered") or {}).get("name", "model") for fold in folds]
    calibrations = [(fold.get("calibration") or {}).get("method", "none") for fold in folds]
    return {
        "counts": dict(Counter(names).most_common()),
        "per_fold": names,
        "calibrations": dict(Counter(calibrations).most_common()),
        "calibrated": any(method != "none" for method in calibrations),
        "chosen_on": _chosen_on([(fold.get("delivered") or {}).get("chosen_on") for fold in folds]),
    }


def summarise(folds: list[dict[str, Any]]) -> dict[str, Any]:
    """The top-level metrics.json: fold means under the usual keys (of each fold's delivered
    model), `*_std`, the fine-tuned model's own under `finetuned`, what each fold delivered,
    and every fold."""
    metrics = _average(folds)
    # Folds written before delivery existed kept the fine-tuned model's figures at the top.
    metrics["finetuned"] = _average([fold.get("finetuned") or fold for fold in folds])
    metrics["delivered"] = _delivered(folds)
    calibrated = [fold["calibration"] for fold in folds if fold.get("calibration")]
    if calibrated:  # each fold's own map; the Brier score and log-loss before and after
        metrics["calibration"] = {"methods": metrics["delivered"]["calibrations"]}
        for key in ("brier_before", "brier_after", "log_loss_before", "log_loss_after"):
            value, std = _spread([c.get(key) for c in calibrated])
            metrics["calibration"].update({key: value, f"{key}_std": std})
    for key in ("positive_label", "average", "primary_metric"):
        if key in folds[0]:
            metrics[key] = folds[0][key]
    names = list(folds[0].get("baselines", {}))
    metrics["baselines"] = {
        name: _average([fold["baselines"][name] for fold in folds]) for name in names
    }
    metrics.update(
        n_folds=len(folds),
        n_eval=sum(fold["n_eval"] for fold in folds),
        train_seconds=round(sum(fold.get("train_seconds", 0.0) for fold in folds), 2),
        std="sample standard deviation (ddof=1) over folds",
        folds=[
            {
                "fold": fold["fold"],
                "folder": fold["folder"],
                **{k: fold.get(k) for k in ("n_train", "n_val", "n_eval", "best_epoch")},
                **{k: fold[k] for k in AVERAGED if k in fold},
                "delivered": (fold.get("delivered") or {}).get("name", "model"),
                "finetuned": {k: (fold.get("finetuned") or fold).get(k) for k in AVERAGED},
                "baselines": {
                    name: {k: fold["baselines"][name].get(k) for k in AVERAGED} for name in names
                },
            }
            for fold in folds
        ],
    )
    return metrics
