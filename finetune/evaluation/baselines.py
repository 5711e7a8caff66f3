"""Simple baselines fitted on exactly the rows the model trains on, scored on the same split.

They answer the question a buyer asks first: was fine-tuning worth it? Each returns class
probabilities with one column per label id, like the model does, so `metrics` treats
them identically.

A baseline a run may deliver (`finetune.evaluation.selection`) also leaves its fitted model in
`BaselineInputs.predictors` under its name: a picklable object whose `predict_proba(examples)`
gives the probabilities it returned, for any `Examples` (texts, and table columns in
`features`). The run saves it with joblib, and `Run.predict_proba` serves it when it is the
delivered model. A predictor with `reads_vectors = True` reads the frozen backbone's pooled
vectors instead, which only the run's own model computes (embedding_logreg's probe).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from finetune.evaluation.text_metrics import CJK_SHARE, cjk_share

if TYPE_CHECKING:
    import pandas as pd

    from finetune.data.tables import Examples


@dataclass
class BaselineInputs:
    train_texts: list[str]
    train_labels: np.ndarray
    eval_texts: list[str]
    n_classes: int
    seed: int
    # Frozen-backbone vectors, computed once by the engine when a baseline needs them.
    train_vectors: np.ndarray | None = None
    eval_vectors: np.ndarray | None = None
    # The examples' side data (Examples.features), for recipe baselines on raw columns.
    train_features: pd.DataFrame | None = None
    eval_features: pd.DataFrame | None = None
    fitted: dict[str, object] = field(default_factory=dict)
    # Fitted predictors by baseline name (`predict_proba(examples)`): what a run can deliver.
    predictors: dict[str, Any] = field(default_factory=dict)

    def eval_examples(self) -> Examples:
        """The rows the baselines score, as Examples (unlabelled), for a predictor."""
        from finetune.data.tables import Examples

        labels = [""] * len(self.eval_texts)
        return Examples(self.eval_texts, labels, "scored rows", self.eval_features)


def _full_proba(model: LogisticRegression, features, n_classes: int) -> np.ndarray:
    proba = np.zeros((features.shape[0], n_classes))
    proba[:, model.classes_] = model.predict_proba(features)
    return proba


@dataclass
class TextPredictor:
    """A vectorizer of texts and a classifier on its output (tfidf_logreg)."""

    vectorizer: Any
    model: Any
    n_classes: int

    def predict_proba(self, examples: Examples) -> np.ndarray:
        from finetune.data.columns import to_list

        features = self.vectorizer.transform(to_list(examples.texts))
        return _full_proba(self.model, features, self.n_classes)

    def portable(self) -> dict[str, Any]:
        """Its parts as plain scikit-learn objects, for a folder without finetune-kit."""
        return {"vectorizer": self.vectorizer, "model": self.model, "n_classes": self.n_classes}


def tfidf_vectorizer(train_texts: list[str]) -> tuple[TfidfVectorizer, str]:
    """Word 1-2 grams, or character 1-3 grams when the training texts are mostly CJK.

    Chinese and Japanese are written without spaces: split on spaces, a whole sentence is one
    "word" that never recurs, and the baseline learns nothing (docs/models.md, "Chinese").
    Decided from the training texts only; returns the vectorizer and what was chosen."""
    share = cjk_share(train_texts)
    if share > CJK_SHARE:
        vectorizer = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True)
        return vectorizer, f"character 1-3 grams ({share:.0%} of the training letters are CJK)"
    vectorizer = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    return vectorizer, "word 1-2 grams"


def tfidf_logreg(inputs: BaselineInputs) -> np.ndarray:
    """TF-IDF (word 1-2 grams; character 1-3 grams for CJK text) + logistic regression: what
    a startup gets in ten lines."""
    vectorizer, analyzer = tfidf_vectorizer(inputs.train_texts)
    inputs.fitted["tfidf_analyzer"] = analyzer
    return vectorized_logreg(vectorizer, inputs)


def vectorized_logreg(vectorizer: TfidfVectorizer, inputs: BaselineInputs) -> np.ndarray:
    """Logistic regression on the features `vectorizer` learns from the training texts."""
    train = vectorizer.fit_transform(inputs.train_texts)
    # saga, not the default lbfgs: the same objective, but lbfgs keeps ten past gradients of
    # size n_features x n_classes, and glibc keeps that memory (docs/benchmarks.md, "Memory").
    model = LogisticRegression(C=10.0, max_iter=3000, random_state=inputs.seed, solver="saga")
    model.fit(train, inputs.train_labels)
    predictor = TextPredictor(vectorizer, model, inputs.n_classes)
    inputs.predictors["tfidf_logreg"] = predictor
    return predictor.predict_proba(inputs.eval_examples())


@dataclass
class LinearProbe:
    """A logistic regression on standardised frozen vectors, folded into one linear layer."""

    weight: np.ndarray  # (n_classes, hidden)
    bias: np.ndarray  # (n_classes,)
    center: np.ndarray | None = None  # (hidden,) mean of the vectors it was fitted on
    strength: float = 1.0  # the logistic regression's C

    def predict_proba(self, vectors: np.ndarray) -> np.ndarray:
        logits = vectors @ self.weight.T + self.bias
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        return shifted / shifted.sum(axis=1, keepdims=True)


# The probe's inverse regularisation strengths tried by inner folds (probe_strength).
PROBE_STRENGTHS = (0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
PROBE_FOLDS = 3


def probe_strength(standardised: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """The probe's C, chosen by the mean held-out log loss of `PROBE_FOLDS` stratified folds of
    the training rows. No single C suits every number of rows, dimensions and classes: at
    sklearn's default of 1.0, a probe on many dimensions from a few thousand rows is
    confidently wrong on held-out rows, and a head started from it trains unstably
    (docs/architecture.md). With fewer than two rows in some class: 1.0."""
    from sklearn.model_selection import StratifiedKFold

    classes, counts = np.unique(labels, return_counts=True)
    folds = min(PROBE_FOLDS, int(counts.min()))
    if folds < 2 or len(classes) < 2:
        return 1.0
    losses = np.zeros(len(PROBE_STRENGTHS))
    for fit_rows, held_rows in StratifiedKFold(folds, shuffle=True, random_state=seed).split(
        labels, labels
    ):
        # Each C starts from the previous, weaker one's solution: the same optimum, reached in
        # a fraction of the iterations.
        model = LogisticRegression(max_iter=3000, random_state=seed, warm_start=True)
        truth = np.searchsorted(classes, labels[held_rows])
        for k, strength in enumerate(PROBE_STRENGTHS):
            model.set_params(C=strength).fit(standardised[fit_rows], labels[fit_rows])
            held = model.predict_proba(standardised[held_rows])[np.arange(len(held_rows)), truth]
            losses[k] -= np.log(np.clip(held, 1e-15, 1.0)).mean() / folds
    return PROBE_STRENGTHS[int(np.argmin(losses))]


def fit_probe(vectors: np.ndarray, labels: np.ndarray, n_classes: int, seed: int) -> LinearProbe:
    """The frozen backbone's linear probe: a logistic regression on standardised vectors,
    its C chosen on the training rows (probe_strength)."""
    scaler = StandardScaler().fit(vectors)
    # Some pooled dimensions are dead (all-MiniLM-L6-v2 has two at about 1e-33): standardised,
    # their float noise looks like signal, and folding 1/scale into the head gives weights near
    # 1e32 that turn any later change of those dimensions into exploding logits. Ignore them.
    dead = scaler.scale_ < 1e-6 * np.median(scaler.scale_)
    scaler.scale_[dead] = np.inf
    standardised = scaler.transform(vectors)
    strength = probe_strength(standardised, labels, seed)
    model = LogisticRegression(C=strength, max_iter=3000, random_state=seed)
    model.fit(standardised, labels)
    # (x - mean) / scale @ W.T + b  ==  x @ (W / scale).T + (b - W @ (mean / scale))
    weight = np.zeros((n_classes, vectors.shape[1]))
    bias = np.full(n_classes, -1e4)  # a class the regression never saw stays impossible
    coef = model.coef_ if len(model.classes_) > 2 else np.vstack([-model.coef_, model.coef_])
    intercept = (
        model.intercept_ if len(model.classes_) > 2 else np.array([0.0, model.intercept_[0]])
    )
    if len(model.classes_) == 2:
        coef, intercept = (
            coef / 2,
            intercept - intercept.mean(),
        )  # softmax of (-z/2, z/2) == sigmoid(z)
    weight[model.classes_] = coef / scaler.scale_
    bias[model.classes_] = intercept - (coef * (scaler.mean_ / scaler.scale_)).sum(axis=1)
    return LinearProbe(weight=weight, bias=bias, center=scaler.mean_.copy(), strength=strength)


@dataclass
class VectorPredictor:
    """embedding_logreg as a deliverable predictor: its probe reads the frozen backbone's pooled
    vectors, which the run's own model computes with its adapter disabled (Run.predict_proba)."""

    probe: LinearProbe
    reads_vectors: ClassVar[bool] = True

    def predict_proba(self, vectors: np.ndarray) -> np.ndarray:
        return self.probe.predict_proba(vectors)


def embedding_logreg(inputs: BaselineInputs) -> np.ndarray:
    """Logistic regression on the frozen backbone's pooled vectors (no fine-tuning at all)."""
    probe = fit_probe(inputs.train_vectors, inputs.train_labels, inputs.n_classes, inputs.seed)
    inputs.fitted["probe"] = probe
    inputs.predictors["embedding_logreg"] = VectorPredictor(probe)
    return probe.predict_proba(inputs.eval_vectors)


@dataclass
class PixelPredictor:
    """Logistic regression on standardised, downscaled pixels of the images at the paths."""

    scaler: Any
    model: Any
    n_classes: int

    def predict_proba(self, examples: Examples) -> np.ndarray:
        from finetune.data.columns import to_list
        from finetune.data.images import PIXEL_SIDE, pixel_vectors

        pixels = self.scaler.transform(pixel_vectors(to_list(examples.texts), PIXEL_SIDE))
        return _full_proba(self.model, pixels, self.n_classes)


def pixel_logreg(inputs: BaselineInputs) -> np.ndarray:
    """Images: logistic regression on downscaled raw pixels (no pretrained model at all)."""
    from finetune.data.images import PIXEL_SIDE, pixel_vectors

    train = pixel_vectors(inputs.train_texts, PIXEL_SIDE)
    scaler = StandardScaler().fit(train)
    model = LogisticRegression(C=0.1, max_iter=3000, random_state=inputs.seed)
    model.fit(scaler.transform(train), inputs.train_labels)
    predictor = PixelPredictor(scaler, model, inputs.n_classes)
    inputs.predictors["pixel_logreg"] = predictor
    return predictor.predict_proba(inputs.eval_examples())


Baseline = Callable[[BaselineInputs], np.ndarray]

BASELINES: dict[str, Baseline] = {
    "tfidf_logreg": tfidf_logreg,
    "embedding_logreg": embedding_logreg,
    "pixel_logreg": pixel_logreg,
}
NEEDS_VECTORS = {"embedding_logreg"}


def resolve_baselines(entries: tuple[str | Baseline, ...]) -> dict[str, Baseline]:
    """Recipe baselines by name: engine ones given by name, recipe ones given as functions."""
    resolved = {}
    for entry in entries:
        if isinstance(entry, str):
            if entry not in BASELINES:
                raise ValueError(f"unknown baseline {entry!r}; known: {', '.join(BASELINES)}")
            resolved[entry] = BASELINES[entry]
        else:
            resolved[entry.__name__] = entry
    return resolved
