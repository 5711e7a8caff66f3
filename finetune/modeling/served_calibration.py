"""A run's calibration map as an exported predict.py applies it: plain numbers
(`finetune.evaluation.calibration.as_numbers`) and numpy alone, so the exports copy
`calibrate`'s source into their predict.py (a folder without finetune-kit or scikit-learn)."""

from __future__ import annotations

import numpy as np


def calibrate(proba, calibration):
    """Two-column class probabilities after the map `calibration` (None: as they are)."""
    if calibration is None or not len(proba):
        return proba
    positive = np.asarray(proba[:, 1], dtype=np.float64)
    if calibration["method"] == "platt":
        p = np.clip(positive, calibration["eps"], 1 - calibration["eps"])
        z = calibration["coef"] * np.log(p / (1 - p)) + calibration["intercept"]
        positive = 1 / (1 + np.exp(-z))
    else:  # isotonic: linear between its knots, flat beyond them
        positive = np.clip(np.interp(positive, calibration["x"], calibration["y"]), 0.0, 1.0)
    return np.column_stack([1 - positive, positive])
