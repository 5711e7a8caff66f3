from pathlib import Path

import pandas as pd
import pytest

from finetune.data import Examples, check_train_eval, load_examples, stratified_split
from finetune.errors import UserError


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
        ("latin.csv", "text,label\ncaf\xe9,a\n".encode("latin-1"), ("text", "label"), "not UTF-8"),
        ("bin.csv", b"\x00\x01\x02binary", ("text", "label"), "looks binary"),
        ("data.xlsx", "x", ("text", "label"), "unsupported file type"),
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
