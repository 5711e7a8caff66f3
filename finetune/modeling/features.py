"""Side features: a table's raw columns beside the text, for the classifier's wide part.

With `model.side_features`, each example's raw columns (`Examples.features`) become one
vector of numbers that a linear "wide" layer reads beside the text (models.TextClassifier):
numeric columns imputed with the training median, with a was-missing flag, and standardised
(with `spline_knots`, also a cubic B-spline basis over that many quantile knots, so a linear
layer can bend: a risk that rises only past a threshold); categorical ones one-hot over the
training categories (an unseen category is all zeros); free-text columns are left to the text
part. `FeatureEncoder.fit` sees the training rows only, and `save` writes its fitted numbers
as JSON (not a pickle), so a reloaded run transforms new rows exactly as training did.
Without splines it is also the raw-column logistic regression baseline's preprocessing
(finetune.evaluation.table_baselines): one encoding, so the wide part can start as that
regression (`fit_logistic`, `wide_start`) and the model's first candidate epoch is the
baseline itself; with splines, the same regression on the wider encoding.

`SideFeatures` wraps a run's `Inputs`: items are (the inner item, the feature vector), and
`collate` adds a `features` tensor to the inner batch, so the training loop, inference, the
layer cache and token-budget pieces pass it along without knowing about it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from finetune.data.records import kind_of
from finetune.errors import UserError
from finetune.modeling.inputs import Inputs

if TYPE_CHECKING:
    import pandas as pd

    from finetune.data.tables import Examples

FEATURES_FILE = "features.json"
MISSING = "missing"  # the category of an empty categorical cell (as the baselines encode it)
SPLINE_DEGREE = 3
# A numeric column with fewer distinct training values (a 0/1 flag, a 1-4 grade) stays linear.
SPLINE_MIN_VALUES = 5


@dataclass
class NumericColumn:
    name: str
    median: float  # imputes a missing value
    mean: float  # of the imputed training values
    scale: float  # their standard deviation (1 for a constant column)
    flag: bool  # a was-missing indicator follows (the training rows had gaps)
    # The B-spline's full knot vector (quantile knots, extended by SPLINE_DEGREE on each side
    # as scikit-learn's SplineTransformer does); empty: the column enters linearly only.
    knots: list[float] = field(default_factory=list)

    @property
    def n_splines(self) -> int:
        return max(len(self.knots) - SPLINE_DEGREE - 1, 0)


@dataclass
class CategoricalColumn:
    name: str
    categories: list[str]  # one-hot positions, as strings (MISSING for an empty cell)


def column_kinds(frame: pd.DataFrame) -> dict[str, str]:
    """numeric, categorical or text per column: as the table's reader declared them (its
    schema in `frame.attrs`), else inferred from the values."""
    declared = {c["name"]: c["kind"] for c in frame.attrs.get("columns", [])}
    return {name: declared.get(name) or kind_of(frame[name]) for name in frame.columns}


@dataclass
class FeatureEncoder:
    """Fitted numbers that turn a features table into a float matrix; see the module docstring."""

    numeric: list[NumericColumn] = field(default_factory=list)
    categorical: list[CategoricalColumn] = field(default_factory=list)
    # The mean encoded training row: explanations measure contributions from it (the average
    # training patient), so a one-hot or was-missing position counts only where it differs.
    center: list[float] | None = None

    @classmethod
    def fit(
        cls, frame: pd.DataFrame, required: bool = True, spline_knots: int = 0
    ) -> FeatureEncoder:
        """Fit on the training rows only (what the model learns from). `required`: a table
        without numeric or categorical columns is an error (else an encoder of width 0).
        `spline_knots` (0: none): each numeric column with SPLINE_MIN_VALUES distinct values
        or more also gets a cubic B-spline basis over that many quantile knots."""
        encoder = cls()
        for name, kind in column_kinds(frame).items():
            if kind == "numeric":
                encoder.numeric.append(_fit_numeric(name, frame[name], spline_knots))
            elif kind == "categorical":
                categories = sorted(set(_as_strings(frame[name])))
                encoder.categorical.append(CategoricalColumn(name, categories))
        if not encoder.width:
            if required:
                raise UserError(
                    "model.side_features: the table has no numeric or categorical columns to "
                    "use beside the text; set model.side_features=false."
                )
            return encoder
        encoder.center = encoder.transform(frame, "the training data").mean(axis=0).tolist()
        return encoder

    @property
    def fields(self) -> list[str]:
        """The raw column each encoded position comes from, in the matrix's order."""
        names = [n for c in self.numeric for n in [c.name] * (1 + c.flag + c.n_splines)]
        return names + [c.name for c in self.categorical for _ in c.categories]

    @property
    def width(self) -> int:
        numbers = sum(1 + c.flag + c.n_splines for c in self.numeric)
        return numbers + sum(len(c.categories) for c in self.categorical)

    def transform(self, frame: pd.DataFrame, source: str = "the data") -> np.ndarray:
        absent = [c.name for c in [*self.numeric, *self.categorical] if c.name not in frame]
        if absent:
            raise UserError(
                f"{source}: lacks columns the model reads as side features: {', '.join(absent)}. "
                "Give it the training data's columns."
            )
        parts: list[np.ndarray] = []
        for column in self.numeric:
            values = _numbers(frame[column.name], source)
            missing = np.isnan(values)
            filled = np.where(missing, column.median, values)
            parts.append(((filled - column.mean) / column.scale)[:, None])
            if column.flag:
                parts.append(missing.astype(np.float64)[:, None])
            if column.knots:
                parts.append(spline_basis(filled, column.knots))
        for column in self.categorical:
            index = {category: i for i, category in enumerate(column.categories)}
            onehot = np.zeros((len(frame), len(column.categories)))
            for row, value in enumerate(_as_strings(frame[column.name])):
                if value in index:
                    onehot[row, index[value]] = 1.0
            parts.append(onehot)
        if not parts:
            return np.zeros((len(frame), 0), dtype=np.float32)
        return np.concatenate(parts, axis=1).astype(np.float32)

    def save(self, folder: Path) -> None:
        (folder / FEATURES_FILE).write_text(json.dumps(asdict(self), indent=2), encoding="utf-8")

    @classmethod
    def load(cls, path: Path) -> FeatureEncoder:
        saved = json.loads(path.read_text(encoding="utf-8"))
        return cls(
            [NumericColumn(**c) for c in saved["numeric"]],  # older runs: no knots
            [CategoricalColumn(**c) for c in saved["categorical"]],
            saved.get("center"),
        )


def fit_logistic(matrix: Any, labels: np.ndarray, seed: int) -> Any:
    """The logistic regression the raw-column baseline fits on the encoded columns, and the
    wide part starts from (scikit-learn defaults: L2, C=1)."""
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(max_iter=5000, random_state=seed).fit(matrix, labels)


def wide_start(
    encoder: FeatureEncoder, frame: pd.DataFrame, labels: np.ndarray, n_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(weight (n_classes, width), bias (n_classes,)): `fit_logistic` on the training rows'
    encoded columns as one linear layer whose softmax gives the regression's probabilities
    (two classes: logits -z/2 and z/2, whose softmax is sigmoid(z)). A class the training rows
    lack gets a bias of -1e4: never predicted, as the regression never predicts it."""
    model = fit_logistic(encoder.transform(frame, "the training data"), labels, seed)
    weight = np.zeros((n_classes, encoder.width))
    bias = np.full(n_classes, -1e4)
    if len(model.classes_) == 2:
        coef = np.vstack([-model.coef_[0], model.coef_[0]]) / 2
        intercept = np.array([-model.intercept_[0], model.intercept_[0]]) / 2
    else:
        coef, intercept = model.coef_, model.intercept_
    weight[model.classes_], bias[model.classes_] = coef, intercept
    return weight, bias


def _numbers(series: pd.Series, source: str) -> np.ndarray:
    import pandas as pd

    values = pd.to_numeric(series, errors="coerce")
    bad = series.notna() & values.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise UserError(
            f"{source}: column {series.name!r}, row {row + 1}: {series.iloc[row]!r} is not a "
            "number, and the model reads this column as numbers. Fix or empty the cell."
        )
    return values.to_numpy(dtype=np.float64)


def _fit_numeric(name: str, series: pd.Series, spline_knots: int = 0) -> NumericColumn:
    values = _numbers(series, "the training data")
    missing = np.isnan(values)
    median = float(np.median(values[~missing])) if (~missing).any() else 0.0
    filled = np.where(missing, median, values)
    scale = float(filled.std())
    knots = spline_knots_of(filled, spline_knots)
    return NumericColumn(
        name, median, float(filled.mean()), scale or 1.0, bool(missing.any()), knots
    )


def spline_knots_of(values: np.ndarray, n_knots: int) -> list[float]:
    """The full knot vector of a cubic B-spline over `values`, as scikit-learn's
    SplineTransformer(knots="quantile") builds it: knots at evenly spaced quantiles, then
    SPLINE_DEGREE more on each side at the end intervals' spacing. [] when `n_knots` is 0 or
    the column has too few distinct values.

    Quantile knots coincide where many rows share one value (a follow-up censored at 12
    months, a 0 standing for "not measured"); the basis may then jump at that value, which is
    what such a column needs: the rows at it can differ in risk from their neighbours."""
    if n_knots < 2 or len(np.unique(values)) < SPLINE_MIN_VALUES:
        return []
    base = np.percentile(values, np.linspace(0, 100, n_knots))
    low, high = base[1] - base[0], base[-1] - base[-2]
    before = base[0] - low * np.arange(SPLINE_DEGREE, 0, -1)
    after = base[-1] + high * np.arange(1, SPLINE_DEGREE + 1)
    return np.concatenate([before, base, after]).tolist()


def spline_basis(values: np.ndarray, knots: list[float]) -> np.ndarray:
    """The B-spline basis at `values`, held constant past the outer quantile knots (a value
    beyond the training range gets the boundary's basis, as SplineTransformer's `constant`
    extrapolation does)."""
    from scipy.interpolate import BSpline

    t = np.asarray(knots)
    inside = np.clip(values, t[SPLINE_DEGREE], t[-SPLINE_DEGREE - 1])
    return BSpline.design_matrix(inside, t, SPLINE_DEGREE).toarray()


def _as_strings(series: pd.Series) -> list[str]:
    return series.astype(object).where(series.notna(), MISSING).astype(str).tolist()


class SideFeatures(Inputs):
    """An `Inputs` whose items also carry a feature vector; see the module docstring."""

    def __init__(self, inner: Inputs, encoder: FeatureEncoder | None = None):
        self.inner, self.encoder = inner, encoder
        self.kind = inner.kind

    @property
    def tokenizer(self) -> Any:
        return getattr(self.inner, "tokenizer", None)

    def encode(self, texts: Sequence[str]) -> list[Any]:
        raise UserError(
            "This model reads table columns beside the text (model.side_features): give it "
            "table rows (a file with the training data's columns), not bare texts."
        )

    def encode_examples(self, examples: Examples) -> list[tuple[Any, np.ndarray]]:
        if examples.features is None or self.encoder is None:
            raise UserError(
                f"{examples.source}: the model reads table columns beside the text "
                "(model.side_features), and these examples carry none."
            )
        vectors = self.encoder.transform(examples.features, examples.source)
        return list(zip(self.inner.encode_examples(examples), vectors, strict=True))

    def with_inner(self, inner: Inputs) -> SideFeatures:
        """The same features over other inner items (e.g. the layer cache's states)."""
        return SideFeatures(inner, self.encoder)

    def collate(self, items: list[Any], train: bool = False) -> dict[str, torch.Tensor]:
        batch = self.inner.collate([item[0] for item in items], train=train)
        batch["features"] = torch.from_numpy(np.stack([item[1] for item in items]))
        return batch

    def lengths(self, items: Sequence[Any]) -> list[int] | None:
        return self.inner.lengths([item[0] for item in items])

    def notes(self, *groups: Sequence[Any]) -> list[str]:
        return self.inner.notes(*([item[0] for item in group] for group in groups))

    def warnings(self, *groups: Sequence[Any]) -> list[str]:
        return self.inner.warnings(*([item[0] for item in group] for group in groups))

    def save(self, folder: Path) -> None:
        self.inner.save(folder)
        if self.encoder is not None:
            self.encoder.save(folder)
