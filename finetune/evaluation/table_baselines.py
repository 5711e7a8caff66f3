"""Baselines on a table's raw columns: what a statistician would fit first.

Tabular recipes (records rendered as text, finetune.data.records) keep the raw columns as
`Examples.features`; these baselines read them. Both fit on exactly the rows the model trains
on; imputation and encoding are fitted inside, on those rows only. scikit-learn is imported
when a baseline runs, so a recipe can name them without slowing `finetune --help`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from finetune.data.records import KINDS
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
    from finetune.modeling.features import column_kinds

    kinds: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for column, kind in column_kinds(train).items():
        kinds[kind].append(column)
    return kinds


def _as_strings(frame: pd.DataFrame) -> pd.DataFrame:
    # The same "missing" category as the side features' one-hot (features.MISSING).
    return frame.astype(object).where(frame.notna(), "missing").astype(str)


def logistic_regression(inputs: BaselineInputs) -> np.ndarray:
    """Logistic regression on the raw columns: numbers imputed (median, with a was-missing
    flag) and standardised, categories one-hot (the side features' `FeatureEncoder`, the
    encoding a hybrid model's wide part reads), free text as TF-IDF.

    Leaves (encoder, regression) in `inputs.fitted["logistic_regression"]` when the table has
    no free text: the regression is then exactly what a wide part starts from."""
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer

    from finetune.modeling.features import FeatureEncoder, column_kinds, fit_logistic

    _columns_by_kind(inputs)  # the evaluation rows have the training rows' columns
    train, evaluation = inputs.train_features, inputs.eval_features
    encoder = FeatureEncoder.fit(train, required=False)
    train_parts = [sparse.csr_matrix(encoder.transform(train, "the training data"))]
    eval_parts = [sparse.csr_matrix(encoder.transform(evaluation, "the evaluation data"))]
    notes = [name for name, kind in column_kinds(train).items() if kind == "text"]
    for column in notes:
        vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
        train_parts.append(vectorizer.fit_transform(train[column].fillna("").astype(str)))
        eval_parts.append(vectorizer.transform(evaluation[column].fillna("").astype(str)))
    if not notes:  # dense, as the wide part's own fit reads it: the same regression
        model = fit_logistic(train_parts[0].toarray(), inputs.train_labels, inputs.seed)
        inputs.fitted["logistic_regression"] = (encoder, model)
        return _full_proba(model, eval_parts[0].toarray(), inputs.n_classes)
    model = fit_logistic(sparse.hstack(train_parts).tocsr(), inputs.train_labels, inputs.seed)
    return _full_proba(model, sparse.hstack(eval_parts).tocsr(), inputs.n_classes)


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


def _full_proba(model: Any, features: Any, n_classes: int) -> np.ndarray:
    proba = np.zeros((features.shape[0], n_classes))
    proba[:, model.classes_] = model.predict_proba(features)
    return proba
