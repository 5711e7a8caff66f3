"""`finetune report` (many runs -> one Markdown + HTML report, floors) and `finetune data card`."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from finetune.cli import app
from finetune.data.cards import dataset_stats, read_card
from finetune.errors import UserError
from recipes.customer_service import recipe

runner = CliRunner()


@pytest.fixture(scope="module")
def two_runs(tiny_model_dir, small_csvs, tmp_path_factory):
    root = tmp_path_factory.mktemp("summary")
    folders = []
    for seed in (1, 2):
        config = recipe.config(
            data={"path": str(small_csvs[0]), "eval_path": str(small_csvs[1])},
            model={"name": str(tiny_model_dir), "lora_r": 4},
            train={"max_steps": 2, "batch_size": 8, "seed": seed},
            output=str(root / f"run-{seed}"),
        )
        folders.append(recipe.train(config, show_progress=False).folder)
    return folders


def test_report_summarises_runs_in_markdown_and_self_contained_html(two_runs, tmp_path):
    out = tmp_path / "report"
    result = runner.invoke(app, ["report", *map(str, two_runs), "--output", str(out)])
    assert result.exit_code == 0, result.output
    markdown = (out / "report.md").read_text()
    for name in ("run-1", "run-2", "tfidf_logreg", "best baseline", "peak memory"):
        assert name in markdown, name
    assert (out / "images" / "run-1-roc.png").is_file()
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") >= 4
    assert 'src="images/' not in page  # nothing outside the file
    summary = json.loads((out / "summary.json").read_text())
    metrics = json.loads((two_runs[0] / "metrics.json").read_text())
    assert summary["runs"][0]["accuracy"] == f"{metrics['accuracy']:.3f}"


def test_floors_turn_a_regression_into_a_failure(two_runs, tmp_path):
    accuracy = json.loads((two_runs[0] / "metrics.json").read_text())["accuracy"]
    passing = tmp_path / "ok.yaml"
    passing.write_text(yaml.safe_dump({"customer-service": {"accuracy": accuracy - 0.5}}))
    ok = runner.invoke(
        app, ["report", str(two_runs[0]), "--output", str(tmp_path / "a"), "--floors", str(passing)]
    )
    assert ok.exit_code == 0, ok.output
    failing = tmp_path / "high.yaml"
    failing.write_text(yaml.safe_dump({"customer-service": {"accuracy": 1.01}}))
    bad = runner.invoke(
        app, ["report", str(two_runs[0]), "--output", str(tmp_path / "b"), "--floors", str(failing)]
    )
    assert bad.exit_code == 1
    assert "accuracy" in bad.output and "< floor 1.01" in bad.output
    assert "Below the floor" in (tmp_path / "b" / "report.md").read_text()


def fake_run(folder, recipe_name, baselines, **metrics):
    """A finished run folder as the summary reads it: config.yaml and metrics.json."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(yaml.safe_dump({"recipe": recipe_name}))
    (folder / "metrics.json").write_text(json.dumps({**metrics, "baselines": baselines}))
    return folder


# Two baselines that AUC and F1 rank in opposite orders (as on a 77-class task, where every
# method's one-vs-rest AUC is near 0.99).
DISAGREE = {
    "tfidf_logreg": {"accuracy": 0.80, "f1": 0.78, "auc": 0.990},
    "embedding_logreg": {"accuracy": 0.70, "f1": 0.65, "auc": 0.995},
}


def test_best_baseline_follows_the_primary_metric_saved_with_the_run(tmp_path):
    from finetune.reporting.summary import load_record, summary_row

    multiclass = fake_run(
        tmp_path / "intents", "customer-service", DISAGREE, average="macro", primary_metric="f1"
    )
    record = load_record(multiclass)
    assert record.best_baseline()[0] == "tfidf_logreg"
    assert "tfidf_logreg (F1 0.780)" in summary_row(record)
    risk = fake_run(
        tmp_path / "risk", "medical-risk", DISAGREE, average="binary", primary_metric="auc"
    )
    assert load_record(risk).best_baseline()[0] == "embedding_logreg"
    ranking = {
        "embedding_logreg": {"auc": 0.70, "f1": 0.60},  # scores no candidate lists
        "item_popularity": {"auc": 0.66, "f1": 0.55, "ndcg_at_k": 0.31},
        "collaborative_filtering": {"auc": 0.64, "f1": 0.50, "ndcg_at_k": 0.42},
    }
    recommendation = fake_run(
        tmp_path / "rec", "recommendation", ranking, average="binary", primary_metric="ndcg_at_k"
    )
    assert load_record(recommendation).best_baseline()[0] == "collaborative_filtering"
    # Run folders written before the primary metric was saved: the task's default.
    old = fake_run(tmp_path / "old", "customer-service", DISAGREE, average="macro")
    assert load_record(old).best_baseline()[0] == "tfidf_logreg"


def test_runs_save_their_recipes_primary_metric(two_runs):
    from recipes.medical_risk import recipe as medical
    from recipes.recommendation import recipe as recommendation

    metrics = json.loads((two_runs[0] / "metrics.json").read_text())
    assert metrics["primary_metric"] == "f1"
    assert medical.primary_metric_for(2) == "auc"
    assert recommendation.primary_metric_for(2) == "ndcg@10"


def test_report_refuses_a_folder_that_is_not_a_run(tmp_path):
    result = runner.invoke(app, ["report", str(tmp_path), "--output", str(tmp_path / "r")])
    assert result.exit_code == 2 and "not a finished run folder" in result.output


def test_data_card_stats_of_bundled_dataset():
    train, test = dataset_stats("shop_intents")
    assert train.rows == 700 and test.rows == 280
    assert set(train.label_counts.values()) == {50}
    assert train.overlap == {"test split": 0}
    assert train.text_lengths["text"]["median"] > 3


def test_data_card_stats_find_duplicates_and_missing(tmp_path):
    path = tmp_path / "mine.csv"
    pd.DataFrame(
        {
            "text": ["a b c d", "a b c d", "e f g h", "x y z w"],
            "age": ["3", "3", "", "7"],
            "label": ["p", "p", "n", "n"],
        }
    ).to_csv(path, index=False)
    (stats,) = dataset_stats(str(path))
    assert stats.duplicate_rows == 1 and stats.missing["age"] == 1
    assert stats.label_counts == {"p": 2, "n": 2}
    result = runner.invoke(app, ["data", "card", str(path)])
    assert result.exit_code == 0 and "Duplicate rows: 1." in result.output


def test_data_card_write_drafts_a_readable_card(tmp_path):
    path = tmp_path / "clinic.csv"
    pd.DataFrame({"age": ["50", "61"], "smoker": ["yes", "no"], "label": ["1", "0"]}).to_csv(
        path, index=False
    )
    card = tmp_path / "clinic.md"
    result = runner.invoke(app, ["data", "card", str(path), "--write", "--output", str(card)])
    assert result.exit_code == 0, result.output
    meta, body = read_card(card)
    assert meta["classes"] == ["0", "1"] and meta["size"] == {"train": 2}
    assert meta["feature_columns"]["age"]["type"] == "numeric"
    assert meta["feature_columns"]["smoker"]["type"] == "categorical/text"
    assert "## Privacy" in body
    again = runner.invoke(app, ["data", "card", str(path), "--write", "--output", str(card)])
    assert again.exit_code == 2 and "exists" in again.output


def test_data_card_unknown_name_lists_bundled():
    result = runner.invoke(app, ["data", "card", "no_such_set"])
    assert result.exit_code == 2 and "shop_intents" in result.output


def test_a_floors_file_that_is_not_a_mapping_is_one_line(two_runs, tmp_path):
    for name, text in (("bad.yaml", "a: [1\n"), ("list.yaml", "- a\n")):
        floors = tmp_path / name
        floors.write_text(text)
        result = runner.invoke(
            app,
            ["report", str(two_runs[0]), "--output", str(tmp_path / "o"), "--floors", str(floors)],
        )
        assert result.exit_code == 2, result.output
        assert result.output.startswith(f"error: {floors}") and "Traceback" not in result.output
    assert "must hold a mapping of recipes to their floors" in result.output


def test_a_data_card_that_does_not_read_is_one_line(tmp_path):
    cases = {
        "yaml.md": ("---\nname: x\nclasses: [a\n---\nbody\n", r"invalid YAML header: line 3, "),
        "list.md": ("---\n- a\n---\nbody\n", "the YAML header must map fields to values"),
        "latin.md": (b"---\nname: caf\xe9\n---\n", "is not UTF-8 text"),
    }
    for name, (text, message) in cases.items():
        card = tmp_path / name
        card.write_bytes(text if isinstance(text, bytes) else text.encode())
        with pytest.raises(UserError, match=message) as error:
            read_card(card)
        assert "\n" not in str(error.value)
