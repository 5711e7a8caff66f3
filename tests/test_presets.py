"""Recipe presets (`train --preset NAME`): one layer of named defaults, its place in the
resolution order, its one-line errors, its help text and a run that records it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from finetune.cli import app
from finetune.errors import UserError
from finetune.modeling import packs
from recipes.customer_service import recipe

runner = CliRunner()


def test_the_accurate_preset_sits_above_the_recipe_defaults():
    plain, accurate = recipe.config(), recipe.config(preset="accurate")
    assert plain.preset is None and plain.model.name == "minilm"
    assert plain.model.lora_layers is None
    assert accurate.preset == "accurate"
    assert accurate.model.name == "mpnet" and accurate.model.lora_layers is not None
    # What the preset does not set stays the recipe's.
    assert accurate.data.redact_pii is True
    assert accurate.train.max_batch_tokens == plain.train.max_batch_tokens


def test_precedence_preset_then_yaml_then_flags(tmp_path):
    values = recipe.presets["accurate"].values
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("train:\n  epochs: 9\n  batch_size: 8\n")
    from_yaml = recipe.config(yaml_file, preset="accurate")
    assert from_yaml.train.epochs == 9 and from_yaml.train.batch_size == 8  # YAML > preset
    assert from_yaml.model.lora_layers == values["model"]["lora_layers"]  # preset > recipe
    flagged = recipe.config(yaml_file, preset="accurate", train={"epochs": 2})
    assert flagged.train.epochs == 2 and flagged.train.batch_size == 8  # flags > YAML
    quick = recipe.config(quick=True, preset="accurate")
    assert quick.train.max_steps == recipe.quick["train"]["max_steps"]


def test_a_yaml_file_can_name_the_preset(tmp_path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("preset: accurate\ntrain:\n  epochs: 1\n")
    config = recipe.config(yaml_file)
    assert config.preset == "accurate" and config.model.name == "mpnet"
    assert config.train.epochs == 1


def test_an_unknown_preset_lists_the_recipes_presets():
    with pytest.raises(UserError, match=r"no preset 'fast'; its presets: accurate\."):
        recipe.config(preset="fast")
    from recipes.medical_risk import recipe as medical

    with pytest.raises(UserError, match="its presets: none"):
        medical.config(preset="accurate")
    with pytest.raises(UserError, match="reply task has no presets"):
        recipe.config(preset="accurate", options={"task": "reply"})


def test_cli_unknown_preset_is_one_line(tmp_path):
    result = runner.invoke(app, ["customer-service", "train", "--preset", "fast"])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "accurate" in lines[0], result.output


def test_train_help_lists_the_presets_without_importing_torch():
    code = (
        "import sys\n"
        "from typer.testing import CliRunner\n"
        "from finetune.cli import app\n"
        "out = CliRunner().invoke(app, ['customer-service', 'train', '--help']).output\n"
        "assert '--preset' in out and 'accurate' in out, out\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft', 'sklearn') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def _install_as_mpnet(model_dir, cache):
    """The tiny model installed in a test cache as if it were the verified mpnet pack."""
    folder = cache / "packs" / "mpnet"
    shutil.copytree(model_dir, folder)
    (folder / "pack.json").write_text(json.dumps({"sha256": packs.PACKS["mpnet"].sha256}))


def test_a_preset_run_records_its_name_and_values(
    tiny_model_dir, small_csvs, tmp_path, monkeypatch
):
    train_csv, test_csv = small_csvs
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    _install_as_mpnet(tiny_model_dir, tmp_path / "cache")
    out = tmp_path / "run"
    args = ["customer-service", "train", "--preset", "accurate", "--data", str(train_csv)]
    args += ["--eval-data", str(test_csv), "--max-steps", "2", "--output", str(out)]
    # --set beats the preset: LoRA on the top layer of the 2-layer model, the lower one cached.
    args += ["--set", "model.lora_layers=1"]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    saved = yaml.safe_load((out / "config.yaml").read_text())
    values = recipe.presets["accurate"].values
    assert saved["preset"] == "accurate" and saved["model"]["name"] == "mpnet"
    assert saved["model"]["lora_layers"] == 1
    assert saved["train"]["epochs"] == values["train"]["epochs"]
    assert saved["train"]["batch_size"] == values["train"]["batch_size"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["accuracy"] <= 1 and "embedding_logreg" in metrics["baselines"]


def test_the_preset_without_its_pack_says_how_to_fetch_it(small_csvs, tmp_path, monkeypatch):
    train_csv, _ = small_csvs
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "empty"))
    args = ["customer-service", "train", "--preset", "accurate", "--data", str(train_csv)]
    result = runner.invoke(app, [*args, "--output", str(tmp_path / "run")])
    assert result.exit_code != 0
    assert "finetune models fetch mpnet" in result.output.strip().splitlines()[-1], result.output
    assert not (tmp_path / "run").exists()


def test_the_banking77_benchmark_runs_a_preset(tiny_model_dir, tmp_path):
    import pandas as pd
    from conftest import make_rows

    for name, n, seed in (("train", 20, 1), ("test", 6, 2)):
        frame = pd.DataFrame(make_rows(n, seed)).rename(columns={"label": "category"})
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    output = tmp_path / "result.json"
    script = Path(__file__).parent.parent / "benchmarks" / "customer_service_banking77.py"
    # The preset's model swapped for the tiny one (--set beats a preset); no pack needed.
    args = ["--data-dir", str(tmp_path), "--skip-reference", "--preset", "accurate"]
    args += ["--max-steps", "2", "--set", f"model.name={tiny_model_dir}", "--output", str(output)]
    subprocess.run([sys.executable, str(script), *args], check=True, capture_output=True)
    rows = json.loads(output.read_text())["rows"]
    assert rows[0]["method"] == f"recipe --preset accurate model.name={tiny_model_dir}"
    assert {"baseline: tfidf_logreg", "baseline: embedding_logreg"} <= {r["method"] for r in rows}
