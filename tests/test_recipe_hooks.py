"""What a recipe can plug into the engine: options, flags, side features, its own baselines,
extra metrics and report sections; and the engine's two-class reporting they rely on."""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytest
from run_checks import check_reported_figures
from typer.testing import CliRunner

from finetune.cli import recipe_app
from finetune.data.tables import Examples, stratified_split
from finetune.errors import UserError
from finetune.evaluation.baselines import BaselineInputs
from finetune.evaluation.metrics import (
    MODEL_NAME,
    at_threshold,
    choose_threshold,
    classification_metrics,
    operating_point,
)
from finetune.recipe import POSITIVE_LABEL, TARGET_RECALL, EvalContext, Flag, Recipe, Splits
from finetune.run import class_weights, label_order, positive_label

WORDS = {"yes": ["great", "love", "perfect", "superb"], "no": ["awful", "broken", "bad", "poor"]}


def binary_examples(n: int, seed: int, positive_share: float, source: str) -> Examples:
    rng = np.random.default_rng(seed)
    labels = ["yes" if rng.random() < positive_share else "no" for _ in range(n)]
    texts = [f"{rng.choice(WORDS[label])} item {i}" for i, label in enumerate(labels)]
    features = pd.DataFrame({"score": [1.0 if label == "yes" else 0.0 for label in labels]})
    features["score"] += rng.normal(0, 0.3, n)
    return Examples(texts, labels, source, features)


def score_logreg(inputs: BaselineInputs) -> np.ndarray:
    """A recipe baseline that reads the side features, not the texts."""
    from sklearn.linear_model import LogisticRegression

    model = LogisticRegression().fit(inputs.train_features[["score"]], inputs.train_labels)
    return model.predict_proba(inputs.eval_features[["score"]])


@dataclass
class ToyOptions:
    positive_share: float = 0.3
    note: str = "none"


class ToyRecipe(Recipe):
    name = "toy"
    title = "Toy two-class recipe"
    defaults = {"train": {"epochs": 2, "batch_size": 8, "eval_batch_size": 16}}
    baselines = ("tfidf_logreg", score_logreg)
    Options = ToyOptions
    extra_key = "toy"
    flags = (
        POSITIVE_LABEL,
        TARGET_RECALL,
        Flag("--positive-share", "options.positive_share", "Share of positives.", float),
    )
    seen: dict = {}

    def split(self, config):
        share = config.options.positive_share
        train = binary_examples(80, 1, share, "toy train")
        return Splits(train, binary_examples(40, 2, share, "toy test"))

    def extra_report(self, context: EvalContext):
        self.seen["context"] = context
        extra = {"positives_in_eval": int((context.y_eval == 1).sum())}
        return extra, ["## Toy section", "", f"{extra['positives_in_eval']} positives.", ""]


toy = ToyRecipe()


@pytest.fixture(scope="module")
def toy_run(tiny_model_dir, tmp_path_factory):
    config = toy.config(
        model={"name": str(tiny_model_dir), "lora_r": 4},
        data={"positive_label": "no"},
        eval={"target_recall": 0.9},
        train={"class_weight": "auto"},
        output=str(tmp_path_factory.mktemp("toy") / "run"),
    )
    return toy.train(config, show_progress=False)


def test_positive_label_goes_second_and_is_reported(toy_run):
    assert toy_run.labels == ["yes", "no"]
    metrics = toy_run.metrics
    assert metrics["positive_label"] == "no"
    # Specificity, Brier score, recall and AUC are those of "no" in the saved probabilities.
    check_reported_figures(toy_run.folder)


def test_threshold_is_chosen_on_validation_rows_and_judged_on_evaluation(toy_run):
    context, point = toy.seen["context"], toy_run.metrics["finetuned"]["operating_point"]
    # The validation rows: the engine's seeded hold-out of the training rows.
    _, val_rows = stratified_split(context.train, toy_run.config.data.val_fraction, 42)
    y_val = np.array([toy_run.labels.index(context.train.labels[i]) for i in val_rows])
    val_scores = toy_run.model_proba([context.train.texts[i] for i in val_rows])[:, 1]
    expected = choose_threshold(y_val, val_scores, 0.9)
    assert point["threshold"] == pytest.approx(expected, abs=5e-3)
    assert point["validation_recall"] >= 0.9 and point["chosen_on"].startswith("validation")
    # The evaluation figures are those of that fixed threshold, whatever recall they give.
    eval_scores = context.model_scores[:, 1]
    at = at_threshold(context.y_eval, eval_scores, point["threshold"])
    assert point["recall"] == at["recall"] and point["specificity"] == at["specificity"]


def test_recipe_baseline_reads_features_and_gets_binary_extras(toy_run):
    baselines = toy_run.metrics["baselines"]
    assert set(baselines) == {"tfidf_logreg", "score_logreg"}
    # The score feature separates the classes almost perfectly; texts are harder.
    assert baselines["score_logreg"]["auc"] > 0.95
    for key in ("specificity", "brier", "operating_point"):
        assert key in baselines["score_logreg"], key


def test_extra_report_hook_gets_all_scores_and_writes_its_section(toy_run):
    context = toy.seen["context"]
    assert set(context.scores) == {MODEL_NAME, "tfidf_logreg", "score_logreg"}
    assert context.model_scores is context.scores[MODEL_NAME]
    assert context.predict_proba(["great item"]).shape == (1, 2)
    assert toy_run.metrics["toy"]["positives_in_eval"] == int((context.y_eval == 1).sum())
    report = (toy_run.folder / "report.md").read_text()
    assert "## Toy section" in report and "Two-class view (positive class: no)" in report
    assert (toy_run.folder / "plots/roc.png").is_file()
    assert (toy_run.folder / "plots/calibration.png").is_file()


def test_options_are_saved_and_reloaded(toy_run):
    saved = (toy_run.folder / "config.yaml").read_text()
    assert "positive_share: 0.3" in saved
    reloaded = toy.load(toy_run.folder)
    assert reloaded.config.options == ToyOptions()
    assert reloaded.labels == toy_run.labels


def test_unknown_option_names_the_key():
    with pytest.raises(UserError, match="options.positive_shar"):
        toy.config(options={"positive_shar": 0.5})
    with pytest.raises(UserError, match="has no options"):
        Recipe().config(options={"x": 1})


def test_recipe_flags_reach_the_config(tiny_model_dir, tmp_path):
    output = tmp_path / "run"
    result = CliRunner().invoke(
        recipe_app(toy),
        [
            "train",
            "--model",
            str(tiny_model_dir),
            "--positive-share",
            "0.5",
            "--target-recall",
            "0.8",
            "--max-steps",
            "2",
            "--output",
            str(output),
        ],
    )
    assert result.exit_code == 0, result.output
    saved = (output / "config.yaml").read_text()
    assert "positive_share: 0.5" in saved and "target_recall: 0.8" in saved
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["operating_point"]["target_recall"] == 0.8
    help_text = CliRunner().invoke(recipe_app(toy), ["train", "--help"]).output
    assert "--positive-share" in help_text and "--positive-label" in help_text


def test_label_order_checks_positive_label():
    assert label_order(["a", "b", "c"], None) == ["a", "b", "c"]  # multiclass: sorted
    assert label_order(["a", "b"], "a") == ["b", "a"]
    with pytest.raises(UserError, match="not a label"):
        label_order(["a", "b"], "c")
    with pytest.raises(UserError, match="two-class"):
        label_order(["a", "b", "c"], "a")


def test_class_weights_balance_classes():
    y = np.array([0] * 90 + [1] * 10)
    weights = class_weights(y, 2, "auto")
    assert np.allclose(weights * np.bincount(y), 50)
    assert class_weights(y, 2, "none") is None


def test_class_weights_are_inverse_frequency_and_zero_for_an_absent_class():
    y = np.array([0] * 7 + [2] * 2 + [3] * 11)  # class 1 absent from the rows
    counts = np.bincount(y, minlength=4).astype(float)
    # The hand-written formula the weights always had: len(y) / (n_classes * count), 0 if absent.
    reference = np.where(counts > 0, len(y) / (4 * np.maximum(counts, 1)), 0.0)
    weights = class_weights(y, 4, "auto")
    assert weights.shape == (4,) and weights[1] == 0
    np.testing.assert_allclose(weights, reference, rtol=1e-12)


def test_threshold_reaches_target_with_most_specificity():
    y = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.6, 0.3, 0.4, 0.7, 0.8, 0.9])
    assert choose_threshold(y, scores, 0.75) == 0.7
    assert choose_threshold(y, scores, 1.0) == 0.4
    assert choose_threshold(np.zeros(3), scores[:3], 0.9) is None


def _threshold_by_scan(y_true: np.ndarray, scores: np.ndarray, target: float) -> float | None:
    """The hand-written search choose_threshold replaced: distinct positive scores, high to low."""
    y = np.asarray(y_true) == 1
    if y.all() or not y.any():
        return None
    for threshold in np.unique(scores[y])[::-1]:
        if (scores[y] >= threshold).mean() >= target - 1e-12:
            return float(threshold)
    return float(scores[y].min())


def test_threshold_equals_the_scan_over_positive_scores_on_random_rows():
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(2, 40))
        y = rng.integers(0, 2, n)
        # Coarse scores give ties within and across the classes.
        scores = rng.integers(0, 8, n) / 8 if trial % 2 else rng.random(n)
        n_pos = max(int(y.sum()), 1)
        # Exact recall fractions (k / positives) as well as arbitrary targets in (0, 1].
        for target in (int(rng.integers(1, n_pos + 1)) / n_pos, float(1 - rng.random()), 1.0):
            assert choose_threshold(y, scores, target) == _threshold_by_scan(y, scores, target)


def test_operating_point_applies_the_validation_threshold_to_evaluation_rows():
    y_val = np.array([0, 0, 1, 1, 1, 1])
    val = np.array([0.1, 0.3, 0.5, 0.6, 0.8, 0.9])
    y_eval = np.array([0, 0, 0, 1, 1, 1, 1])
    test = np.array([0.2, 0.55, 0.7, 0.3, 0.65, 0.9, 0.95])
    point = operating_point(y_val, val, y_eval, test, 0.75)
    # Chosen on validation (0.6 keeps 3 of 4 positives there), then judged on evaluation:
    # 3 of 4 positives and 2 of 3 negatives, not the recall the evaluation rows would pick.
    assert point["threshold"] == 0.6 and point["validation_recall"] == 0.75
    assert point["recall"] == 0.75 and point["specificity"] == pytest.approx(2 / 3)
    assert choose_threshold(y_eval, test, 0.75) != point["threshold"]


def test_binary_metrics_have_specificity_and_brier():
    y = np.array([0, 0, 1, 1])
    proba = np.array([[0.9, 0.1], [0.4, 0.6], [0.2, 0.8], [0.7, 0.3]])
    metrics = classification_metrics(y, proba, ["neg", "pos"])
    assert metrics["specificity"] == 0.5 and metrics["recall"] == 0.5
    assert metrics["brier"] == pytest.approx(np.mean([0.01, 0.36, 0.04, 0.49]))


def test_examples_subset_keeps_features_aligned():
    examples = binary_examples(10, 0, 0.5, "x")
    part = examples.subset([3, 1], "part")
    assert list(part.features["score"]) == [
        examples.features["score"][3],
        examples.features["score"][1],
    ]


def test_positive_label_comes_from_the_flag_then_the_card_then_an_obvious_pair():
    """Never from alphabetical order: the positive class goes second (id 1), whose recall is
    the reported sensitivity."""
    card = {"positive_class": "deceased", "_file": "cards/icu.md"}
    # The flag wins over the card, the card over an obvious pair.
    assert label_order(["deceased", "survived"], "survived", card) == ["deceased", "survived"]
    assert label_order(["deceased", "survived"], None, card) == ["survived", "deceased"]
    assert label_order(["No", "Yes"], None, {"positive_class": "No"}) == ["Yes", "No"]
    for labels, positive in [
        (["No", "Yes"], "Yes"),
        (["0", "1"], "1"),
        (["1.0", "0.0"], "1.0"),
        (["-1", "1"], "1"),
        (["TRUE", "false"], "TRUE"),
        (["benign", "malignant"], "malignant"),
        (["disease", "healthy"], "disease"),  # alphabetical order would pick "healthy"
        (["absent", "present"], "present"),
        (["N", "y"], "y"),
        (["face", "non_face"], "face"),
        (["not spam", "spam"], "spam"),
    ]:
        assert positive_label(labels, None, None) == positive, labels
        assert label_order(labels, None)[1] == positive, labels
    with pytest.raises(UserError, match=r"'deceased' and 'survived'.*--positive-label"):
        label_order(["survived", "deceased"], None)
    with pytest.raises(UserError, match=r"cards/icu.md: positive_class 'deceased' is not a label"):
        label_order(["sick", "well"], None, card)
    assert positive_label(["a", "b", "c"], None, card) is None  # the card's class is not asked
