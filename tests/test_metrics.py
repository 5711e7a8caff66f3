import numpy as np
import pytest
from sklearn.metrics import f1_score, recall_score, roc_auc_score

from finetune.baselines import fit_probe
from finetune.metrics import classification_metrics


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


def test_class_missing_from_eval_split_is_left_out_of_macro_averages():
    y = np.array([0, 0, 1, 1])  # class 2 never appears in this small split
    proba = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.2, 0.1, 0.7]])
    m = classification_metrics(y, proba, ["a", "b", "c"])
    assert m["recall"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["per_class"]["c"]["auc"] is None
    assert m["auc"] == pytest.approx((1.0 + 0.625) / 2)  # classes a and b only


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
    reference = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=3000)).fit(x, y)
    np.testing.assert_allclose(probe.predict_proba(x), reference.predict_proba(x), atol=1e-6)
