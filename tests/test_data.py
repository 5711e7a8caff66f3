from pathlib import Path

import pandas as pd
import pytest

from finetune.data.tables import (
    Examples,
    _row_numbers,
    check_train_eval,
    load_examples,
    stratified_split,
)
from finetune.errors import UserError, first_line


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


def test_reads_csv_jsonl_parquet_alike(tmp_path: Path):
    frame = pd.DataFrame({"text": ["a b", "c d"], "label": [1, 0]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "d.parquet")
    loaded = [
        load_examples(tmp_path / f"d.{ext}", "text", "label") for ext in ("csv", "jsonl", "parquet")
    ]
    assert all(e.texts == ["a b", "c d"] and e.labels == ["1", "0"] for e in loaded)


@pytest.mark.parametrize(
    "name, content, columns, message",
    [
        ("missing.csv", None, ("text", "label"), "Data file not found"),
        ("empty.csv", "", ("text", "label"), "is empty"),
        ("header.csv", "text,label\n", ("text", "label"), "header but no rows"),
        (
            "cols.csv",
            "message,intent\nhi,a\n",
            ("text", "intent"),
            "no text column 'text'.*Columns found: message, intent.*--text-column",
        ),
        ("cols2.csv", "text,intnet\nhi,a\n", ("text", "intent"), "Did you mean 'intnet'"),
        ("tabs.csv", "text\tlabel\nhi\ta\n", ("text", "label"), "separated by tabs"),
        (
            "blank.csv",
            "text,label\nhello,a\n  ,b\nok,a\n",
            ("text", "label"),
            "empty text in column 'text' at lines 3",
        ),
        (
            "nolabel.csv",
            "text,label\nhello,a\nworld,\n",
            ("text", "label"),
            "missing label in column 'label' at lines 3",
        ),
        (
            "latin.csv",
            "text,label\ncaf\xe9,a\n".encode("cp1252"),
            ("text", "label"),
            r"not UTF-8 text \(byte 0xe9 at offset 14\); it reads as Windows-1252 \(Western "
            r"Windows\)\. Save it as UTF-8 \(in Excel: Save As, \"CSV UTF-8\"\)\.$",
        ),
        (
            "gbk.csv",  # Excel's CSV on a Chinese Windows
            "text,label\n我的快递到哪里了,物流\n".encode("gbk"),
            ("text", "label"),
            r"not UTF-8 text \(byte 0xce at offset 11\); it reads as GB18030/GBK \(Chinese",
        ),
        (
            "unknown.csv",  # neither: no guess
            b"text,label\n\x81\x20,a\n",
            ("text", "label"),
            r"not UTF-8 text \(byte 0x81 at offset 11\)\. Save it as UTF-8",
        ),
        (
            "unicode.tsv",  # Excel's "Unicode Text": UTF-16 with a byte-order mark
            "text\tlabel\n你好\ta\n".encode("utf-16"),
            ("text", "label"),
            r"is UTF-16 text \(Excel's \"Unicode Text\"\), not UTF-8\. Save it as UTF-8",
        ),
        ("bin.csv", b"\x00\x01\x02binary", ("text", "label"), "looks binary"),
        (
            "data.xlsx",
            "x",
            ("text", "label"),
            r"unsupported file type '\.xlsx'\. .*Save it as UTF-8 \(in Excel: Save As, \"CSV UTF-8",
        ),
        ("data.txt", "x", ("text", "label"), r"unsupported file type '\.txt'\. Use [^E]*$"),
    ],
)
def test_bad_files_get_clear_errors(tmp_path, name, content, columns, message):
    path = tmp_path / name if content is None else write(tmp_path, name, content)
    with pytest.raises(UserError, match=message):
        load_examples(path, *columns)


def test_label_checks():
    train = Examples(["a", "b", "c"], ["x", "y", "x"], "train.csv")
    with pytest.raises(UserError, match="test.csv: labels not present in the training data: 'z'"):
        check_train_eval(train, Examples(["d"], ["z"], "test.csv"))
    with pytest.raises(UserError, match="one class only"):
        check_train_eval(Examples(["a", "b"], ["x", "x"], "t.csv"), Examples(["c"], ["x"], "e"))


def test_stratified_split_is_seeded_and_keeps_every_class():
    labels = ["a"] * 50 + ["b"] * 10 + ["c"]
    examples = Examples([str(i) for i in range(len(labels))], labels, "s")
    kept, held = stratified_split(examples, 0.2, seed=5)
    assert (kept, held) == stratified_split(examples, 0.2, seed=5)
    assert sorted(kept + held) == list(range(len(labels)))
    assert [labels[i] for i in held].count("a") == 10
    assert [labels[i] for i in held].count("b") == 2
    assert "c" in [labels[i] for i in kept]  # a single example stays on the training side


# --- Rows whose field count differs from the header's ---------------------------------------


@pytest.mark.parametrize(
    "name, content, message",
    [
        # The first row's extra field used to become the pandas index: the text was cut.
        (
            "one.csv",
            "text\nhello, world\nbye\n",
            r"one.csv line 2: 2 fields where the header has 1 \(a text with an unquoted comma\?\)"
            r"\. Quote texts that hold the separator\.",
        ),
        (
            "later.csv",
            'text,label\nhi,a\n"quoted, fine",b\nok,a\nyes,b\nno,a\nhello, world,b\nx,y, z,a\n',
            r"later.csv line 7: 3 fields where the header has 2 \(also lines 8\) "
            r"\(a text with an unquoted comma\?\)",
        ),
        (
            "tabs.tsv",
            "text\tlabel\nhi\ta\nhello\tworld\tb\n",
            r"tabs.tsv line 3: 3 fields where the header has 2 \(a text with an unquoted tab\?\)",
        ),
        # A short row is refused too, by its physical line (the quoted text spans two lines):
        # read, it would be half of a text split by an unquoted line break.
        (
            "short.csv",
            'text,label\nhi,a\n"two\nlines",b\nhello\nworld,b\n',
            r"short.csv line 5: 1 field where the header has 2 \(a text with an unquoted line "
            r"break, or missing separators\?\)",
        ),
        (
            "semicolons.csv",
            "text;label\nhi, there;a\nhello;b\n",
            r"line 2: 2 fields where the header has 1 .*separated by tabs or semicolons",
        ),
    ],
)
def test_rows_with_another_field_count_than_the_header_are_refused(
    tmp_path, name, content, message
):
    with pytest.raises(UserError, match=message):
        load_examples(write(tmp_path, name, content), "text", "label")


def test_a_column_named_twice_is_refused_and_unnamed_ones_may_repeat(tmp_path):
    from finetune.data import memmap

    for reader in (load_examples, memmap.load_examples):
        twice = write(tmp_path, "twice.csv", "text,label,text\nhi,a,x\nyo,b,y\n")
        with pytest.raises(UserError, match="names 'text' more than once; rename the copies"):
            reader(twice, "text", "label")
    spreadsheet = write(tmp_path, "sheet.csv", "text,label,,\nhi,a,,\nyo,b,,\n")
    assert list(load_examples(spreadsheet, "text", "label").texts) == ["hi", "yo"]


def test_quoted_separators_and_line_breaks_read_whole(tmp_path):
    path = write(tmp_path, "ok.csv", 'text\n"hello, world"\n\n"two\nlines"\n')
    assert load_examples(path, "text", None).texts == ["hello, world", "two\nlines"]


def test_bad_rows_are_named_by_position_whatever_the_index(tmp_path):
    # A Parquet file keeps a pandas index; a text index used to crash the error path (int()).
    frame = pd.DataFrame({"text": ["a", " ", "c"], "label": ["x", "y", "x"]}, index=["p", "q", "r"])
    frame.to_parquet(tmp_path / "indexed.parquet")
    with pytest.raises(UserError, match="empty text in column 'text' at rows 2"):
        load_examples(tmp_path / "indexed.parquet", "text", "label")
    mask = pd.Series([False, True, True], index=[10.5, "b", None])
    assert _row_numbers(mask, "csv") == "lines 3, 4"


def test_predict_data_refuses_a_text_with_an_unquoted_comma(tmp_path, monkeypatch):
    """The first row's extra field used to become the index: predictions for cut texts."""
    from types import SimpleNamespace

    import numpy as np
    from typer.testing import CliRunner

    from finetune.cli import app
    from recipes.customer_service import recipe

    loaded = SimpleNamespace(
        config=recipe.config(),
        labels=["a", "b"],
        predict_proba=lambda texts: np.tile([0.25, 0.75], (len(texts), 1)),
    )
    monkeypatch.setattr(recipe, "load", lambda run: loaded)
    inbox = write(tmp_path, "inbox.csv", "text\nhello, I want a refund\nwhere is my parcel\n")
    output = tmp_path / "predictions.csv"
    arguments = ["customer-service", "predict", "--run", str(tmp_path), "--data", str(inbox)]
    result = CliRunner().invoke(app, [*arguments, "--output", str(output)])
    assert result.exit_code == 2, result.output
    assert "inbox.csv line 2: 2 fields where the header has 1" in result.output
    assert "Traceback" not in result.output and not output.exists()

    write(tmp_path, "inbox.csv", 'text\n"hello, I want a refund"\nwhere is my parcel\n')
    result = CliRunner().invoke(app, [*arguments, "--output", str(output)])
    assert result.exit_code == 0, result.output
    written = pd.read_csv(output)
    assert written["text"].tolist() == ["hello, I want a refund", "where is my parcel"]
    assert written["predicted_label"].tolist() == ["b", "b"]


# --- Cells that hold a structure -------------------------------------------------------------


@pytest.mark.parametrize(
    "rows, message",
    [
        (
            [{"text": "hi", "label": "a"}, {"text": {"body": "hello"}, "label": "b"}],
            "d.jsonl: column 'text' holds a JSON object or list instead of a single value at "
            "rows 2",
        ),
        (
            [{"text": "hi", "label": "a"}, {"text": "yo", "label": ["a", "b"]}],
            "d.jsonl: column 'label' holds a JSON object or list instead of a single value at "
            "rows 2",
        ),
    ],
)
def test_json_objects_and_lists_in_cells_are_refused(tmp_path, rows, message):
    import json

    path = write(tmp_path, "d.jsonl", "".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(UserError, match=message):
        load_examples(path, "text", "label")


def test_parquet_list_cells_are_refused(tmp_path):
    frame = pd.DataFrame({"text": [["a", "b"], ["c"]], "label": ["x", "y"]})
    frame.to_parquet(tmp_path / "lists.parquet")
    with pytest.raises(UserError, match="column 'text' holds a JSON object or list .* rows 1, 2"):
        load_examples(tmp_path / "lists.parquet", "text", "label")


# --- Only parse errors become "could not read" ------------------------------------------------


@pytest.mark.parametrize("memory_map", [False, True])
def test_a_memory_error_in_the_reader_is_not_a_could_not_read(tmp_path, monkeypatch, memory_map):
    from finetune.data import memmap

    path = write(tmp_path, "d.csv", "text,label\nhi,a\n")

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(pd, "read_csv", out_of_memory)
    with pytest.raises(MemoryError):
        (memmap.load_examples if memory_map else load_examples)(path, "text", "label")


def test_parse_errors_keep_their_first_line(tmp_path):
    path = write(tmp_path, "d.jsonl", '{"text": "hi", "label": "a"}\n{"text": oops}\n')
    with pytest.raises(UserError, match=r"Could not read .*d.jsonl as JSONL: \S"):
        load_examples(path, "text", "label")
    assert first_line(ValueError("first\nsecond")) == "first"
    assert first_line(MemoryError()) == "MemoryError"
