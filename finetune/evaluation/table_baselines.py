"""Baselines on a table's raw columns: what a statistician would fit first.

Tabular recipes (records rendered as text, finetune.data.records) keep the raw columns as
`Examples.features`; these baselines read them. Both fit on exactly the rows the model trains
on; imputation and encoding are fitted inside, on those rows only. scikit-learn is imported
when a baseline runs, so a recipe can name them without slowing `finetune --help`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from finetune.data.records import KINDS, kind_of
from finetune.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

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
            FunctionTransformer(lambda x: x.fillna("").astype(str).iloc[:, 0]),
            TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True),
        )
        parts.append((f"text_{column}", notes, [column]))
    model = make_pipeline(
        ColumnTransformer(parts),
        LogisticRegression(max_iter=5000, random_state=inputs.seed),
    )
    model.fit(inputs.train_features, inputs.train_labels)
    return _full_proba(model, inputs.eval_features, inputs.n_classes)


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
    return _full_proba(model, inputs.eval_features, inputs.n_classes)


def _full_proba(model: Any, features: pd.DataFrame, n_classes: int) -> np.ndarray:
    proba = np.zeros((len(features), n_classes))
    proba[:, model.classes_] = model.predict_proba(features)
    return proba
