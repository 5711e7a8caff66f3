"""Patient records as text, the checks on a user's table, and the raw-column baselines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from finetune.data.records import (
    records_section,
    table_card,
    table_examples,
)
from finetune.data.tables import read_table
from finetune.errors import UserError
from finetune.evaluation.baselines import BaselineInputs
from finetune.evaluation.table_baselines import gradient_boosting, logistic_regression

CARD = {
    "label_column": "outcome",
    "identifier_columns": ["record"],
    "feature_columns": {
        "glucose": {"name": "plasma glucose", "unit": "mg/dL", "type": "numeric"},
        "stage": {"name": "stage", "type": "categorical"},
    },
}


def write(tmp_path, name: str, frame: pd.DataFrame):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    return path


def read(path, **kwargs):
    return table_examples(read_table(path), str(path), **kwargs)


def test_record_text_uses_card_names_units_and_states_missing(tmp_path):
    path = write(
        tmp_path,
        "r.csv",
        pd.DataFrame(
            {
                "record": ["a1", "a2"],
                "glucose": ["148", ""],
                "bmi": ["33.60", "NA"],
                "stage": ["2", "3"],
                "smoker": ["yes", "?"],
                "outcome": ["Yes", "No"],
            }
        ),
    )
    examples = read(path, label_column="outcome", card=CARD)
    assert examples.texts == [
        "plasma glucose: 148 mg/dL; bmi: 33.6; stage: 2; smoker: yes",
        "plasma glucose: missing; bmi: missing; stage: 3; smoker: missing",
    ]
    assert examples.labels == ["Yes", "No"]
    features = examples.features
    assert list(features.columns) == ["glucose", "bmi", "stage", "smoker"]  # no record id
    assert np.isnan(features["glucose"][1]) and features["bmi"][0] == 33.6
    assert features["stage"].tolist() == ["2", "3"]  # declared categorical: kept as codes
    assert features.attrs["dropped"] == {"record": "identifier in the data card"}


def test_numbers_read_the_same_from_a_table_of_numbers():
    frame = pd.DataFrame({"age": [50, 31], "ped": [0.627, 1.0], "y": ["a", "b"]})
    examples = table_examples(frame, "frame", "y")
    assert examples.texts == ["age: 50; ped: 0.627", "age: 31; ped: 1"]


def test_identifier_like_columns_are_dropped_with_a_warning(tmp_path):
    n = 12
    path = write(
        tmp_path,
        "ids.csv",
        pd.DataFrame(
            {
                "PatientID": range(100, 100 + n),
                "name": [f"Person {i}" for i in range(n)],
                "code": [f"X{i:03d}" for i in range(n)],
                "row": range(1, n + 1),
                "age": [30 + (i % 5) for i in range(n)],
                "notes": [f"reports mild headache for {i} days" for i in range(n)],
                "label": ["a", "b"] * (n // 2),
            }
        ),
    )
    with pytest.warns(UserWarning) as caught:
        examples = read(path, label_column="label")
    messages = " ".join(str(w.message) for w in caught)
    for column in ("PatientID", "name", "code", "row"):
        assert f"dropped column '{column}'" in messages
        assert column not in examples.features.columns
    assert list(examples.features.columns) == ["age", "notes"]  # free text is kept
    assert examples.texts[3] == "age: 33; notes: reports mild headache for 3 days"
    assert set(examples.features.attrs["dropped"]) == {"PatientID", "name", "code", "row"}


def test_drop_columns_option_and_unknown_names(tmp_path):
    path = write(tmp_path, "d.csv", pd.DataFrame({"a": [1, 2], "b": [3, 4], "label": [0, 1]}))
    assert read(path, label_column="label", drop=["b"]).texts == ["a: 1", "a: 2"]
    with pytest.raises(UserError, match="drop_columns names columns the file does not have: c"):
        read(path, label_column="label", drop=["c"])


def test_missing_label_column_names_the_columns(tmp_path):
    path = write(tmp_path, "m.csv", pd.DataFrame({"age": [1, 2], "outcom": ["y", "n"]}))
    with pytest.raises(UserError, match=r"no label column 'outcome'.*Did you mean 'outcom'"):
        read(path, label_column="outcome")


def test_more_than_two_labels_needs_a_positive_label(tmp_path):
    frame = pd.DataFrame({"age": [1, 2, 3, 4], "grade": ["low", "mid", "high", "mid"]})
    path = write(tmp_path, "g.csv", frame)
    with pytest.raises(UserError, match=r"has 3 values .*--positive-label"):
        read(path, label_column="grade")
    examples = read(path, label_column="grade", positive_label="high")
    assert examples.labels == ["not high", "not high", "high", "not high"]
    with pytest.raises(UserError, match="'severe' is not a value"):
        read(path, label_column="grade", positive_label="severe")


def test_entirely_empty_column_is_an_error(tmp_path):
    frame = pd.DataFrame({"age": [1, 2], "hba1c": ["", "NA"], "label": ["a", "b"]})
    path = write(tmp_path, "e.csv", frame)
    with pytest.raises(UserError, match="column 'hba1c' is empty in every row"):
        read(path, label_column="label")
    # A file to predict on may lack a measurement for all its (few) patients.
    assert "age: 1; hba1c: missing" in read(path, label_column=None).texts[0]


def test_junk_in_a_numeric_column_names_line_and_column(tmp_path):
    glucose = [str(100 + i) for i in range(10)]
    glucose[6] = "12O"  # the letter O typed for a zero
    frame = pd.DataFrame({"glucose": glucose, "label": ["a", "b"] * 5})
    path = write(tmp_path, "j.csv", frame)
    with pytest.raises(UserError) as error:
        read(path, label_column="label")
    # Header is line 1, so the seventh data row is line 8.
    assert "column 'glucose' holds numbers" in str(error.value)
    assert "lines 8" in str(error.value) and "'12O'" in str(error.value)
    # A card saying it is numeric makes even a mostly-text column an error.
    frame["glucose"] = ["high", "low"] * 5
    card = {"feature_columns": {"glucose": {"type": "numeric"}}}
    with pytest.raises(UserError, match="lines 2, 3"):
        read(write(tmp_path, "k.csv", frame), label_column="label", card=card)


def test_mostly_text_column_is_categorical(tmp_path):
    frame = pd.DataFrame({"stage": ["I", "II", "3", "IV"], "label": ["a", "b", "a", "b"]})
    examples = read(write(tmp_path, "c.csv", frame), label_column="label")
    assert examples.features["stage"].tolist() == ["I", "II", "3", "IV"]
    assert examples.texts[2] == "stage: 3"


def test_unlabelled_read_and_missing_labels(tmp_path):
    frame = pd.DataFrame({"age": [1, 2], "label": ["a", ""]})
    path = write(tmp_path, "u.csv", frame)
    assert read(path, label_column=None).labels == []
    with pytest.raises(UserError, match="missing label in column 'label' at lines 3"):
        read(path, label_column="label")


def test_read_card_checks_the_header(tmp_path):
    card = tmp_path / "card.md"
    card.write_text("# no header\n")
    with pytest.raises(UserError, match="YAML header"):
        table_card(card)
    card.write_text("---\nfeature_columns:\n  a: {type: number}\n---\nbody\n")
    with pytest.raises(UserError, match="column 'a' has type 'number'"):
        table_card(card)
    card.write_text("---\nlabel_column: y\nfeature_columns:\n  a: {name: A, unit: cm}\n---\nbody\n")
    assert table_card(card)["feature_columns"]["a"] == {"name": "A", "unit": "cm"}


@pytest.mark.parametrize("baseline", [logistic_regression, gradient_boosting])
def test_raw_column_baselines_handle_gaps_categories_and_notes(tmp_path, baseline, mixed_table):
    train = read(write(tmp_path, "tr.csv", mixed_table(300, 0)), label_column="outcome")
    test = read(write(tmp_path, "te.csv", mixed_table(200, 1)), label_column="outcome")
    assert train.features["glucose"].isna().sum() == 30
    y_train = np.array([label == "sick" for label in train.labels], dtype=int)
    y_test = np.array([label == "sick" for label in test.labels], dtype=int)
    inputs = BaselineInputs(
        train_texts=train.texts,
        train_labels=y_train,
        eval_texts=test.texts,
        n_classes=2,
        seed=0,
        train_features=train.features,
        eval_features=test.features,
    )
    proba = baseline(inputs)
    assert proba.shape == (200, 2) and np.allclose(proba.sum(axis=1), 1)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(y_test, proba[:, 1]) > 0.85
    inputs.eval_features = test.features.drop(columns=["smoker"])
    with pytest.raises(UserError, match="evaluation data lacks columns the training data has"):
        baseline(inputs)


@pytest.mark.parametrize("baseline", [logistic_regression, gradient_boosting])
def test_raw_column_baselines_take_a_category_with_thousands_of_values(tmp_path, baseline):
    """A crash or visit code repeated a few times (so not dropped as an identifier) has more
    values than histogram gradient boosting can split on: the rarest are grouped, no error."""
    rng = np.random.default_rng(0)
    n = 1200
    frame = pd.DataFrame(
        {
            "case": [f"{i // 2}:1" for i in range(n)],  # 600 values, each twice
            "speed": rng.normal(size=n),
            "label": ["dead" if x > 1.0 else "alive" for x in rng.normal(size=n)],
        }
    )
    frame.loc[frame["speed"] > 0.8, "label"] = "dead"
    examples = read(write(tmp_path, "crash.csv", frame), label_column="label")
    y = np.array([label == "dead" for label in examples.labels], dtype=int)
    inputs = BaselineInputs(
        train_texts=examples.texts[:1000],
        train_labels=y[:1000],
        eval_texts=examples.texts[1000:],
        n_classes=2,
        seed=0,
        train_features=examples.features.iloc[:1000],
        eval_features=examples.features.iloc[1000:],
    )
    proba = baseline(inputs)
    from sklearn.metrics import roc_auc_score

    assert proba.shape == (200, 2) and roc_auc_score(y[1000:], proba[:, 1]) > 0.7


def test_records_section_shows_placeholders_never_values(tmp_path, mixed_table):
    examples = read(write(tmp_path, "s.csv", mixed_table(40, 2)), label_column="outcome", card=CARD)
    facts, lines = records_section(examples.features, examples.features, CARD)
    report = "\n".join(lines)
    assert "`plasma glucose: <numeric> mg/dL; smoker: <categorical>; notes: <text>`" in report
    assert facts["columns"]["glucose"]["missing_train"] == 4
    for value in examples.features["glucose"].dropna().astype(int).astype(str):
        assert f" {value} " not in report
    assert "chest pain" not in report


def test_reference_ranges_from_the_card_name_the_band(tmp_path):
    card = {
        "feature_columns": {
            "glucose": {
                "name": "2-hour glucose",
                "unit": "mg/dL",
                "bands": [[140, "normal"], [200, "impaired glucose tolerance"], [None, "high"]],
            }
        }
    }
    frame = pd.DataFrame({"glucose": ["139.5", "140", "250", ""], "label": ["a", "b"] * 2})
    examples = read(write(tmp_path, "b.csv", frame), label_column="label", card=card)
    assert examples.texts == [
        "2-hour glucose: 139.5 mg/dL (normal)",
        "2-hour glucose: 140 mg/dL (impaired glucose tolerance)",
        "2-hour glucose: 250 mg/dL (high)",
        "2-hour glucose: missing",
    ]
    path = tmp_path / "card.md"
    path.write_text("---\nfeature_columns:\n  g: {bands: [[200, high], [140, normal]]}\n---\n")
    with pytest.raises(UserError, match="column 'g' has malformed bands"):
        table_card(path)


def test_a_drafted_card_must_be_completed_before_it_is_read(tmp_path):
    """`finetune data card --write` drafts units as TODO: the records would print them."""
    from finetune.data.cards import draft_card

    data = write(
        tmp_path,
        "visits.csv",
        pd.DataFrame({"age": [50, 61], "smoker": ["yes", "no"], "label": ["a", "b"]}),
    )
    card = tmp_path / "visits.md"
    card.write_text(draft_card(data, "label", None))
    with pytest.raises(UserError, match="column 'age' still has TODO as its unit"):
        table_card(card)
    card.write_text(card.read_text().replace("unit: TODO", "unit: years"))
    header = table_card(card)  # smoker's drafted type, categorical/text, means "infer"
    examples = read(data, label_column="label", card=header)
    assert examples.texts == ["age: 50 years; smoker: yes", "age: 61 years; smoker: no"]


def test_card_units_and_bands_only_on_numeric_columns(tmp_path):
    """A categorical column given bands used to end in a TypeError (text < number)."""
    data = write(
        tmp_path,
        "stages.csv",
        pd.DataFrame({"stage": ["I", "II", "III", "IV"], "label": ["a", "b", "a", "b"]}),
    )
    card = tmp_path / "card.md"
    bands = "bands: [[2, early], [null, late]]"
    card.write_text(f"---\nfeature_columns:\n  stage: {{type: categorical, {bands}}}\n---\n")
    with pytest.raises(UserError) as error:  # declared categorical: refused with the card
        table_card(card)
    message = str(error.value)
    assert message.startswith(f"{card}: column 'stage' is categorical but has bands")
    assert "type: numeric" in message and "\n" not in message
    # Kind left to the data (inferred categorical): refused when the table is read.
    card.write_text(f"---\nfeature_columns:\n  stage: {{{bands}}}\n---\n")
    with pytest.raises(UserError, match=f"^{card}: column 'stage' is categorical but has bands"):
        read(data, label_column="label", card=table_card(card))
    card.write_text("---\nfeature_columns:\n  stage: {unit: years}\n---\n")
    with pytest.raises(UserError, match="column 'stage' is categorical but has unit"):
        read(data, label_column="label", card=table_card(card))
    card.write_text("---\nclasses: [a, b]\npositive_class: c\n---\n")
    with pytest.raises(UserError, match=r"positive_class 'c' is not one of its classes \(a, b\)"):
        table_card(card)
    # Numbers with units and bands are what cards are for.
    card.write_text(
        "---\nfeature_columns:\n  n: {unit: cm, bands: [[2, low], [null, high]]}\n---\n"
    )
    numbers = write(tmp_path, "n.csv", pd.DataFrame({"n": [1, 3], "label": ["a", "b"]}))
    assert read(numbers, label_column="label", card=table_card(card)).texts == [
        "n: 1 cm (low)",
        "n: 3 cm (high)",
    ]


def test_a_card_describing_absent_columns_is_named(tmp_path):
    data = write(tmp_path, "g.csv", pd.DataFrame({"glucose": [1, 2], "label": ["a", "b"]}))
    card = {"feature_columns": {"glucse": {"unit": "mg/dL"}}, "_file": "mine.md"}
    with pytest.warns(UserWarning, match="mine.md describes columns .* does not have: glucse"):
        read(data, label_column="label", card=card)


def schema_run(tmp_path, frame: pd.DataFrame):
    """A run folder holding only what reading needs (schema.json, labels.json), and the
    training examples its schema comes from, read by the medical-risk recipe."""
    import json

    from finetune.data.records import save_schema
    from recipes.medical_risk import recipe

    data = write(tmp_path, "train.csv", frame)
    config = recipe.config(data={"path": str(data), "label_column": "outcome"})
    train = recipe.read(data, config)
    folder = tmp_path / "run"
    folder.mkdir()
    save_schema(folder, train.features)
    (folder / "labels.json").write_text(json.dumps({"labels": ["well", "sick"]}))
    return train, recipe.config(data={"label_column": "outcome"}, output=str(folder))


def test_a_trained_schema_renders_prediction_files_like_training(tmp_path, capsys):
    """`visits` repeats in training (a feature), but twelve rows of it, one per value, are
    unique consecutive whole numbers: re-typed on their own they look like a row counter."""
    from finetune.data.records import run_schema
    from recipes.medical_risk import recipe

    frame = pd.DataFrame(
        {
            "visits": [v for v in range(1, 13) for _ in (0, 1)],
            "stage": ["02", "II", "03", "IV"] * 6,  # codes, not numbers: categorical
            "outcome": ["sick", "well", "well", "sick"] * 6,
        }
    )
    train, config = schema_run(tmp_path, frame)
    assert list(train.features.columns) == ["visits", "stage"]
    rows = frame.iloc[::2]
    new = write(tmp_path, "new.csv", rows.drop(columns=["outcome"]).assign(clinic="north"))
    capsys.readouterr()
    records = recipe.read(new, config, labelled=False)
    assert records.texts == [train.texts[i] for i in rows.index]
    assert "columns the model was not trained on, ignored: clinic" in capsys.readouterr().out
    # Re-typed alone, `visits` would have been dropped and the codes read as numbers ("2").
    assert records.texts[0] == "visits: 1; stage: 02"
    labelled = recipe.read(write(tmp_path, "lab.csv", rows), config)  # evaluate --data
    assert labelled.texts == records.texts and labelled.labels == list(rows["outcome"])

    renamed = write(tmp_path, "renamed.csv", rows.rename(columns={"visits": "Visits"}))
    with pytest.raises(UserError) as error:
        recipe.read(renamed, config, labelled=False)
    message = str(error.value)
    assert message.startswith(f"{renamed}: lacks columns the model was trained on: visits")
    assert "'Visits' the column 'visits' renamed" in message and "\n" not in message
    # A config being trained (a new folder, or one replaced with --overwrite) has no schema.
    from dataclasses import replace

    assert run_schema(config) is not None and run_schema(replace(config, overwrite=True)) is None


def test_a_json_list_in_a_feature_column_is_refused(tmp_path):
    path = tmp_path / "records.jsonl"
    path.write_text(
        '{"age": 50, "tags": ["smoker"], "outcome": "yes"}\n'
        '{"age": 60, "tags": "none", "outcome": "no"}\n'
    )
    from finetune.data.tables import read_table

    with pytest.raises(UserError, match=r"column 'tags' holds a JSON object or list.*rows? 1"):
        table_examples(read_table(path), str(path), "outcome")
