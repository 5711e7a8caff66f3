"""model.prompt: the text a sentence-transformers model's embeddings were trained to follow
(EmbeddingGemma's "task: classification | query: ") goes before every text, in training,
reload and export alike."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from recipes.customer_service import recipe

PROMPT = "task: classification | query: "
TEXTS = ["refund me now", "my account is locked", "where is my parcel asap"]


@pytest.fixture(scope="module")
def prompted_model_dir(tiny_model_dir, tmp_path_factory) -> Path:
    """The tiny BERT with a sentence-transformers config naming a Classification prompt."""
    folder = tmp_path_factory.mktemp("prompted") / "model"
    shutil.copytree(tiny_model_dir, folder)
    settings = {"prompts": {"query": "task: search result | query: ", "Classification": PROMPT}}
    (folder / "config_sentence_transformers.json").write_text(json.dumps(settings))
    return folder


def train(model_dir: Path, data: tuple[Path, Path], output: Path, **model: str):
    config = recipe.config(
        data={"path": str(data[0]), "eval_path": str(data[1])},
        model={"name": str(model_dir), "lora_r": 4, "lora_alpha": 8, **model},
        train={"max_steps": 4, "batch_size": 8, "precision": "fp32", "learning_rate": 1e-2},
        output=str(output),
    )
    return recipe.train(config, show_progress=False)


def test_the_models_own_classification_prompt_is_the_default(prompted_model_dir, tiny_model_dir):
    from finetune.modeling.models import default_prompt

    assert default_prompt(str(prompted_model_dir)) == PROMPT
    assert default_prompt(str(tiny_model_dir)) == ""


def test_a_prompted_run_trains_reloads_and_exports_with_its_prompt(
    prompted_model_dir, small_csvs, tmp_path
):
    from finetune.modeling.export import export_merged

    run = train(prompted_model_dir, small_csvs, tmp_path / "run")
    info = json.loads((run.folder / "adapter" / "classifier.json").read_text())
    assert info["prompt"] == PROMPT
    report = (run.folder / "report.md").read_text()
    assert repr(PROMPT) in report
    assert re.search(r"Frozen-vector probe: C=[0-9.e-]+, chosen by 3 folds", report)
    prompt_ids = run.inputs.tokenizer(PROMPT + "x")["input_ids"][:-2]  # [CLS] + prompt
    assert all(ids[: len(prompt_ids)] == prompt_ids for ids in run.inputs.encode(TEXTS))

    reloaded = recipe.load(run.folder)
    np.testing.assert_allclose(reloaded.predict_proba(TEXTS), run.predict_proba(TEXTS), atol=1e-6)

    export_merged(run.folder, tmp_path / "merged")
    spec = importlib.util.spec_from_file_location(
        "predict_prompted", tmp_path / "merged" / "predict.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _, exported = module.load(tmp_path / "merged")
    np.testing.assert_allclose(exported(TEXTS), run.model_proba(TEXTS), atol=1e-4)


def test_an_empty_prompt_turns_it_off(prompted_model_dir, small_csvs, tmp_path):
    run = train(prompted_model_dir, small_csvs, tmp_path / "run", prompt="")
    info = json.loads((run.folder / "adapter" / "classifier.json").read_text())
    assert info["prompt"] == ""
    assert run.inputs.encode(TEXTS) == run.inputs.tokenizer(TEXTS)["input_ids"]
