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

from finetune.data.records import KINDS
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
    from finetune.modeling.features import column_kinds

    kinds: dict[str, list[str]] = {kind: [] for kind in KINDS}
    for column, kind in column_kinds(train).items():
        kinds[kind].append(column)
    return kinds


def _as_strings(frame: pd.DataFrame) -> pd.DataFrame:
    # The same "missing" category as the side features' one-hot (features.MISSING).
    return frame.astype(object).where(frame.notna(), "missing").astype(str)


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
    flag) and standardised, categories one-hot (the side features' `FeatureEncoder`, the
    encoding a hybrid model's wide part reads), free text as TF-IDF.

    Leaves (encoder, regression) in `inputs.fitted["logistic_regression"]` when the table has
    no free text: the regression is then exactly what a wide part starts from."""
    from finetune.evaluation.baselines import tfidf_vectorizer
    from finetune.modeling.features import FeatureEncoder, column_kinds, fit_logistic

    _columns_by_kind(inputs)  # the evaluation rows have the training rows' columns
    train = inputs.train_features
    encoder = FeatureEncoder.fit(train, required=False)
    notes = [name for name, kind in column_kinds(train).items() if kind == "text"]
    texts = {column: train[column].fillna("").astype(str).tolist() for column in notes}
    vectorizers = {
        column: tfidf_vectorizer(texts[column])[0].fit(texts[column]) for column in notes
    }
    predictor = ColumnsPredictor(encoder, vectorizers, None, inputs.n_classes)
    encoded = predictor.encode(train, "the training data")
    model = predictor.model = fit_logistic(encoded, inputs.train_labels, inputs.seed)
    if not notes:  # the same regression a wide part's own fit gives
        inputs.fitted["logistic_regression"] = (encoder, model)
    inputs.predictors["logistic_regression"] = predictor
    return predictor.predict_proba(inputs.eval_examples())


@dataclass
class ColumnsPredictor:
    """The logistic-regression baseline: the side features' encoding (plus TF-IDF of free-text
    columns) and the regression on it."""

    encoder: Any  # finetune.modeling.features.FeatureEncoder
    vectorizers: dict[str, Any]  # free-text column -> fitted TfidfVectorizer
    model: Any
    n_classes: int

    def encode(self, frame: pd.DataFrame, source: str) -> Any:
        """Dense encoded columns, or (with free text) a sparse matrix with the TF-IDF beside."""
        from scipy import sparse

        dense = self.encoder.transform(frame, source)
        if not self.vectorizers:
            return dense
        parts = [sparse.csr_matrix(dense)] + [
            vectorizer.transform(frame[column].fillna("").astype(str))
            for column, vectorizer in self.vectorizers.items()
        ]
        return sparse.hstack(parts).tocsr()

    def predict_proba(self, examples: Examples) -> np.ndarray:
        if examples.features is None:
            raise UserError(
                "This run delivers the logistic_regression baseline, which reads the table's "
                "columns: give table rows (--data FILE), not bare texts."
            )
        features = self.encode(examples.features, examples.source)
        return _full_proba(self.model, features, self.n_classes)


def gradient_boosting(inputs: BaselineInputs) -> np.ndarray:
    """scikit-learn's histogram gradient boosting on the raw columns: missing numbers handled
    natively, categories as native categorical splits (past the 255 it can split on, the
    rarest share one category); free-text columns are left out."""
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
            # A code or crash id with thousands of values would stop the fit: the histogram
            # splits at most 255 categories, so the infrequent ones are grouped into one.
            max_categories=255,
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


def _full_proba(model: Any, features: Any, n_classes: int) -> np.ndarray:
    proba = np.zeros((features.shape[0], n_classes))
    proba[:, model.classes_] = model.predict_proba(features)
    return proba
