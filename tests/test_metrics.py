import numpy as np
import pytest
from sklearn.metrics import (
    f1_score,
    precision_recall_fscore_support,
    recall_score,
    roc_auc_score,
)

from finetune.evaluation.baselines import fit_probe
from finetune.evaluation.metrics import classification_metrics


def test_multiclass_matches_sklearn_macro():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, size=200)
    proba = rng.dirichlet(np.ones(4), size=200)
    proba[np.arange(200), y] += 0.3  # informative but imperfect
    proba /= proba.sum(axis=1, keepdims=True)
    m = classification_metrics(y, proba, ["a", "b", "c", "d"])
    pred = proba.argmax(1)
    assert m["accuracy"] == pytest.approx((pred == y).mean())
    assert m["recall"] == pytest.approx(recall_score(y, pred, average="macro"))
    assert m["f1"] == pytest.approx(f1_score(y, pred, average="macro"))
    assert m["auc"] == pytest.approx(roc_auc_score(y, proba, multi_class="ovr", average="macro"))
    assert set(m["per_class"]) == {"a", "b", "c", "d"}


def test_binary_reports_positive_class():
    y = np.array([0, 0, 1, 1, 1, 0])
    p1 = np.array([0.1, 0.6, 0.8, 0.4, 0.9, 0.2])
    m = classification_metrics(y, np.column_stack([1 - p1, p1]), ["no", "yes"])
    assert m["recall"] == pytest.approx(2 / 3)
    assert m["auc"] == pytest.approx(roc_auc_score(y, p1))
    assert m["positive_label"] == "yes"


def test_class_neither_in_truth_nor_predicted_is_left_out_of_macro_averages():
    y = np.array([0, 0, 1, 1])  # class 2 never appears in this small split, nor is predicted
    proba = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.7, 0.2, 0.1]])
    m = classification_metrics(y, proba, ["a", "b", "c"])
    assert m["recall"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["precision"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert m["per_class"]["c"]["auc"] is None
    assert m["auc"] == pytest.approx((0.75 + 0.75) / 2)  # classes a and b only


@pytest.mark.parametrize("seed", range(5))
def test_macro_figures_count_classes_predicted_but_absent_from_the_truth(seed):
    """scikit-learn's macro average without labels=: truth and predictions together."""
    rng = np.random.default_rng(seed)
    n_classes = 6
    y = rng.integers(0, 3, size=60)  # classes 3-5 never occur in the truth...
    proba = rng.dirichlet(np.ones(n_classes), size=60)
    proba[:10, 4] += 2.0  # ...but class 4 is predicted ten times (always wrongly)
    proba[np.arange(10, 60), y[10:]] += 0.4
    proba[:, 5] = 0.0  # ...and class 5 never: absent from both, it is left out
    pred = proba.argmax(1)
    assert 4 in pred and 5 not in pred
    precision, recall, f1, _ = precision_recall_fscore_support(
        y, pred, average="macro", zero_division=0
    )
    m = classification_metrics(y, proba, list("abcdef"))
    assert m["precision"] == pytest.approx(precision)
    assert m["recall"] == pytest.approx(recall)
    assert m["f1"] == pytest.approx(f1)
    # The wrong predictions of class 4 lower macro precision: it is not averaged over the truth's
    # classes alone.
    truth_only = np.mean([m["per_class"][c]["precision"] for c in "abc"])
    assert m["precision"] < truth_only


def test_single_class_eval_has_no_auc():
    m = classification_metrics(np.array([1, 1]), np.array([[0.2, 0.8], [0.6, 0.4]]), ["a", "b"])
    assert m["auc"] is None
    assert m["accuracy"] == 0.5


@pytest.mark.parametrize("n_classes", [2, 4])
def test_probe_folds_scaler_and_regression_into_one_linear_layer(n_classes):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    x = rng.normal(size=(120, 6)) * rng.uniform(0.1, 5, size=6) + rng.normal(size=6)
    y = rng.integers(0, n_classes, size=120)
    probe = fit_probe(x, y, n_classes, seed=0)
    regression = LogisticRegression(C=probe.strength, max_iter=3000)
    reference = make_pipeline(StandardScaler(), regression).fit(x, y)
    np.testing.assert_allclose(probe.predict_proba(x), reference.predict_proba(x), atol=1e-6)


def test_probe_strength_is_chosen_by_folds_of_the_training_rows():
    """Few rows and many noisy dimensions: folds pick a C below 1.0, and the probe fitted with
    it has a lower log loss on fresh rows than C=1.0; with many clean rows they pick a weaker
    regularisation."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.preprocessing import StandardScaler

    from finetune.evaluation.baselines import PROBE_STRENGTHS

    rng = np.random.default_rng(0)
    direction = rng.normal(size=200)

    def rows(n: int, noise: float) -> tuple[np.ndarray, np.ndarray]:
        y = rng.integers(0, 2, size=n)
        x = np.outer(2 * y - 1, direction) * 0.05 + rng.normal(size=(n, 200)) * noise
        return x, y

    x, y = rows(150, 1.0)
    probe = fit_probe(x, y, 2, seed=0)
    assert probe.strength < 1.0
    fresh_x, fresh_y = rows(2000, 1.0)
    loose = LogisticRegression(C=1.0, max_iter=3000).fit(StandardScaler().fit_transform(x), y)
    scaled = StandardScaler().fit(x).transform(fresh_x)
    assert log_loss(fresh_y, probe.predict_proba(fresh_x)) < log_loss(
        fresh_y, loose.predict_proba(scaled)
    )
    clean_x, clean_y = rows(2000, 0.05)
    assert fit_probe(clean_x, clean_y, 2, seed=0).strength >= 1.0 > probe.strength
    assert min(PROBE_STRENGTHS) < probe.strength  # inside the grid, not at its edge


@pytest.mark.parametrize("n_classes", [2, 4])
def test_evaluate_module_gives_the_reports_numbers(n_classes):
    """The local `evaluate` module (for transformers.Trainer) equals the engine's metrics."""
    import evaluate

    from finetune.evaluation.metrics import evaluate_module_path

    rng = np.random.default_rng(n_classes)
    y = rng.integers(0, n_classes, size=80)
    logits = rng.normal(size=(80, n_classes))
    logits[np.arange(80), y] += 1.0
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    labels = [f"class-{k}" for k in range(n_classes)]
    engine = classification_metrics(y, proba, labels)
    metric = evaluate.load(evaluate_module_path())
    from_proba = metric.compute(predictions=proba, references=y, label_names=labels)
    from_logits = metric.compute(
        predictions=logits, references=y, label_names=labels, from_logits=True
    )
    for name in ("accuracy", "recall", "f1", "precision", "auc"):
        assert from_proba[name] == pytest.approx(engine[name], abs=1e-12), name
        assert from_logits[name] == pytest.approx(engine[name], abs=1e-12), name
    if n_classes == 2:
        assert from_proba["specificity"] == pytest.approx(engine["specificity"])
        assert from_proba["brier"] == pytest.approx(engine["brier"])
