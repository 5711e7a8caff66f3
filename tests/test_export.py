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
    # The export holds the fine-tuned model, whatever the run delivers.
    np.testing.assert_allclose(predict_proba(TEXTS), run.model_proba(TEXTS), atol=1e-4)
    checks = json.loads((merged / "export.json").read_text())
    assert checks["merged_vs_trained_run"]["max_abs_diff"] < 1e-4
    again = CliRunner().invoke(app, ["export", "--run", str(run.folder), "--output", str(merged)])
    assert again.exit_code == 2 and "already exists" in again.output


@pytest.mark.parametrize("quant", ["8bit", "4bit"])
def test_quantized_run_is_merged_onto_full_precision_base(
    quant, tiny_model_dir, small_csvs, tmp_path
):
    from finetune.modeling.export import export_merged

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


# An e-mail and a Luhn-valid card number: the run redacts both before the model sees them.
PII_TEXT = "refund to anna.berg@example.com, card 4111 1111 1111 1111 asap"


def test_exported_predictor_redacts_pii_as_the_run_did(tiny_model_dir, small_csvs, tmp_path):
    from finetune.data.pii import redact
    from finetune.modeling.export import export_merged
    from finetune.modeling.inference import predict_proba

    run = tiny_run(tiny_model_dir, small_csvs, tmp_path / "run")
    assert run.config.data.redact_pii  # the recipe's default
    export_merged(run.folder, tmp_path / "merged")
    assert (tmp_path / "merged" / "pii.py").read_text() == Path(
        importlib.util.find_spec("finetune.data.pii").origin
    ).read_text()
    _, exported = load_exported(tmp_path / "merged")
    redacted, counts = redact(PII_TEXT)
    assert counts.email == 1 and counts.card == 1
    raw_probabilities = exported([PII_TEXT])
    np.testing.assert_allclose(raw_probabilities, exported([redacted]), atol=1e-6)
    np.testing.assert_allclose(raw_probabilities, run.model_proba([PII_TEXT]), atol=1e-4)
    # The model does respond to the unredacted text: without redaction the figures would differ.
    unredacted = predict_proba(
        run.model, run.inputs.encode([PII_TEXT]), run.inputs, 8, "cpu", run.bf16
    )
    assert np.abs(unredacted - raw_probabilities).max() > 1e-3


def test_the_shipped_redactor_needs_only_the_standard_library():
    """finetune/data/pii.py is copied next to exported models, which have no finetune-kit."""
    import ast
    import sys

    source = Path(importlib.util.find_spec("finetune.data.pii").origin).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def fake_run_folder(folder: Path, recipe_name: str, kind: str = "text") -> Path:
    """What the export reads before any model: the run's recipe and classifier kind."""
    import yaml

    (folder / "adapter").mkdir(parents=True)
    (folder / "adapter" / "classifier.json").write_text(json.dumps({"kind": kind}))
    (folder / "labels.json").write_text(json.dumps({"labels": ["no", "yes"]}))
    (folder / "config.yaml").write_text(yaml.safe_dump({"recipe": recipe_name}))
    return folder


@pytest.mark.parametrize(
    ("recipe_name", "kind", "reason"),
    [
        ("medical-risk", "text", "patient records"),
        ("recommendation", "text", "interaction histories"),
    ],
)
def test_export_refuses_runs_its_predictor_cannot_render(recipe_name, kind, reason, tmp_path):
    run = fake_run_folder(tmp_path / "run", recipe_name, kind)
    result = CliRunner().invoke(
        app, ["export", "--run", str(run), "--output", str(tmp_path / "merged")]
    )
    assert result.exit_code == 2, result.output
    assert reason in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) <= 3  # one message (wrapped at most)
    assert not (tmp_path / "merged").exists()
