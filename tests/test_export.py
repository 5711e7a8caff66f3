"""`finetune export`: merged standalone folders predict what the adapter run predicts."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from finetune.cli import app
from recipes.customer_service import recipe

TEXTS = ["refund me now", "my account is locked", "where is my parcel asap", "money back pls"]


def tiny_run(model_dir: Path, data: tuple[Path, Path], output: Path, quant: str = "none"):
    config = recipe.config(
        data={"path": str(data[0]), "eval_path": str(data[1])},
        model={"name": str(model_dir), "lora_r": 4, "lora_alpha": 8, "quant": quant},
        train={"max_steps": 4, "batch_size": 8, "precision": "fp32", "learning_rate": 1e-2},
        output=str(output),
    )
    return recipe.train(config, show_progress=False)


def load_exported(folder: Path):
    """The export's own predict.py, as a user without finetune-kit would run it."""
    spec = importlib.util.spec_from_file_location(f"predict_{folder.name}", folder / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load(folder)


@pytest.mark.parametrize("backbone", ["bert", "llama"])
def test_export_cli_writes_a_folder_that_predicts_like_the_run(
    backbone, tiny_model_dir, tiny_llama_dir, small_csvs, tmp_path
):
    from transformers import AutoModel

    model_dir = tiny_model_dir if backbone == "bert" else tiny_llama_dir
    run = tiny_run(model_dir, small_csvs, tmp_path / "run")
    result = CliRunner().invoke(
        app, ["export", "--run", str(run.folder), "--output", str(tmp_path / "merged")]
    )
    assert result.exit_code == 0, result.output
    merged = tmp_path / "merged"
    assert (merged / "model.safetensors").is_file() and (merged / "head.safetensors").is_file()
    assert not (merged / "adapter_config.json").exists()  # no peft needed to load it
    assert not any("lora" in name for name in AutoModel.from_pretrained(merged).state_dict())
    labels, predict_proba = load_exported(merged)
    assert labels == run.labels
    np.testing.assert_allclose(predict_proba(TEXTS), run.predict_proba(TEXTS), atol=1e-4)
    checks = json.loads((merged / "export.json").read_text())
    assert checks["merged_vs_trained_run"]["max_abs_diff"] < 1e-4
    again = CliRunner().invoke(app, ["export", "--run", str(run.folder), "--output", str(merged)])
    assert again.exit_code == 2 and "already exists" in again.output


@pytest.mark.parametrize("quant", ["8bit", "4bit"])
def test_quantized_run_is_merged_onto_full_precision_base(
    quant, tiny_model_dir, small_csvs, tmp_path
):
    from finetune.export import export_merged

    run = tiny_run(tiny_model_dir, small_csvs, tmp_path / "run", quant=quant)
    checks = export_merged(run.folder, tmp_path / "merged")
    # Merging is exact: the merged model predicts what the adapter predicts on the same base.
    assert checks["merged_vs_adapter_same_base"]["max_abs_diff"] < 1e-4
    assert checks["run_quant"] == quant
    readme = (tmp_path / "merged" / "README.md").read_text()
    assert "merged onto the **full-precision base weights**" in readme
    info = json.loads((tmp_path / "merged" / "classifier.json").read_text())
    assert info["trained_with_quant"] == quant and info["quant"] == "none"
    labels, predict_proba = load_exported(tmp_path / "merged")
    # No bitsandbytes layers in the export: its weights are the fp32 base plus the LoRA deltas.
    from safetensors.torch import load_file

    weights = load_file(str(tmp_path / "merged" / "model.safetensors"))
    assert all(tensor.dtype.is_floating_point for tensor in weights.values())
    assert predict_proba(TEXTS).shape == (len(TEXTS), len(labels))
