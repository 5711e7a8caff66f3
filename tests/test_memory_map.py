"""data.memory_map: texts, labels and token ids stay in memory-mapped Arrow files on disk.

The run must be the same run as an in-memory one (same rows, same batches, same metrics), only
without the data in the Python heap; the bad-input checks must say the same things."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from finetune.data import memmap
from finetune.data.columns import Column
from finetune.data.tables import load_examples
from finetune.errors import UserError
from recipes.customer_service import recipe

FAST = {"epochs": 2, "batch_size": 8, "eval_batch_size": 16}


def config_for(model_dir: Path, data: tuple[Path, Path], output: Path, **data_options):
    return recipe.config(
        data={"path": str(data[0]), "eval_path": str(data[1]), **data_options},
        model={"name": str(model_dir), "lora_r": 4, "lora_alpha": 8},
        train=FAST,
        output=str(output),
    )


def test_memory_mapped_run_is_the_same_run(tiny_model_dir, small_csvs, tmp_path):
    in_memory = recipe.train(
        config_for(tiny_model_dir, small_csvs, tmp_path / "memory", redact_pii=True),
        show_progress=False,
    )
    mapped = recipe.train(
        config_for(
            tiny_model_dir, small_csvs, tmp_path / "mapped", redact_pii=True, memory_map=True
        ),
        show_progress=False,
    )
    for key in ("accuracy", "recall", "f1", "auc", "n_train", "n_val", "baselines"):
        assert mapped.metrics[key] == in_memory.metrics[key], key
    with np.load(in_memory.folder / "scores.npz") as a, np.load(mapped.folder / "scores.npz") as b:
        assert sorted(a.files) == sorted(b.files)
        for name in a.files:
            np.testing.assert_array_equal(a[name], b[name])
    memory_history = json.loads((in_memory.folder / "history.json").read_text())
    assert json.loads((mapped.folder / "history.json").read_text()) == memory_history
    assert (mapped.folder / "predictions.csv").read_text() == (
        in_memory.folder / "predictions.csv"
    ).read_text()
    assert "memory_map: true" in (mapped.folder / "config.yaml").read_text()


def test_memory_mapped_examples_live_on_disk(small_csvs):
    examples = memmap.load_examples(small_csvs[0], "text", "label")
    plain = load_examples(small_csvs[0], "text", "label")
    assert isinstance(examples.texts, Column) and isinstance(examples.labels, Column)
    assert examples.texts.dataset.cache_files  # backed by a file, not an in-memory table
    assert list(examples.texts) == plain.texts and list(examples.labels) == plain.labels
    part = examples.subset([5, 0, 7], "part")
    assert isinstance(part.texts, Column)
    assert list(part.texts) == [plain.texts[i] for i in (5, 0, 7)]
    assert part.texts[-1] == plain.texts[7] and list(part.texts[1:]) == [
        plain.texts[0],
        plain.texts[7],
    ]


def test_token_ids_are_written_to_arrow_with_their_lengths(small_csvs):
    from transformers import AutoTokenizer

    from finetune.modeling.inputs import TextInputs
    from finetune.modeling.models import resolve_model_path

    inputs = TextInputs(AutoTokenizer.from_pretrained(resolve_model_path("minilm")), 6)
    texts = memmap.load_examples(small_csvs[0], "text", "label").texts
    ids = inputs.encode(texts.take([3, 1]))
    expected = inputs.encode([texts[3], texts[1]])
    assert isinstance(ids, Column) and [ids[0], ids[1]] == expected
    assert list(inputs.lengths(ids)) == [len(e) for e in expected]
    truncated = sum(len(e) >= 6 for e in expected)
    assert inputs.notes(ids, []) == (
        [f"{truncated} texts reached max_length=6 tokens."] if truncated else []
    )


def test_baselines_fit_on_a_capped_seeded_sample(tiny_model_dir, small_csvs, tmp_path):
    config = config_for(tiny_model_dir, small_csvs, tmp_path / "capped", memory_map=True)
    config.eval.baseline_max_rows = 12
    run = recipe.train(config, show_progress=False)
    report = (run.folder / "report.md").read_text()
    assert f"seeded sample of 12 of the {run.metrics['n_train']} training rows" in report
    assert set(run.metrics["baselines"]) == {"tfidf_logreg", "embedding_logreg"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text,label\nhello,a\n,b\nbye,a\n", "empty text in column 'text' at lines 3"),
        ("text,label\nhello,a\nhi,\nbye,a\n", "missing label in column 'label' at lines 3"),
        ("txt,label\nhello,a\n", "no text column 'text'. Did you mean 'txt'?"),
        ("text,label\n", "has a header but no rows"),
    ],
)
def test_memory_mapped_reading_names_the_bad_rows(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_text(content)
    with pytest.raises(UserError, match=message):
        memmap.load_examples(path, "text", "label")


def test_memory_mapped_jsonl_and_parquet(tmp_path, small_csvs):
    frame = pd.read_csv(small_csvs[0])
    frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.parquet"):
        examples = memmap.load_examples(tmp_path / name, "text", "label")
        assert list(examples.texts) == frame["text"].tolist()
        assert list(examples.labels) == frame["label"].tolist()


def test_not_utf8_is_found_past_the_first_block(tmp_path):
    path = tmp_path / "late.csv"
    path.write_bytes(b"text,label\n" + b"hello,a\n" * 200_000 + b"caf\xe9,b\n")
    with pytest.raises(UserError, match=r"not UTF-8 text \(byte 0xe9 at offset 1600014\)"):
        memmap.load_examples(path, "text", "label")


def test_bundled_data_is_read_into_memory_whatever_memory_map_says(tmp_path):
    # The customer-service recipe keeps a user's text table on disk; its bundled datasets
    # it reads into memory, and says so rather than running without the memory map.
    config = recipe.config(data={"memory_map": True}, output=str(tmp_path / "m"))
    with pytest.raises(UserError, match="customer-service recipe reads its data into memory"):
        recipe.train(config, show_progress=False)


def test_memory_map_and_folds_do_not_combine():
    with pytest.raises(UserError, match="does not combine with eval.folds"):
        recipe.config(data={"memory_map": True}, eval={"folds": 3})


def test_large_data_benchmark_runs_on_a_tiny_slice(tiny_model_dir, small_csvs, tmp_path):
    """benchmarks/large_data.py end to end on the fixture files (real run: docs/benchmarks.md)."""
    import subprocess
    import sys

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text(small_csvs[0].read_text())
    (data / "test.csv").write_text(small_csvs[1].read_text())
    script = Path(__file__).parent.parent / "benchmarks" / "large_data.py"
    out = tmp_path / "large.json"
    command = [sys.executable, str(script), "--data", str(data), "--model", str(tiny_model_dir)]
    command += ["--factors", "1,2", "--max-steps", "1", "--baseline-rows", "20"]
    subprocess.run([*command, "--output", str(out)], check=True, capture_output=True)
    rows = json.loads(out.read_text())["rows"]
    assert [(r["mode"], r["factor"]) for r in rows] == [
        ("in memory", 1),
        ("in memory", 2),
        ("memory-mapped", 1),
        ("memory-mapped", 2),
    ]
    assert rows[1]["train_rows"] == 2 * rows[0]["train_rows"] == 120
    assert all(r["peak_anon_mb"] > 0 and r["rss_ratio"] > 0 for r in rows)


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        (
            "one.csv",
            "text\nhello, world\nbye\n",
            "one.csv line 2: 2 fields where the header has 1 (a text with an unquoted comma?)",
        ),
        (
            "short.tsv",
            "text\tlabel\nhi\ta\nhello\nworld\tb\n",
            "short.tsv line 3: 1 field where the header has 2",
        ),
        (
            "object.jsonl",
            '{"text": "hi", "label": "a"}\n\n{"text": {"body": "yo"}, "label": "b"}\n',
            "object.jsonl: column 'text' holds a JSON object or list instead of a single value "
            "at rows 2",
        ),
        (
            "list.jsonl",
            '{"text": "hi", "label": "a"}\n{"text": "yo", "label": ["a", "b"]}\n',
            "list.jsonl: column 'label' holds a JSON object or list instead of a single value "
            "at rows 2",
        ),
    ],
)
def test_memory_mapped_reading_refuses_what_an_in_memory_read_refuses(
    tmp_path, name, content, message
):
    path = tmp_path / name
    path.write_text(content)
    for reader in (load_examples, memmap.load_examples):
        with pytest.raises(UserError) as caught:
            reader(path, "text", "label")
        assert message in str(caught.value), reader


def test_memory_mapped_parquet_lists_are_refused(tmp_path):
    frame = pd.DataFrame({"text": ["a", "b"], "label": [["x"], ["y", "z"]]})
    frame.to_parquet(tmp_path / "l.parquet")
    with pytest.raises(UserError, match="column 'label' holds a JSON object or list .* rows 1, 2"):
        memmap.load_examples(tmp_path / "l.parquet", "text", "label")


def test_memory_mapped_jsonl_with_mixed_value_types_reads_like_in_memory(tmp_path):
    # `datasets` turned a column mixing numbers and texts into JSON text in every row ('"a"').
    path = tmp_path / "mixed.jsonl"
    rows = [
        {"text": "hi there", "label": 1},
        {"text": 42, "label": "b"},
        {"text": "x", "label": 0.0},
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    mapped = memmap.load_examples(path, "text", "label")
    plain = load_examples(path, "text", "label")
    assert list(mapped.texts) == plain.texts == ["hi there", "42", "x"]
    assert list(mapped.labels) == plain.labels == ["1", "b", "0"]
    unlabelled = memmap.load_examples(path, "text", None)  # predict --data
    assert list(unlabelled.texts) == plain.texts and unlabelled.labels == []
