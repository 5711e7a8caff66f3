"""Baselines on a table's raw columns: what a statistician would fit first.

Tabular recipes (records rendered as text, finetune.data.records) keep the raw columns as
`Examples.features`; these baselines read them. Both fit on exactly the rows the model trains
on; imputation and encoding are fitted inside, on those rows only. scikit-learn is imported
when a baseline runs, so a recipe can name them without slowing `finetune --help`. Each leaves
its fitted pipeline as a `TablePredictor` (BaselineInputs.predictors), which a run can deliver.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from finetune.data.records import KINDS, kind_of
from finetune.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

    from finetune.data.tables import Examples
    from finetune.evaluation.baselines import BaselineInputs


def _columns_by_kind(inputs: BaselineInputs) -> dict[str, list[str]]:
    train, evaluation = inputs.train_features, inputs.eval_features
    if train is None or evaluation is None:
        raise ValueError("tabular baselines need Examples.features on both splits")
    absent = [c for c in train.columns if c not in evaluation.columns]
    if absent:
        raise UserError(
            "The evaluation data lacks columns the training data has: "
            f"{', '.join(absent)}. Give both files the same columns."
        )
    kinds: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for column in train.columns:
        kinds[kind_of(train[column])].append(column)
    return kinds


def _as_strings(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.astype(object).where(frame.notna(), "missing").astype(str)


def _first_column_text(frame: pd.DataFrame) -> pd.Series:
    # A module-level function, not a lambda: the fitted pipeline is pickled with the run.
    return frame.fillna("").astype(str).iloc[:, 0]


@dataclass
class TablePredictor:
    """A fitted scikit-learn pipeline on a table's raw columns (`Examples.features`)."""

    pipeline: Any
    n_classes: int
    name: str

    def predict_proba(self, examples: Examples) -> np.ndarray:
        if examples.features is None:
            raise UserError(
                f"This run delivers the {self.name} baseline, which reads the table's columns: "
                "give table rows (--data FILE), not bare texts."
            )
        needed = list(getattr(self.pipeline, "feature_names_in_", []))
        absent = [c for c in needed if c not in examples.features.columns]
        if absent:
            raise UserError(
                f"{examples.source}: lacks columns the delivered {self.name} baseline reads: "
                f"{', '.join(absent)}. Give it the training data's columns."
            )
        return _full_proba(self.pipeline, examples.features, self.n_classes)


def _kept(inputs: BaselineInputs, name: str, pipeline: Any) -> np.ndarray:
    """Keep the fitted pipeline as the baseline's predictor; its evaluation probabilities."""
    predictor = TablePredictor(pipeline, inputs.n_classes, name)
    inputs.predictors[name] = predictor
    return predictor.predict_proba(inputs.eval_examples())


def logistic_regression(inputs: BaselineInputs) -> np.ndarray:
    """Logistic regression on the raw columns: numbers imputed (median, with a was-missing
    flag) and standardised, categories one-hot, free text as TF-IDF."""
    from sklearn.compose import ColumnTransformer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OneHotEncoder, StandardScaler

    kinds = _columns_by_kind(inputs)
    parts = []
    if kinds["numeric"]:
        numeric = make_pipeline(
            SimpleImputer(strategy="median", add_indicator=True), StandardScaler()
        )
        parts.append(("numeric", numeric, kinds["numeric"]))
    if kinds["categorical"]:
        categorical = make_pipeline(
            FunctionTransformer(_as_strings), OneHotEncoder(handle_unknown="ignore")
        )
        parts.append(("categorical", categorical, kinds["categorical"]))
    for column in kinds["text"]:
        notes = make_pipeline(
            FunctionTransformer(_first_column_text),
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        )
        parts.append((f"text_{column}", notes, [column]))
    model = make_pipeline(
        ColumnTransformer(parts),
        LogisticRegression(max_iter=5000, random_state=inputs.seed),
    )
    model.fit(inputs.train_features, inputs.train_labels)
    return _kept(inputs, "logistic_regression", model)


def gradient_boosting(inputs: BaselineInputs) -> np.ndarray:
    """scikit-learn's histogram gradient boosting on the raw columns: missing numbers handled
    natively, categories as native categorical splits; free-text columns are left out."""
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer, OrdinalEncoder

    kinds = _columns_by_kind(inputs)
    parts = []
    if kinds["categorical"]:
        encoder = OrdinalEncoder(
            handle_unknown="use_encoded_value",
            unknown_value=np.nan,
            encoded_missing_value=np.nan,
        )
        parts.append(
            (
                "categorical",
                make_pipeline(FunctionTransformer(_as_strings), encoder),
                kinds["categorical"],
            )
        )
    if kinds["numeric"]:
        parts.append(("numeric", "passthrough", kinds["numeric"]))
    n_categorical = len(kinds["categorical"])
    model = make_pipeline(
        ColumnTransformer(parts),
        HistGradientBoostingClassifier(
            categorical_features=list(range(n_categorical)) or None,
            random_state=inputs.seed,
        ),
    )
    model.fit(inputs.train_features, inputs.train_labels)
    return _kept(inputs, "gradient_boosting", model)


def _full_proba(model: Any, features: pd.DataFrame, n_classes: int) -> np.ndarray:
    proba = np.zeros((len(features), n_classes))
    proba[:, model.classes_] = model.predict_proba(features)
    return proba
