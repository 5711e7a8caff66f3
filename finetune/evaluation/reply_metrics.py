"""What a generated reply is judged on beyond text overlap, and the retrieval baselines.

- Intent consistency: a reply classifier (TF-IDF + logistic regression, reply text -> the
  intent of the message it answers) fitted on the training replies labels each generated
  reply (a training reply, as retrieval serves it, out of fold); accuracy, macro recall and
  macro F1 of that label against the message's true intent.
  It asks "does the reply answer the right question?", which overlap metrics blur.
- Placeholder fidelity: the share of replies whose `{{...}}` placeholders are exactly their
  reference's (all kept, none invented).
- PII leaks: e-mail addresses, phone and card numbers in generated replies, counted with the
  redactor's own detectors (finetune/data/pii.py).
- Foreign numbers: numbers of 5 digits or more in a reply that its message did not give
  (another customer's order number, in a retrieved reply or one a model copied), counted as
  the redactor of served replies finds them.
- Retrieval: the reply of the most similar training message, by TF-IDF cosine or by cosine of
  given vectors (the engine computes frozen-embedding vectors, and the consensus of the
  nearest few: modeling/retrieval.py; no torch here).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, recall_score
from sklearn.pipeline import Pipeline, make_pipeline

from finetune.data import pii
from finetune.evaluation.baselines import tfidf_vectorizer
from finetune.evaluation.text_metrics import chrf, rouge_l

PLACEHOLDER = re.compile(r"\{\{[^{}]+\}\}")
# The keys of each method's figures under `reply` in metrics.json.
REPLY_FIGURES = (
    "rougeL",
    "chrf",
    "intent_accuracy",
    "intent_recall",
    "intent_f1",
    "placeholder_fidelity",
    "pii_leaks",
    "foreign_numbers",
)


def placeholders(text: str) -> set[str]:
    return set(PLACEHOLDER.findall(text))


def placeholder_fidelity(generated: list[str], references: list[str]) -> float:
    """Share of generated replies holding exactly their reference's placeholders."""
    pairs = list(zip(generated, references, strict=True))
    kept = [placeholders(g) == placeholders(r) for g, r in pairs]
    return float(np.mean(kept)) if kept else 0.0


def pii_leaks(texts: list[str]) -> int:
    """E-mail addresses, phone and card numbers found in `texts` (the redactor's detectors)."""
    return pii.redact_all(texts)[1].total


def foreign_numbers(texts: list[str], conversations: list[str]) -> int:
    """Numbers of 5 digits or more in `texts` that their conversations did not give."""
    return sum(pii.foreign_numbers(t, c)[1] for t, c in zip(texts, conversations, strict=True))


def fit_reply_classifier(replies: list[str], intents: list[str], seed: int) -> Pipeline:
    """Reply text -> intent, on the training replies (the features of the classification
    recipe's TF-IDF baseline: word 1-2 grams, character 1-3 grams for CJK replies)."""
    model = make_pipeline(
        tfidf_vectorizer(replies)[0],
        LogisticRegression(C=10.0, max_iter=3000, random_state=seed),
    )
    return model.fit(replies, intents)


def _same_text(text: str) -> str:
    # Inside a run retrieval's replies are the training replies themselves; replies read back
    # from a run's predictions.csv have "\n" for "\r\n" and must still match.
    return " ".join(text.split())


@dataclass
class OutOfFoldJudge:
    """The reply classifier, except on replies that are word for word training replies (what
    retrieval serves): those get the label of a classifier fitted without them, out of fold.
    The full classifier labels its own training replies without error, which would favour
    retrieval over generated replies, which it has never seen. `in_sample`: the intents whose
    training replies are too few to hold one out (a single reply): the full classifier labels
    those, so on them retrieval is still favoured, and the report says so."""

    classifier: Any
    held_out: dict[str, str]
    # A class-level default, so a judge pickled before this field existed still loads.
    in_sample: tuple[str, ...] = ()

    def predict(self, texts: list[str]) -> np.ndarray:
        fitted = zip(texts, self.classifier.predict(texts), strict=True)
        return np.array([self.held_out.get(_same_text(t), f) for t, f in fitted])


def fit_reply_judge(
    replies: list[str], intents: list[str], seed: int, folds: int = 10
) -> OutOfFoldJudge:
    """The reply classifier, with out-of-fold labels for the training replies (stratified
    folds, at most `folds`, fewer when an intent has fewer replies). Replies of an intent with
    a single training reply keep the full classifier's label (held out, their intent would be
    unknown to the fold's classifier); so do all replies when no fold split is possible."""
    import warnings

    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    classifier = fit_reply_classifier(replies, intents, seed)
    counts = dict(zip(*np.unique(intents, return_counts=True), strict=True))
    shared = [n for n in counts.values() if n > 1]
    everyone_in_sample = OutOfFoldJudge(classifier, {}, tuple(sorted(map(str, counts))))
    if not shared:
        return everyone_in_sample
    splitter = StratifiedKFold(min(folds, min(shared)), shuffle=True, random_state=seed)
    try:
        with warnings.catch_warnings():  # a single-reply intent sits in one fold only
            warnings.filterwarnings("ignore", "The least populated class", UserWarning)
            # cross_val_predict fits a fresh copy of the classifier on each fold's other
            # replies.
            held = cross_val_predict(classifier, replies, intents, cv=splitter)
    except ValueError:  # a fold's other replies hold a single intent: nothing to fit
        return everyone_in_sample
    labels = zip(replies, intents, held, strict=True)
    held_out = {_same_text(r): str(h) for r, i, h in labels if counts[i] > 1}
    single = tuple(sorted(str(i) for i, n in counts.items() if n == 1))
    return OutOfFoldJudge(classifier, held_out, single)


def intent_consistency(
    classifier: Any, generated: list[str], intents: list[str]
) -> dict[str, float]:
    """Accuracy, macro recall and macro F1 of the classifier's label of each generated reply
    against the true intent of the message it answers (macro over the true intents)."""
    predicted = classifier.predict(generated)
    labels = sorted(set(intents))
    return {
        "intent_accuracy": float(accuracy_score(intents, predicted)),
        "intent_recall": float(
            recall_score(intents, predicted, labels=labels, average="macro", zero_division=0)
        ),
        "intent_f1": float(
            f1_score(intents, predicted, labels=labels, average="macro", zero_division=0)
        ),
    }


def reply_figures(
    generated: list[str],
    references: list[str],
    conversations: list[str],
    intents: list[str] | None = None,
    classifier: Any = None,
) -> dict[str, float | int | None]:
    """One method's figures (REPLY_FIGURES) on replies to `conversations` (each prompt's text,
    all turns); intent figures are None without intents."""
    figures: dict[str, float | int | None] = {
        "rougeL": rouge_l(generated, references),
        "chrf": chrf(generated, references),
        "intent_accuracy": None,
        "intent_recall": None,
        "intent_f1": None,
        "placeholder_fidelity": placeholder_fidelity(generated, references),
        "pii_leaks": pii_leaks(generated),
        "foreign_numbers": foreign_numbers(generated, conversations),
    }
    if intents is not None and classifier is not None:
        figures.update(intent_consistency(classifier, generated, intents))
    return figures


@dataclass
class Retrieval:
    """The reply of the nearest training message (cosine similarity)."""

    replies: list[str]

    def nearest(self, train_vectors: Any, query_vectors: Any) -> list[str]:
        scores = query_vectors @ train_vectors.T
        best = np.asarray(scores.argmax(axis=1)).ravel()
        return [self.replies[i] for i in best]


# The figures a reply run's verdict and delivery weigh (overlap with the reference reply).
VERDICT_METRICS = ("rougeL", "chrf")


def beats_on_both(rival: dict[str, float], model: dict[str, float]) -> bool:
    """Whether `rival`'s figures beat `model`'s on every VERDICT_METRICS by more than the
    engine's margin (the classification delivery rule's)."""
    from finetune.evaluation.selection import MARGIN

    return all(rival[k] > model[k] + MARGIN for k in VERDICT_METRICS)


def retrieve_tfidf(train_messages: list[str], replies: list[str], queries: list[str]) -> list[str]:
    """Nearest training message by TF-IDF cosine (rows are L2-normalised; word 1-2 grams, or
    character 1-3 grams for CJK messages)."""
    vectorizer = tfidf_vectorizer(train_messages)[0]
    train = vectorizer.fit_transform(train_messages)
    return Retrieval(replies).nearest(train, vectorizer.transform(queries))
