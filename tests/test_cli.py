"""The CLI contract: sub-commands, flags, outputs, one-line errors, and a torch-free --help."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pandas as pd
import pytest
from typer.testing import CliRunner

from finetune.cli import app

runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, list(args), catch_exceptions=False)


def test_help_lists_recipes_and_commands_without_importing_torch():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from finetune.cli import app\n"
        "r = CliRunner()\n"
        "top = r.invoke(app, ['--help']).output\n"
        "sub = r.invoke(app, ['customer-service', '--help']).output\n"
        "assert 'customer-service' in top and 'export' in top, top\n"
        "assert all(c in sub for c in ('train', 'evaluate', 'predict')), sub\n"
        "heavy = ('torch', 'transformers', 'peft', 'sklearn', 'pandas')\n"
        "heavy = [m for m in heavy if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_train_evaluate_predict(tiny_model_dir, small_csvs, tmp_path):
    train_csv, test_csv = small_csvs
    out = tmp_path / "run"
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("train:\n  batch_size: 8\n  epochs: 3\nmodel:\n  lora_r: 4\n")
    result = invoke(
        "customer-service",
        "train",
        "--config",
        str(yaml_file),
        "--data",
        str(train_csv),
        "--eval-data",
        str(test_csv),
        "--model",
        str(tiny_model_dir),
        "--max-steps",
        "4",
        "--seed",
        "3",
        "--output",
        str(out),
        "--set",
        "train.eval_batch_size=16",
    )
    assert result.exit_code == 0, result.output
    assert "tfidf_logreg" in result.output and f"Run folder: {out}" in result.output
    saved = (out / "config.yaml").read_text()
    assert "max_steps: 4" in saved and "seed: 3" in saved and "batch_size: 8" in saved
    assert "eval_batch_size: 16" in saved

    result = invoke("customer-service", "evaluate", "--run", str(out), "--data", str(test_csv))
    assert result.exit_code == 0, result.output
    metrics = json.loads((out / "evaluations" / "test.json").read_text())
    train_metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["accuracy"] == pytest.approx(train_metrics["accuracy"])

    unlabelled = tmp_path / "new.csv"
    pd.DataFrame({"id": [1, 2], "text": ["refund me now", "where is my parcel"]}).to_csv(
        unlabelled, index=False
    )
    predictions = tmp_path / "pred.csv"
    result = invoke(
        "customer-service",
        "predict",
        "--run",
        str(out),
        "--data",
        str(unlabelled),
        "--output",
        str(predictions),
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(predictions)
    assert list(frame.columns) == ["id", "text", "predicted_label", "probability"]
    assert set(frame["predicted_label"]) <= {"refund", "delivery", "login"}
    assert frame["probability"].between(0, 1).all()

    result = invoke(
        "customer-service", "predict", "--run", str(out), "--text", "my account is locked"
    )
    assert result.exit_code == 0 and result.stdout.strip().split("\t")[0] in {
        "refund",
        "delivery",
        "login",
    }

    for extra in (["--output", str(tmp_path / "p.csv")], ["--text-column", "body"]):
        result = runner.invoke(
            app, ["customer-service", "predict", "--run", str(out), "--text", "hi", *extra]
        )
        assert result.exit_code == 2 and "go with --data; --text prints" in result.output

    # Outputs of the wrong kind: one line each, and the file or folder in the way untouched.
    a_file, a_folder = tmp_path / "a_file", tmp_path / "a_folder"
    a_file.write_text("keep me")
    a_folder.mkdir()
    wrong = [
        (["customer-service", "train", "--data", str(train_csv), "--output", str(a_file)], "file"),
        (["export", "--run", str(out), "--output", str(a_file), "--overwrite"], "file"),
        (["report", str(out), "--output", str(a_file)], "file"),
        (["customer-service", "predict", "--run", str(out), "--data", str(unlabelled)], "folder"),
        (["customer-service", "evaluate", "--run", str(out), "--data", str(test_csv)], "folder"),
    ]
    for args, kind in wrong:
        target = a_file if kind == "file" else a_folder
        args = args if kind == "file" else [*args, "--output", str(a_folder)]
        result = runner.invoke(app, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.strip().startswith(f"error: Output {target} is a {kind}, not a")
    assert a_file.read_text() == "keep me" and not list(a_folder.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("a_")) == [
        "a_file",
        "a_folder",
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "nope.csv"], "Data file not found: nope.csv"),
        (["--quant", "3bit"], "model.quant must be one of none, 8bit, 4bit"),
        (["--optim", "sgd"], "train.optim must be one of adamw, adamw_8bit, paged_adamw_8bit"),
        (["--epochs", "0"], "train.epochs must be positive"),
        (["--label-column", "intent"], "no label column 'intent'"),
        (
            ["--model", "no-such-org/no-such-model"],
            "Could not load model 'no-such-org/no-such-model'",
        ),
    ],
)
def test_bad_input_is_one_line_error(args, message, small_csvs, tmp_path):
    if "--data" not in args:
        args = ["--data", str(small_csvs[0]), *args]
    result = runner.invoke(
        app, ["customer-service", "train", "--output", str(tmp_path / "o"), *args]
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "o").exists()


def write_csv(path, rows):
    pd.DataFrame(rows, columns=["text", "label"]).to_csv(path, index=False)
    return str(path)


def test_more_bad_inputs_are_one_line_errors(small_csvs, tmp_path):
    one_class = write_csv(tmp_path / "one.csv", [["hello there", "a"], ["hi again", "a"]])
    only_in_eval = write_csv(tmp_path / "eval.csv", [["new thing", "zzz"]])
    cases = [
        (["--data", one_class], "found one class only ('a')"),
        (
            ["--data", str(small_csvs[0]), "--eval-data", only_in_eval],
            "not present in the training",
        ),
        (["--data", str(small_csvs[0]), "--epochs", "-1"], "train.epochs must be positive"),
        (["--data", str(small_csvs[0]), "--set", "train.epochs=abc"], "train.epochs must be float"),
    ]
    for args, message in cases:
        out = tmp_path / "o"
        result = runner.invoke(app, ["customer-service", "train", "--output", str(out), *args])
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output, (args, result.output)
        assert "Traceback" not in result.output
        assert not out.exists()


def test_out_of_disk_while_saving_leaves_nothing(tiny_model_dir, small_csvs, tmp_path, monkeypatch):
    import errno

    from finetune.modeling import models

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(models, "save_classifier", full_disk)
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "customer-service",
            "train",
            "--data",
            str(small_csvs[0]),
            "--model",
            str(tiny_model_dir),
            "--max-steps",
            "1",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "No space left on the device" in result.output
    # No run folder, no half-written temporary one; the training checkpoint stays for --resume.
    assert [p.name for p in tmp_path.iterdir()] == ["run.checkpoint"]


def test_extremely_long_texts_are_truncated_and_counted(tiny_model_dir, small_csvs, tmp_path):
    rows = pd.read_csv(small_csvs[0]).values.tolist()
    rows[0][0] = "refund " * 20000  # far past any model's context
    data = write_csv(tmp_path / "long.csv", rows)
    out = tmp_path / "run"
    result = runner.invoke(
        app,
        [
            "customer-service",
            "train",
            "--data",
            data,
            "--model",
            str(tiny_model_dir),
            "--max-steps",
            "1",
            "--output",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "reached max_length=128 tokens" in (out / "report.md").read_text()


def test_importing_the_package_leaves_the_environment_alone():
    code = (
        "import os\n"
        "before = dict(os.environ)\n"
        "import finetune, finetune.cli, finetune.recipe\n"
        "assert dict(os.environ) == before, set(os.environ) ^ set(before)\n"
        "from finetune import runtime\n"
        "runtime.configure()\n"
        "assert os.environ['OMP_WAIT_POLICY'] == 'PASSIVE'\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_WAIT_POLICY", "ONEDNN_PRIMITIVE_CACHE_CAPACITY")
    }
    subprocess.run([sys.executable, "-c", code], check=True, env=env)


def test_wrapping_a_model_in_lora_prints_no_library_deprecation(tiny_model_dir):
    # peft reads an attribute transformers deprecates; no output may carry it: the engine's
    # model code quiets it when imported, for the Python API as for the command line.
    code = (
        "import logging\n"
        "import finetune.modeling.models\n"
        "assert logging.getLogger('bitsandbytes').level == logging.ERROR\n"
        "from peft import LoraConfig, get_peft_model\n"
        "from transformers import AutoModel\n"
        f"model = AutoModel.from_pretrained({str(tiny_model_dir)!r})\n"
        "get_peft_model(model, LoraConfig(target_modules=['query']))\n"
        "print('wrapped')\n"
    )
    result = subprocess.run(
        [sys.executable, "-W", "always::FutureWarning", "-c", code],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "wrapped" in result.stdout
    assert "is_gradient_checkpointing" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("recipe", "command"), [("recommendation", "recommend"), ("medical-risk", "predict")]
)
def test_export_refuses_runs_whose_texts_the_recipe_builds(recipe, command, tmp_path):
    """Before anything else is read: a recommendation run has no classifier files at all."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(f"recipe: {recipe}\n")
    result = runner.invoke(app, ["export", "--run", str(run), "--output", str(tmp_path / "x")])
    assert result.exit_code == 2
    line = result.output.strip()
    assert "\n" not in line and f"is a {recipe} run" in line, line
    assert line.endswith(f"(recipe.load / finetune {recipe} {command}).")
    assert not (tmp_path / "x").exists()


def test_recommendation_offers_its_own_command_not_predict():
    def commands(recipe: str) -> list[str]:
        return re.findall(r"^│ (\w+) ", invoke(recipe, "--help").output, re.M)

    assert commands("recommendation") == ["train", "recommend"]
    result = runner.invoke(app, ["recommendation", "predict", "--run", "r", "--text", "x"])
    assert result.exit_code == 2 and "No such command 'predict'" in result.output
    assert commands("medical-risk") == ["train", "evaluate", "predict"]


def test_a_run_of_another_recipe_is_named_as_such(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("recipe: medical-risk\n")
    for command in (["evaluate", "--data", "x.csv"], ["predict", "--text", "hello"], ["chat"]):
        result = runner.invoke(app, ["customer-service", *command, "--run", str(run)])
        assert result.exit_code == 2
        assert result.output.strip() == (
            f"error: {run} was trained by the medical-risk recipe, not by customer-service: "
            "use it through `finetune medical-risk`."
        )
