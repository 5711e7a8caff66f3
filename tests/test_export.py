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


def tiny_run(
    model_dir: Path, data: tuple[Path, Path], output: Path, quant: str = "none", **data_options
):
    config = recipe.config(
        data={"path": str(data[0]), "eval_path": str(data[1]), **data_options},
        model={"name": str(model_dir), "lora_r": 4, "lora_alpha": 8, "quant": quant},
        train={"max_steps": 4, "batch_size": 8, "precision": "fp32", "learning_rate": 1e-2},
        output=str(output),
    )
    return recipe.train(config, show_progress=False)


def two_class_run(model_dir: Path, tmp_path: Path):
    """A tiny run on two intents (`refund` positive), and its training table."""
    import pandas as pd
    from conftest import make_rows

    data = []
    for name, n, seed in (("train", 20, 1), ("test", 6, 2)):
        rows = [r for r in make_rows(n, seed) if r["label"] in ("refund", "login")]
        pd.DataFrame(rows).to_csv(tmp_path / f"{name}.csv", index=False)
        data.append(tmp_path / f"{name}.csv")
    run = tiny_run(model_dir, tuple(data), tmp_path / "run", positive_label="refund")
    return run, pd.read_csv(data[0])


def load_exported(folder: Path, served: bool = True):
    """The export's own predict.py, as a user without finetune-kit would run it."""
    spec = importlib.util.spec_from_file_location(f"predict_{folder.name}", folder / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load(folder, served=served)


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
    # What the run serves (on this tiny run, whichever its validation rows chose)...
    np.testing.assert_allclose(predict_proba(TEXTS), run.predict_proba(TEXTS), atol=1e-4)
    # ... and the fine-tuned model's own probabilities.
    model_proba = load_exported(merged, served=False)[1]
    np.testing.assert_allclose(model_proba(TEXTS), run.model_proba(TEXTS), atol=1e-4)
    checks = json.loads((merged / "export.json").read_text())
    assert checks["merged_vs_trained_run"]["max_abs_diff"] < 1e-4
    again = CliRunner().invoke(app, ["export", "--run", str(run.folder), "--output", str(merged)])
    assert again.exit_code == 2 and "already exists" in again.output


@pytest.mark.parametrize("serves", ["blend", "baseline"])
def test_the_export_serves_a_delivered_tfidf_baseline_and_calibration(
    serves, tiny_model_dir, tmp_path
):
    """A run that serves its model blended with the TF-IDF baseline, or that baseline alone,
    calibrated: predict.py serves the same probabilities as the run, and with the baseline
    alone it loads no model."""
    import shutil

    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    from finetune.evaluation.baselines import TextPredictor
    from finetune.evaluation.calibration import fit_calibrator
    from finetune.evaluation.selection import Served, save_served

    run, train = two_class_run(tiny_model_dir, tmp_path)
    texts, y = train.text.tolist(), np.array([run.labels.index(v) for v in train.label])
    vectorizer = TfidfVectorizer().fit(texts)
    baseline = LogisticRegression(C=0.3).fit(vectorizer.transform(texts), y)
    predictor = TextPredictor(vectorizer, baseline, len(run.labels))
    calibrator = fit_calibrator("platt", run.model_proba(texts)[:, 1] * 0.5 + 0.2, y)
    shutil.rmtree(run.folder / "delivered")  # what the run serves, replaced
    name = "fine-tuned (LoRA) + tfidf_logreg" if serves == "blend" else "tfidf_logreg"
    save_served(run.folder, Served(name, predictor, calibrator, blend=serves == "blend"), {})
    served = recipe.load(run.folder).predict_proba(TEXTS)
    assert np.abs(served - run.model_proba(TEXTS)).max() > 1e-2  # the two are told apart
    merged = tmp_path / "merged"
    result = CliRunner().invoke(app, ["export", "--run", str(run.folder), "--output", str(merged)])
    assert result.exit_code == 0, result.output
    assert f"predict.py serves {name}, as the run does" in result.output
    assert "Note:" not in result.output
    checks = json.loads((merged / "export.json").read_text())
    assert checks["serves"] == name and checks["served_vs_run"]["max_abs_diff"] < 1e-5
    assert checks["scikit_learn"] in (merged / "README.md").read_text()
    assert f"The run serves `{name}`" in (merged / "README.md").read_text()
    if serves == "baseline":  # the baseline alone needs no model
        (merged / "model.safetensors").unlink()
    np.testing.assert_allclose(load_exported(merged)[1](TEXTS), served, atol=1e-5)


def _serve_the_probe(run, texts: list[str], y: np.ndarray, calibrated: bool, blend: bool):
    """Replace what `run` serves with a frozen probe fitted on `texts` (labels `y`)."""
    import shutil

    from finetune.evaluation.baselines import VectorPredictor, fit_probe
    from finetune.evaluation.calibration import fit_calibrator
    from finetune.evaluation.selection import Served, save_served

    probe = fit_probe(run._frozen_vectors(texts, None), y, len(run.labels), seed=0)
    calibrator = None
    if calibrated:
        positive = probe.predict_proba(run._frozen_vectors(texts, None))[:, 1]
        calibrator = fit_calibrator("platt", positive * 0.5 + 0.2, y)
    name = "fine-tuned (LoRA) + embedding_logreg" if blend else "embedding_logreg"
    shutil.rmtree(run.folder / "delivered")
    save_served(run.folder, Served(name, VectorPredictor(probe), calibrator, blend=blend), {})
    metrics = json.loads((run.folder / "metrics.json").read_text())
    metrics["delivered"]["name"] = name
    (run.folder / "metrics.json").write_text(json.dumps(metrics))
    return name


@pytest.mark.parametrize("calibrated", [False, True])
def test_an_export_of_a_run_serving_the_frozen_probe_serves_the_probe(
    calibrated, tiny_model_dir, tmp_path
):
    """The frozen probe reads the backbone's vectors before fine-tuning: the export holds
    the backbone without the adapter and the probe as its head, and predicts as the run."""

    run, train = two_class_run(tiny_model_dir, tmp_path)
    y = np.array([run.labels.index(v) for v in train.label])
    _serve_the_probe(run, train.text.tolist(), y, calibrated, blend=False)
    served = recipe.load(run.folder).predict_proba(TEXTS)
    assert np.abs(served - run.model_proba(TEXTS)).max() > 1e-2  # the two are told apart
    merged = tmp_path / "merged"
    result = CliRunner().invoke(app, ["export", "--run", str(run.folder), "--output", str(merged)])
    assert result.exit_code == 0, result.output
    assert "predict.py serves embedding_logreg, as the run does" in result.output
    assert "Note:" not in result.output
    checks = json.loads((merged / "export.json").read_text())
    assert checks["serves"] == "embedding_logreg" and checks["served_vs_run"]["max_abs_diff"] < 1e-4
    assert (merged / "delivered.joblib").exists() == calibrated
    assert "without the run's LoRA adapter" in (merged / "README.md").read_text()
    np.testing.assert_allclose(load_exported(merged)[1](TEXTS), served, atol=1e-4)


def test_an_export_of_a_run_serving_a_blend_with_the_frozen_probe_says_it_holds_the_model(
    tiny_model_dir, small_csvs, tmp_path
):
    """A blend of the fine-tuned model and the frozen probe needs two backbones, which one
    exported model cannot hold: the export holds the fine-tuned model and says so."""
    import pandas as pd

    run = tiny_run(tiny_model_dir, small_csvs, tmp_path / "run")
    train = pd.read_csv(small_csvs[0])
    y = np.array([run.labels.index(v) for v in train.label])
    name = _serve_the_probe(run, train.text.tolist(), y, calibrated=False, blend=True)
    merged = tmp_path / "merged"
    result = CliRunner().invoke(app, ["export", "--run", str(run.folder), "--output", str(merged)])
    assert result.exit_code == 0, result.output
    assert f"Note: the run serves {name}" in result.output
    assert not (merged / "delivered.joblib").exists()
    np.testing.assert_allclose(load_exported(merged)[1](TEXTS), run.model_proba(TEXTS), atol=1e-4)


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
