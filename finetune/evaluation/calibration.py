"""Calibration of a two-class model's P(positive), fitted on validation rows only (or on the
out-of-fold probabilities of inner folds of the training rows: finetune.evaluation.selection).

`choose_calibrator` picks none, Platt scaling (a logistic regression on the logit of
P(positive)) or isotonic regression. With `auto` the choice is the lowest log-loss of each
candidate cross-fitted on the validation rows (fitted on some folds of them, scored on the
others), so no candidate is judged on the rows it was fitted on; the chosen one is then
refitted on every validation row. The evaluation rows never reach this module.

scikit-learn's `CalibratedClassifierCV` no longer takes an already fitted model (`cv="prefit"`
is gone in 1.8), and a run's delivered model may be a baseline or the fine-tuned network, so
the two maps are fitted directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

METHODS = ("none", "platt", "isotonic")
# Probabilities are clipped this far from 0 and 1 before taking the logit and the log-loss.
EPS = 1e-6
# auto keeps the simpler map unless a more flexible one lowers the cross-fitted log-loss by
# more than this (in nats per row): a near-tie is noise, and simpler maps extrapolate better.
MIN_GAIN = 1e-3
# Fewer validation rows of the rarer class than this: auto keeps the probabilities as they are.
MIN_PER_CLASS = 5


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    return np.log(p / (1 - p))


def log_loss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean negative log-likelihood of binary labels `y` under P(positive) `p`."""
    p = np.clip(np.asarray(p, dtype=np.float64), EPS, 1 - EPS)
    y = np.asarray(y, dtype=bool)
    return float(-np.mean(np.where(y, np.log(p), np.log(1 - p))))


def brier(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.mean((np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=float)) ** 2))


@dataclass
class Calibrator:
    """A fitted map of P(positive) (picklable: saved with the run, applied by predict)."""

    method: str  # one of METHODS
    model: Any = None  # LogisticRegression (platt), IsotonicRegression (isotonic) or None
    n_fitted: int = 0  # validation rows it was fitted on
    fitted_scores: np.ndarray | None = field(default=None, repr=False)  # the P(positive) it saw

    def positive(self, p: np.ndarray) -> np.ndarray:
        """The calibrated P(positive) of raw P(positive) `p`."""
        p = np.asarray(p, dtype=np.float64)
        if self.method == "platt":
            return self.model.predict_proba(_logit(p)[:, None])[:, 1]
        if self.method == "isotonic":
            return np.clip(self.model.predict(p), 0.0, 1.0)
        return p

    def apply(self, proba: np.ndarray) -> np.ndarray:
        """Two-column class probabilities (negative, positive) after calibration."""
        if self.method == "none" or not len(proba):
            return proba
        positive = self.positive(proba[:, 1])
        return np.column_stack([1 - positive, positive])


def as_numbers(calibrator: Calibrator | None) -> dict[str, Any] | None:
    """A fitted map as plain numbers (None: no map): Platt's coefficient and intercept on the
    logit, isotonic regression's knots. An exported predict.py carries them and applies them
    with numpy alone (finetune/modeling/served_calibration.py)."""
    if calibrator is None or calibrator.method == "none":
        return None
    model = calibrator.model
    if calibrator.method == "platt":
        coef, intercept = float(model.coef_[0, 0]), float(model.intercept_[0])
        return {"method": "platt", "coef": coef, "intercept": intercept, "eps": EPS}
    knots = {"x": model.X_thresholds_.tolist(), "y": model.y_thresholds_.tolist()}
    return {"method": "isotonic", **knots}


def fit_calibrator(method: str, p: np.ndarray, y: np.ndarray) -> Calibrator:
    """Fit `method` on raw P(positive) `p` and binary labels `y` (validation rows)."""
    from sklearn.isotonic import IsotonicRegression
    from sklearn.linear_model import LogisticRegression

    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=int)
    if method == "none" or len(np.unique(y)) < 2:
        return Calibrator("none", n_fitted=len(y), fitted_scores=p)
    if method == "platt":
        # Weakly regularised: a one-feature fit on a few dozen rows should not be pulled far.
        model = LogisticRegression(C=100.0, max_iter=1000).fit(_logit(p)[:, None], y)
    else:
        model = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
    return Calibrator(method, model, len(y), p)


def cross_fitted_losses(
    p: np.ndarray, y: np.ndarray, seed: int, folds: np.ndarray | None = None
) -> dict[str, float]:
    """Each method's log-loss on the rows, every row scored by a map fitted on the other folds
    of them: `folds` (each row's fold number, e.g. the inner folds that gave out-of-fold `p`),
    else stratified, seeded folds."""
    from sklearn.model_selection import StratifiedKFold

    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=int)
    if folds is not None:
        parts = [(np.flatnonzero(folds != k), np.flatnonzero(folds == k)) for k in np.unique(folds)]
    else:
        n_folds = int(min(5, np.bincount(y, minlength=2).min()))
        splitter = StratifiedKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        parts = list(splitter.split(p[:, None], y))
    out = {method: np.zeros(len(y)) for method in METHODS}
    for fit_rows, held in parts:
        for method in METHODS:
            out[method][held] = fit_calibrator(method, p[fit_rows], y[fit_rows]).positive(p[held])
    return {method: log_loss(y, out[method]) for method in METHODS}


def choose_calibrator(
    setting: str,
    p_val: np.ndarray,
    y_val: np.ndarray,
    seed: int,
    folds: np.ndarray | None = None,
    fitted_on: str | None = None,
) -> tuple[Calibrator, dict[str, Any]]:
    """The calibration map for `setting` (auto, none, platt, isotonic) fitted on validation
    P(positive) `p_val` and labels `y_val`, and how it was chosen (for metrics.json). With
    out-of-fold probabilities of inner folds, `folds` (each row's fold) cross-fits auto's
    candidates over those same folds, and `fitted_on` says what the rows are."""
    y_val = np.asarray(y_val, dtype=int)
    n_rare = int(np.bincount(y_val, minlength=2).min()) if len(y_val) else 0
    how: dict[str, Any] = {
        "setting": setting,
        "fitted_on": fitted_on or f"{len(y_val)} validation rows",
    }
    if setting != "auto":
        if setting != "none" and n_rare < 1:
            how["note"] = "the validation rows hold one class only: left uncalibrated"
        return fit_calibrator(setting, p_val, y_val), how
    if n_rare < MIN_PER_CLASS:
        how["note"] = (
            f"auto: {n_rare} validation rows of the rarer class (fewer than {MIN_PER_CLASS}): "
            "too few to judge a calibration, left uncalibrated"
        )
        return fit_calibrator("none", p_val, y_val), how
    losses = cross_fitted_losses(p_val, y_val, seed, folds)
    chosen = "none"
    for method in METHODS[1:]:  # ordered from simple to flexible
        if losses[method] < losses[chosen] - MIN_GAIN:
            chosen = method
    how["cross_fitted_log_loss"] = {m: round(v, 5) for m, v in losses.items()}
    return fit_calibrator(chosen, p_val, y_val), how
