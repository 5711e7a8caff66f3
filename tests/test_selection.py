"""The delivered model and its calibration: chosen on validation rows, saved with the run,
served by predict, and never moved by the evaluation rows."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import make_rows
from typer.testing import CliRunner

from finetune.cli import app
from finetune.data.tables import stratified_split
from finetune.evaluation.calibration import choose_calibrator
from finetune.evaluation.metrics import MODEL_NAME
from finetune.evaluation.selection import MARGIN, choose_delivered
from recipes.customer_service import recipe as customer_service

runner = CliRunner()


def with_baselines(*baselines):
    """The customer-service recipe with other baselines (a copy: the registered one is kept)."""
    copied = copy.copy(customer_service)
    copied.baselines = baselines
    return copied


@dataclass
class PriorPredictor:
    """The training rows' class frequencies for every row: a deliverable baseline that loses."""

    prior: np.ndarray

    def predict_proba(self, examples) -> np.ndarray:
        return np.tile(self.prior, (len(examples), 1))


def class_prior(inputs) -> np.ndarray:
    counts = np.bincount(inputs.train_labels, minlength=inputs.n_classes)
    predictor = PriorPredictor(counts / counts.sum())
    inputs.predictors["class_prior"] = predictor
    return predictor.predict_proba(inputs.eval_examples())


def tiny(model_dir: Path, train_file: Path, test_file: Path, output: Path, **sections):
    """A few steps of a tiny random BERT whose head starts at random: any baseline that reads
    the words beats it."""
    settings = {
        "data": {"path": str(train_file), "eval_path": str(test_file)},
        "model": {"name": str(model_dir), "lora_r": 4, "lora_alpha": 8, "head_init": "random"},
        "train": {"max_steps": 1, "batch_size": 8, "eval_batch_size": 32},
        "output": str(output),
    }
    for section, values in sections.items():
        if isinstance(values, dict):
            settings[section] = {**settings.get(section, {}), **values}
        else:
            settings[section] = values
    return settings


def train(recipe, settings):
    return recipe.train(recipe.config(**settings), show_progress=False)


def saved_scores(folder: Path) -> dict[str, np.ndarray]:
    with np.load(folder / "scores.npz") as data:
        return {name: data[name] for name in data.files}


@pytest.fixture(scope="module")
def tfidf_run(tiny_model_dir, small_csvs, tmp_path_factory):
    output = tmp_path_factory.mktemp("selection") / "tfidf"
    return train(with_baselines("tfidf_logreg"), tiny(tiny_model_dir, *small_csvs, output))


def test_a_baseline_that_wins_on_validation_is_delivered_and_served(tfidf_run, small_csvs):
    folder, metrics = tfidf_run.folder, tfidf_run.metrics
    delivered = metrics["delivered"]
    assert delivered["name"] == "tfidf_logreg"
    assert delivered["validation"]["tfidf_logreg"] - delivered["validation"]["model"] > MARGIN
    # The report says so in its first lines, before the facts table.
    first = (folder / "report.md").read_text().splitlines()[:4]
    assert any("tfidf_logreg" in line and "Delivered" in line for line in first), first
    # Top level: the delivered baseline's figures; `finetuned`: the model's own.
    scores = saved_scores(folder)
    y = scores["y_true"]
    assert metrics["accuracy"] == pytest.approx((scores["tfidf_logreg"].argmax(1) == y).mean())
    own = (scores[MODEL_NAME].argmax(1) == y).mean()
    assert metrics["finetuned"]["accuracy"] == pytest.approx(own)
    assert set(metrics["finetuned"]) >= {"accuracy", "recall", "f1", "auc", "per_class"}
    # Reloaded, the run serves the baseline: the very probabilities it was scored with.
    texts = pd.read_csv(small_csvs[1])["text"].tolist()
    loaded = customer_service.load(folder)
    np.testing.assert_allclose(loaded.predict_proba(texts), scores["tfidf_logreg"], atol=1e-9)
    np.testing.assert_allclose(scores["delivered"], scores["tfidf_logreg"])
    np.testing.assert_allclose(loaded.model_proba(texts), scores[MODEL_NAME], atol=1e-5)
    assert (folder / "delivered" / "predictor.joblib").is_file()
    # ... and so do predict and evaluate --run.
    result = runner.invoke(
        app, ["customer-service", "predict", "--run", str(folder), "--text", texts[0]]
    )
    assert result.exit_code == 0, result.output
    label, probability = result.output.split()
    best = int(scores["tfidf_logreg"][0].argmax())
    assert label == loaded.labels[best]
    assert float(probability) == pytest.approx(scores["tfidf_logreg"][0, best], abs=1e-3)
    evaluated = loaded.evaluate(customer_service.read(small_csvs[1], loaded.config))
    assert evaluated["accuracy"] == pytest.approx(metrics["accuracy"])


def test_deliver_finetuned_keeps_the_model_and_still_says_the_baseline_led(
    tiny_model_dir, small_csvs, tmp_path
):
    settings = tiny(tiny_model_dir, *small_csvs, tmp_path / "kept", eval={"deliver": "finetuned"})
    run = train(with_baselines("tfidf_logreg"), settings)
    delivered = run.metrics["delivered"]
    assert delivered["name"] == "model" and delivered["leader"] == "tfidf_logreg"
    assert "--deliver finetuned" in delivered["note"]
    assert "tfidf_logreg" in (run.folder / "report.md").read_text().splitlines()[2]
    scores = saved_scores(run.folder)
    texts = pd.read_csv(small_csvs[1])["text"].tolist()
    loaded = customer_service.load(run.folder)
    np.testing.assert_allclose(loaded.predict_proba(texts), scores[MODEL_NAME], atol=1e-5)
    assert run.metrics["accuracy"] == run.metrics["finetuned"]["accuracy"]
    assert not (run.folder / "delivered" / "predictor.joblib").exists()


def test_a_model_that_beats_the_baselines_is_delivered(tiny_model_dir, small_csvs, tmp_path):
    # The head starts from the probe on frozen embeddings; the class prior ranks nothing.
    settings = tiny(tiny_model_dir, *small_csvs, tmp_path / "model", model={"head_init": "probe"})
    run = train(with_baselines(class_prior), settings)
    delivered = run.metrics["delivered"]
    assert delivered["name"] == "model" and "leader" not in delivered
    assert delivered["validation"]["model"] > delivered["validation"]["class_prior"]
    assert run.metrics["accuracy"] == run.metrics["finetuned"]["accuracy"]
    assert "Delivered: the fine-tuned model" in (run.folder / "report.md").read_text()


def test_the_embedding_probe_is_served_through_the_frozen_backbone(
    tiny_model_dir, small_csvs, tmp_path
):
    # head_init random, one step: the probe on the frozen vectors beats the random head.
    run = train(
        with_baselines("embedding_logreg"), tiny(tiny_model_dir, *small_csvs, tmp_path / "p")
    )
    assert run.metrics["delivered"]["name"] == "embedding_logreg"
    texts = pd.read_csv(small_csvs[1])["text"].tolist()
    loaded = customer_service.load(run.folder)
    scores = saved_scores(run.folder)
    np.testing.assert_allclose(loaded.predict_proba(texts), scores["embedding_logreg"], atol=1e-4)


# Two classes for calibration and thresholds: refunds are the positives.
def two_class_files(folder: Path, flip_eval: bool = False) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rows = [r for r in make_rows(30, seed=3) if r["label"] != "login"]
    test = [r for r in make_rows(10, seed=4) if r["label"] != "login"]
    for r in rows + test:
        r["label"] = "yes" if r["label"] == "refund" else "no"
    if flip_eval:  # the evaluation labels, and nothing else, change
        for r in test[::3]:
            r["label"] = "no" if r["label"] == "yes" else "yes"
    train_file, test_file = folder / "train.csv", folder / "test.csv"
    pd.DataFrame(rows).to_csv(train_file, index=False)
    pd.DataFrame(test).to_csv(test_file, index=False)
    return train_file, test_file


def two_class_settings(model_dir: Path, folder: Path, output: Path, flip: bool = False, **eval_):
    files = two_class_files(folder, flip_eval=flip)
    return tiny(
        model_dir,
        *files,
        output,
        data={"val_fraction": 0.4},
        model={"head_init": "probe"},
        train={"max_steps": 2},
        eval=eval_,
    )


def test_calibration_is_fitted_on_validation_rows_and_applied_by_predict(tiny_model_dir, tmp_path):
    settings = two_class_settings(
        tiny_model_dir,
        tmp_path / "data",
        tmp_path / "cal",
        calibrate="isotonic",
        deliver="finetuned",
    )
    run = train(with_baselines("tfidf_logreg"), settings)
    calibration = run.metrics["calibration"]
    assert calibration["method"] == "isotonic"
    for key in ("brier_before", "brier_after", "log_loss_before", "log_loss_after"):
        assert 0 <= calibration[key] < 10, key
    loaded = customer_service.load(run.folder)
    calibrator = loaded.served.calibrator
    # Fitted on exactly the validation rows' probabilities of the delivered (fine-tuned) model.
    examples = customer_service.read(settings["data"]["path"], loaded.config)
    _, val_rows = stratified_split(examples, 0.4, loaded.config.train.seed)
    assert calibrator.n_fitted == run.metrics["n_val"] == len(val_rows)
    val_texts = [examples.texts[i] for i in val_rows]
    np.testing.assert_allclose(
        np.sort(calibrator.fitted_scores), np.sort(loaded.model_proba(val_texts)[:, 1]), atol=1e-5
    )
    # Predict serves the calibrated probabilities; the report states before and after.
    scores = saved_scores(run.folder)
    texts = pd.read_csv(settings["data"]["eval_path"])["text"].tolist()
    served = loaded.predict_proba(texts)
    np.testing.assert_allclose(served, scores["delivered"], atol=1e-5)
    np.testing.assert_allclose(served, calibrator.apply(scores[MODEL_NAME]), atol=1e-5)
    y = scores["y_true"]
    assert calibration["brier_after"] == pytest.approx(np.mean((served[:, 1] - (y == 1)) ** 2))
    assert run.metrics["brier"] == pytest.approx(calibration["brier_after"])
    assert (
        "Calibration of the delivered model: **isotonic**" in (run.folder / "report.md").read_text()
    )


def test_the_evaluation_labels_never_move_the_delivered_model_threshold_or_calibration(
    tiny_model_dir, tmp_path
):
    runs = []
    for flip in (False, True):
        settings = two_class_settings(
            tiny_model_dir,
            tmp_path / f"data-{flip}",
            tmp_path / f"run-{flip}",
            flip=flip,
            target_recall=0.8,
        )
        runs.append(train(with_baselines("tfidf_logreg", class_prior), settings))
    first, second = (run.metrics for run in runs)
    assert first["auc"] != second["auc"]  # the evaluation labels did change
    assert first["delivered"] == second["delivered"]
    for key in ("method", "setting", "cross_fitted_log_loss", "note"):
        assert first["calibration"].get(key) == second["calibration"].get(key), key
    assert first["operating_point"]["threshold"] == second["operating_point"]["threshold"]
    a, b = (run.served.calibrator for run in runs)
    assert (a is None) == (b is None)
    if a is not None:
        np.testing.assert_array_equal(a.fitted_scores, b.fitted_scores)


def test_the_margin_breaks_near_ties_towards_the_fine_tuned_model():
    y = np.array([0, 1] * 20)
    labels = ["no", "yes"]

    def scores(auc_like: float) -> np.ndarray:
        rng = np.random.default_rng(0)
        p = np.clip(y * auc_like + rng.uniform(0, 1 - auc_like, len(y)), 0, 1)
        return np.column_stack([1 - p, p])

    model = scores(0.2)
    for gap, expected in ((0.0, MODEL_NAME), (0.5, "base")):
        val = {MODEL_NAME: model, "base": scores(0.2 + gap)}
        chosen, decided, _ = choose_delivered(val, y, labels, "auc", "best", {"base"})
        assert chosen == expected, gap
    # A leader that leaves no predictor cannot be delivered; the run says so.
    val = {MODEL_NAME: model, "base": scores(0.7)}
    chosen, decided, lines = choose_delivered(val, y, labels, "auc", "best", set())
    assert chosen == MODEL_NAME and "leaves no saved predictor" in lines[0]
    # A recipe metric no validation row gives (a ranking's NDCG) falls back to the task's.
    assert choose_delivered(val, y, labels, "ndcg_at_k", "best", set())[1]["metric"] == "auc"


def test_auto_calibration_fixes_badly_scaled_scores_and_keeps_calibrated_ones():
    rng = np.random.default_rng(0)
    p_true = rng.uniform(0.05, 0.95, 400)
    y = (rng.uniform(size=400) < p_true).astype(int)
    calibrated, how = choose_calibrator("auto", p_true, y, seed=0)
    assert calibrated.method == "none", how
    squashed = 0.5 + (p_true - 0.5) * 0.2  # right order, far too timid
    fixed, how = choose_calibrator("auto", squashed, y, seed=0)
    assert fixed.method in ("platt", "isotonic"), how
    assert fixed.n_fitted == 400
    few, how = choose_calibrator("auto", squashed[:6], y[:6], seed=0)
    assert few.method == "none" and "too few" in how["note"]


@pytest.mark.parametrize("method", ["platt", "isotonic"])
def test_an_exported_calibration_maps_probabilities_as_the_run_does(method):
    """Exports carry the map as numbers, applied with numpy alone: the same probabilities as
    the run's fitted map, inside and outside the range it was fitted on."""
    from finetune.evaluation.calibration import as_numbers, fit_calibrator
    from finetune.modeling.served_calibration import calibrate

    rng = np.random.default_rng(0)
    p_true = rng.uniform(0.05, 0.95, 300)
    y = (rng.uniform(size=300) < p_true).astype(int)
    calibrator = fit_calibrator(method, 0.3 + p_true * 0.4, y)
    positive = np.concatenate([[0.0, 1e-9, 0.1, 1 - 1e-9, 1.0], rng.uniform(size=50)])
    proba = np.column_stack([1 - positive, positive])
    expected = calibrator.apply(proba)
    assert np.abs(expected - proba).max() > 0.05  # a map far from the identity
    np.testing.assert_allclose(calibrate(proba, as_numbers(calibrator)), expected, atol=1e-9)
    assert as_numbers(fit_calibrator("none", positive, y[:55])) is None


@pytest.mark.parametrize(
    "name", ["customer-service", "medical-risk", "recommendation", "image-classification"]
)
def test_every_recipe_offers_deliver_and_calibrate(name):
    # Recommendation ranks items: no probabilities to calibrate, so no --calibrate.
    result = runner.invoke(app, [name, "train", "--help"], env={"COLUMNS": "200"})
    assert "--deliver" in result.output
    assert ("--calibrate" in result.output) == (name != "recommendation")
    bad = runner.invoke(app, [name, "train", "--deliver", "baseline"])
    assert bad.exit_code == 2 and "eval.deliver must be one of best, finetuned" in bad.output


def test_floors_read_the_fine_tuned_models_own_figures(tmp_path):
    from finetune.reporting.summary import RunRecord, check_floors

    metrics = {"auc": 0.9, "finetuned": {"auc": 0.6}, "delivered": {"name": "gradient_boosting"}}
    record = RunRecord(tmp_path, "run", {"recipe": "risk"}, metrics, {})
    assert check_floors([record], {"risk": {"auc": 0.7}})  # the fine-tuned model's 0.6
    assert not check_floors([record], {"risk": {"delivered.auc": 0.7}})  # what the run serves


def test_a_recipe_with_tasks_has_floors_per_task(tmp_path):
    from finetune.reporting.summary import RunRecord, check_floors

    floors = {"shop/intent": {"accuracy": 0.8}, "shop/reply": {"reply.model.chrf": 0.2}}
    intent = RunRecord(tmp_path, "a", {"recipe": "shop", "options": {"task": "intent"}}, {}, {})
    reply = RunRecord(tmp_path, "b", {"recipe": "shop", "options": {"task": "reply"}}, {}, {})
    intent.metrics = {"accuracy": 0.85, "reply": {"model": {"chrf": 0.1}}}
    reply.metrics = {"accuracy": 0.1, "reply": {"model": {"chrf": 0.3}}}
    assert check_floors([intent, reply], floors) == []
    intent.metrics["accuracy"] = 0.7
    assert check_floors([intent, reply], floors) == ["a (shop/intent): accuracy 0.700 < floor 0.8"]
    # Floors no run reads fail (a renamed key), and a plain recipe key covers all its tasks.
    assert (
        check_floors([intent], floors)[-1]
        == "no run for the floors of 'shop/reply' (recipe or recipe/task)"
    )
    assert check_floors([intent, reply], {"shop": {"accuracy": 0.05}}) == []


def test_cross_validation_counts_what_each_fold_delivered():
    from finetune.evaluation.folds import summarise

    def fold(i: int, name: str, method: str) -> dict:
        return {
            "fold": i,
            "folder": f"fold-{i}",
            "auc": 0.8,
            "n_eval": 4,
            "delivered": {"name": name},
            "finetuned": {"auc": 0.7},
            "calibration": {"method": method, "brier_before": 0.2, "brier_after": 0.1},
            "baselines": {"logistic_regression": {"auc": 0.8}},
        }

    metrics = summarise(
        [
            fold(1, "model", "platt"),
            fold(2, "logistic_regression", "none"),
            fold(3, "model", "none"),
        ]
    )
    delivered = metrics["delivered"]
    assert delivered["counts"] == {"model": 2, "logistic_regression": 1}
    assert delivered["per_fold"] == ["model", "logistic_regression", "model"]
    assert metrics["finetuned"]["auc"] == pytest.approx(0.7)
    assert metrics["auc"] == pytest.approx(0.8)
    assert metrics["calibration"]["brier_after"] == pytest.approx(0.1)
    assert [f["delivered"] for f in metrics["folds"]] == delivered["per_fold"]


def complementary_scores(n: int = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three classes; the model is right (0.7 against 0.2) on the first half and wrong (0.4
    against 0.5) on the second, the baseline the other way round: each alone is right half the
    time, their mean always."""
    y = np.arange(n) % 3
    wrong = (y + 1) % 3
    model, base = np.full((n, 3), 0.1), np.full((n, 3), 0.1)
    first = np.arange(n) < n // 2
    rows = np.arange(n)
    model[rows, y] = np.where(first, 0.7, 0.4)
    model[rows, wrong] = np.where(first, 0.2, 0.5)
    base[rows, y] = np.where(first, 0.4, 0.7)
    base[rows, wrong] = np.where(first, 0.5, 0.2)
    return y, model, base


def test_a_blend_that_leads_on_validation_is_delivered_and_saved(tmp_path):
    from finetune.config import EvalConfig
    from finetune.evaluation.selection import (
        add_blends,
        blend_name,
        deliver,
        load_served,
        save_served,
    )

    y, model, base = complementary_scores()
    labels = ["a", "b", "c"]
    val = add_blends({MODEL_NAME: model, "base": base}, ["base"])
    np.testing.assert_allclose(val[blend_name("base")], (model + base) / 2)
    predictor = PriorPredictor(np.full(3, 1 / 3))
    delivery = deliver(val, y, labels, "accuracy", EvalConfig(), {"base": predictor}, 0)
    assert delivery.method == blend_name("base") and delivery.served.blend
    assert delivery.served.predictor is predictor
    assert delivery.decided["validation"][blend_name("base")] == 1.0
    assert delivery.lines[0].startswith("Delivered: the fine-tuned model blended with base")
    # A blend is a form of the fine-tuned model: it needs no margin over the model alone, but
    # a baseline must beat it by the margin, and --deliver finetuned serves the model alone.
    y, model, base = complementary_scores(300)
    nudged = model.copy()
    nudged[150] = (model[150] + base[150]) / 2  # right on one more row of 300: +0.0033
    val = {MODEL_NAME: model, "base": base, blend_name("base"): nudged}
    chosen = deliver(val, y, labels, "accuracy", EvalConfig(), {"base": predictor}, 0)
    assert chosen.method == blend_name("base")
    settings = EvalConfig(deliver="finetuned")
    kept = deliver(val, y, labels, "accuracy", settings, {"base": predictor}, 0)
    assert kept.method == MODEL_NAME and not kept.served.blend
    save_served(tmp_path, delivery.served, delivery.decided)
    loaded = load_served(tmp_path)
    assert loaded.name == blend_name("base") and loaded.blend
    # Without the blend on offer, the same scores keep the fine-tuned model (a tie).
    plain = deliver({MODEL_NAME: model, "base": base}, y, labels, "accuracy", EvalConfig(), {}, 0)
    assert plain.method == MODEL_NAME and not plain.served.blend


def test_the_probe_blended_the_same_way_is_scored_beside_the_blend_and_never_served():
    from finetune.config import EvalConfig
    from finetune.evaluation.selection import PROBE, add_blends, blend_name, deliver
    from finetune.reporting.report import comparison_lines

    y, probe, base = complementary_scores()
    labels = ["a", "b", "c"]
    # A fine-tuned model that learnt nothing: its blend is TF-IDF's, while the probe and the
    # baseline complement each other, so the probe's blend is right on every row.
    scores = {MODEL_NAME: np.full_like(probe, 1 / 3), PROBE: probe, "base": base}
    val = add_blends(scores, ["base"])
    compared = blend_name("base", PROBE)
    np.testing.assert_allclose(val[compared], (probe + base) / 2)
    assert list(add_blends(scores, [PROBE])) == [*scores, blend_name(PROBE)]
    predictors = {"base": PriorPredictor(np.full(3, 1 / 3)), PROBE: PriorPredictor(probe[0])}
    delivery = deliver(val, y, labels, "accuracy", EvalConfig(), predictors, 0)
    # Never served nor a rival: the model's blend (0.5) is delivered, as no baseline (0.5
    # each) leads it, although the probe's blend scores 1.0.
    assert delivery.method == blend_name("base") and "leader" not in delivery.decided
    assert delivery.decided["validation"][compared] == 1.0
    (line,) = comparison_lines(delivery.decided)
    assert f"({PROBE}) blended with base the same way scores accuracy 1.000" in line
    assert "against 0.500 for the fine-tuned model blended with it and 0.333 alone" in line


def test_blends_are_scored_reported_and_served_as_the_mean_of_two_methods(
    tiny_model_dir, small_csvs, tmp_path
):
    from finetune.evaluation.selection import Served, blend_name

    settings = tiny(tiny_model_dir, *small_csvs, tmp_path / "b", eval={"blend": ["tfidf_logreg"]})
    run = train(with_baselines("tfidf_logreg", "embedding_logreg"), settings)
    name = blend_name("tfidf_logreg")
    scores = saved_scores(run.folder)
    blended = (scores[MODEL_NAME] + scores["tfidf_logreg"]) / 2
    np.testing.assert_allclose(scores[name], blended)
    y = scores["y_true"]
    figures = run.metrics["blends"][name]
    assert figures["accuracy"] == pytest.approx((blended.argmax(1) == y).mean())
    assert name not in run.metrics["baselines"] and name in run.metrics["delivered"]["validation"]
    assert f"| {name} |" in (run.folder / "report.md").read_text()
    # Beside it, the frozen probe blended with TF-IDF the same way: scored, shown, not served.
    compared = blend_name("tfidf_logreg", "embedding_logreg")
    probe_blend = (scores["embedding_logreg"] + scores["tfidf_logreg"]) / 2
    np.testing.assert_allclose(scores[compared], probe_blend)
    assert run.metrics["blends"][compared]["accuracy"] == pytest.approx(
        (probe_blend.argmax(1) == y).mean()
    )
    assert f"| {compared} |" in (run.folder / "report.md").read_text()
    assert (
        "the frozen probe (embedding_logreg) blended with tfidf_logreg"
        in (run.folder / "report.md").read_text()
    )
    # The blend leads the model alone on validation, and TF-IDF does not beat it by the
    # margin: the run delivers it, says so first, and a reloaded run serves the mean.
    validation = run.metrics["delivered"]["validation"]
    assert run.metrics["delivered"]["name"] == name and validation[name] > validation["model"]
    assert "blended with tfidf_logreg" in (run.folder / "report.md").read_text()[:600]
    assert run.metrics["accuracy"] == pytest.approx(figures["accuracy"])
    loaded = customer_service.load(run.folder)
    assert loaded.served.blend and (run.folder / "delivered" / "predictor.joblib").is_file()
    texts = pd.read_csv(small_csvs[1])["text"].tolist()
    np.testing.assert_allclose(loaded.predict_proba(texts), blended, atol=1e-5)
    # The same run folder served as the baseline alone gives the baseline's probabilities.
    loaded.served = Served("tfidf_logreg", loaded.served.predictor)
    np.testing.assert_allclose(loaded.predict_proba(texts), scores["tfidf_logreg"], atol=1e-9)


def test_a_blend_must_name_a_baseline_of_the_recipe(tiny_model_dir, small_csvs, tmp_path):
    from finetune.errors import UserError

    settings = tiny(tiny_model_dir, *small_csvs, tmp_path / "x", eval={"blend": ["nope"]})
    with pytest.raises(UserError, match="eval.blend names nope, not a baseline"):
        train(with_baselines("tfidf_logreg"), settings)
    assert not (tmp_path / "x").exists()
