"""End-to-end runs of the engine on a tiny random BERT: run folder, reload, determinism, quant."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from run_checks import check_reported_figures

from finetune.errors import UserError
from recipes.customer_service import recipe

FAST = {"epochs": 2, "batch_size": 8, "eval_batch_size": 16}


def tiny_config(model_dir: Path, data: tuple[Path, Path], output: Path, **model):
    return recipe.config(
        data={"path": str(data[0]), "eval_path": str(data[1])},
        model={"name": str(model_dir), "lora_r": 4, "lora_alpha": 8, **model},
        train=FAST,
        output=str(output),
    )


@pytest.fixture(scope="module")
def tiny_run(tiny_model_dir, small_csvs, tmp_path_factory):
    output = tmp_path_factory.mktemp("runs") / "run"
    return recipe.train(tiny_config(tiny_model_dir, small_csvs, output), show_progress=False)


def test_run_folder_is_complete(tiny_run):
    folder = tiny_run.folder
    for name in (
        "metrics.json",
        "report.md",
        "config.yaml",
        "labels.json",
        "environment.json",
        "history.json",
        "predictions.csv",
        "plots/confusion_matrix.png",
        "plots/training.png",
        "adapter/adapter_model.safetensors",
        "adapter/adapter_config.json",
        "adapter/head.safetensors",
        "adapter/classifier.json",
    ):
        assert (folder / name).is_file(), name
    metrics = json.loads((folder / "metrics.json").read_text())
    for key in (
        "accuracy",
        "recall",
        "f1",
        "auc",
        "per_class",
        "n_train",
        "n_eval",
        "train_seconds",
        "baselines",
    ):
        assert key in metrics, key
    assert set(metrics["baselines"]) == {"tfidf_logreg", "embedding_logreg"}
    assert metrics["n_eval"] == 18
    check_reported_figures(folder)
    assert json.loads((folder / "labels.json").read_text())["labels"] == [
        "delivery",
        "login",
        "refund",
    ]
    env = json.loads((folder / "environment.json").read_text())
    assert env["device"] == "cpu" and env["packages"]["torch"] and env["peak_rss_mb"] > 0
    assert "fine-tuned (LoRA)" in (folder / "report.md").read_text()
    assert not list(folder.parent.glob("*.tmp-*"))  # nothing half-written left behind


def test_reload_predicts_exactly_what_training_predicted(tiny_run, small_csvs):
    import pandas as pd

    saved = pd.read_csv(tiny_run.folder / "predictions.csv")
    reloaded = recipe.load(tiny_run.folder)
    proba_trained = tiny_run.predict_proba(saved["text"].tolist())
    proba_reloaded = reloaded.predict_proba(saved["text"].tolist())
    np.testing.assert_allclose(proba_reloaded, proba_trained, atol=1e-6)
    assert reloaded.predict(saved["text"].tolist()) == saved["predicted_label"].tolist()
    # The head was trained and saved: a random head would not reproduce the probabilities.
    assert np.allclose(saved["probability"], proba_reloaded.max(axis=1), atol=1e-5)


def test_same_seed_same_metrics(tiny_model_dir, small_csvs, tmp_path):
    runs = [
        recipe.train(
            tiny_config(tiny_model_dir, small_csvs, tmp_path / f"r{i}"), show_progress=False
        )
        for i in range(2)
    ]
    keys = ("accuracy", "recall", "f1", "auc")
    assert [runs[0].metrics[k] for k in keys] == [runs[1].metrics[k] for k in keys]
    np.testing.assert_array_equal(
        runs[0].predict_proba(["where is my parcel"]), runs[1].predict_proba(["where is my parcel"])
    )


def test_existing_output_is_not_overwritten(tiny_run, tiny_model_dir, small_csvs):
    config = tiny_config(tiny_model_dir, small_csvs, tiny_run.folder)
    with pytest.raises(UserError, match="already exists; pass --overwrite"):
        recipe.train(config, show_progress=False)
    file = tiny_run.folder / "config.yaml"  # a file, even with --overwrite: never replaced
    config = tiny_config(tiny_model_dir, small_csvs, file)
    config = dataclasses.replace(config, overwrite=True)
    with pytest.raises(UserError, match="config.yaml is a file, not a folder"):
        recipe.train(config, show_progress=False)
    assert file.is_file()


def test_held_out_split_when_no_eval_file(tiny_model_dir, small_csvs, tmp_path):
    config = tiny_config(tiny_model_dir, small_csvs, tmp_path / "r")
    config.data.eval_path = None
    config.train.max_steps = 2
    run = recipe.train(config, show_progress=False)
    assert run.metrics["n_eval"] == 12  # 20% of 60, stratified: 4 per class
    assert run.metrics["n_train"] + run.metrics["n_val"] == 48


@pytest.mark.parametrize("quant", ["8bit", "4bit"])
def test_quantized_lora_trains_and_reloads(quant, tiny_model_dir, small_csvs, tmp_path):
    import bitsandbytes as bnb

    config = tiny_config(tiny_model_dir, small_csvs, tmp_path / quant, quant=quant)
    config.train.max_steps = 3
    run = recipe.train(config, show_progress=False)
    layer_type = bnb.nn.Linear4bit if quant == "4bit" else bnb.nn.Linear8bitLt
    assert any(isinstance(m, layer_type) for m in run.model.backbone.modules())
    assert not isinstance(run.model.head, layer_type)  # the head stays out of quantization
    reloaded = recipe.load(run.folder)
    texts = ["refund me now", "my account is locked"]
    np.testing.assert_allclose(reloaded.predict_proba(texts), run.predict_proba(texts), atol=1e-5)


def test_pii_is_redacted_before_training_and_counted(tiny_model_dir, small_csvs, tmp_path):
    import pandas as pd

    train = pd.read_csv(small_csvs[0])
    train.loc[0, "text"] = "refund to jane.doe@example.com or call +44 7700 900123"
    test = pd.read_csv(small_csvs[1])
    test.loc[0, "text"] = "card 4111 1111 1111 1111 was charged twice, please refund"
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    config = tiny_config(
        tiny_model_dir, (tmp_path / "train.csv", tmp_path / "test.csv"), tmp_path / "r"
    )
    config.train.max_steps = 1
    run = recipe.train(config, show_progress=False)
    env = json.loads((run.folder / "environment.json").read_text())
    assert env["pii_redacted"]["train"] == {"email": 1, "phone": 1, "card": 0, "national_id": 0}
    assert env["pii_redacted"]["evaluation"] == {
        "email": 0,
        "phone": 0,
        "card": 1,
        "national_id": 0,
    }
    predictions = (run.folder / "predictions.csv").read_text()
    assert "4111" not in predictions and "[CARD] was charged twice" in predictions
    assert "1 card numbers" in (run.folder / "report.md").read_text()


def test_quantization_on_an_unsupported_device_fails_before_any_work(
    tiny_model_dir, small_csvs, tmp_path, monkeypatch
):
    from finetune.modeling import models

    monkeypatch.setattr(models, "pick_device", lambda: "mps")
    config = tiny_config(tiny_model_dir, small_csvs, tmp_path / "r", quant="4bit")
    with pytest.raises(UserError, match="--quant 4bit needs a CUDA GPU or a CPU"):
        recipe.train(config, show_progress=False)
    assert not (tmp_path / "r").exists()


def test_probe_ignores_dimensions_that_do_not_vary():
    from finetune.evaluation.baselines import fit_probe

    rng = np.random.default_rng(0)
    vectors = rng.normal(0.5, 0.1, (200, 6))
    vectors[:, 2] = 1e-32 * rng.random(200)  # like the near-zero dimensions MiniLM pools to
    labels = (vectors[:, 0] > 0.5).astype(int)
    probe = fit_probe(vectors, labels, 2, seed=0)
    assert np.abs(probe.weight).max() < 100 and (probe.weight[:, 2] == 0).all()
    assert (probe.predict_proba(vectors).argmax(1) == labels).mean() > 0.9
    np.testing.assert_allclose(probe.center, vectors.mean(0))


def test_training_dropout_on_a_probe_head_perturbs_around_the_center():
    import torch

    from finetune.modeling.models import TextClassifier

    class Constant(torch.nn.Module):
        """A backbone whose pooled output is a fixed, far-from-zero vector."""

        def forward(self, input_ids, attention_mask):
            states = torch.full((input_ids.shape[0], input_ids.shape[1], 64), 5.0)
            return type("Out", (), {"last_hidden_state": states})

    model = TextClassifier(Constant(), 64, 2, "mean")
    weight = torch.zeros(2, 64)
    weight[1] = 1.0
    ids, mask = torch.ones(32, 3, dtype=torch.long), torch.ones(32, 3, dtype=torch.long)
    model.set_head(weight, torch.tensor([0.0, -320.0]))  # logit 0 for the constant input
    model.train()
    assert model(ids, mask)[:, 1].std() > 10  # plain dropout: large noise on uncentred input
    model.set_head(weight, torch.tensor([0.0, -320.0]), center=torch.full((64,), 5.0))
    assert model(ids, mask)[:, 1].abs().max() < 1e-3  # centred: the constant part is kept
    model.eval()
    assert model(ids, mask)[:, 1].abs().max() < 1e-3


def test_predict_proba_takes_a_list_of_texts(tiny_run):
    run = recipe.load(tiny_run.folder)
    with pytest.raises(UserError, match=r"^Pass a list of texts; for one text, \[text\]\.$"):
        run.predict_proba("where is my parcel")  # not 18 one-character texts
    with pytest.raises(UserError, match="^Text 1 is NoneType, not a string.$"):
        run.model_proba(["where is my parcel", None])
    assert run.predict_proba(("where is my parcel",)).shape == (1, len(run.labels))
