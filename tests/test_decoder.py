"""Decoder LM backbones (tiny random Llama), 8-bit optimizers, gradient checkpointing, caching."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from finetune.errors import UserError
from finetune.modeling import models
from recipes.customer_service import recipe

FAST = {"epochs": 1, "batch_size": 8, "eval_batch_size": 16, "precision": "fp32"}


def config_for(model_dir: Path, data: tuple[Path, Path], output: Path, model=None, train=None):
    return recipe.config(
        data={"path": str(data[0]), "eval_path": str(data[1])},
        model={"name": str(model_dir), "lora_r": 4, "lora_alpha": 8, **(model or {})},
        train={**FAST, **(train or {})},
        output=str(output),
    )


def test_decoder_gets_pad_token_last_token_pooling_and_its_lora_targets(tiny_llama_dir):
    from transformers import AutoConfig

    tokenizer = models.load_tokenizer(str(tiny_llama_dir))
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>"
    config = AutoConfig.from_pretrained(tiny_llama_dir)
    assert models.default_pooling(str(tiny_llama_dir), config) == "last"
    config.architectures = None  # a config without architectures is still a decoder
    assert models.is_decoder(config)
    assert models.lora_targets(config, None) == [
        "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj",
    ]  # fmt: skip


def test_last_token_pooling_ignores_right_padding(tiny_llama_dir):
    from finetune.config import ModelConfig
    from finetune.modeling.inputs import pad_batch

    options = ModelConfig(name=str(tiny_llama_dir), lora_r=4)
    model, tokenizer, info = models.build_for_training(options, 3, 32, False, "cpu", 0)
    model.eval()
    short, long = tokenizer(["refund me now", "where is my parcel thanks 12 pls"]).input_ids
    ids, mask = pad_batch([short, long], tokenizer.pad_token_id)
    assert ids[0, -1] == tokenizer.pad_token_id == tokenizer.eos_token_id
    with torch.no_grad():
        batched = model.embed(ids, mask)
        alone = model.embed(torch.tensor([short]), torch.ones(1, len(short), dtype=torch.long))
        states = model.backbone(input_ids=torch.tensor([short])).last_hidden_state
    torch.testing.assert_close(batched[0], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(alone[0], states[0, -1])  # the last real token's state
    assert info.pooling == "last"


@pytest.mark.parametrize("quant", ["none", "4bit"])
def test_tiny_llama_classifier_trains_and_reloads(quant, tiny_llama_dir, small_csvs, tmp_path):
    config = config_for(tiny_llama_dir, small_csvs, tmp_path / quant, model={"quant": quant})
    config.train.max_steps = 3
    run = recipe.train(config, show_progress=False)
    saved = json.loads((run.folder / "adapter" / "classifier.json").read_text())
    assert saved["pooling"] == "last" and "gate_proj" in saved["lora_targets"]
    texts = ["refund me now", "my account is locked", "where is my parcel"]
    reloaded = recipe.load(run.folder)
    np.testing.assert_allclose(reloaded.predict_proba(texts), run.predict_proba(texts), atol=1e-5)


def test_8bit_optimizer_and_gradient_checkpointing_train(
    tiny_llama_dir, small_csvs, tmp_path, monkeypatch
):
    import bitsandbytes as bnb

    from finetune.training import loop as train_module

    made = []
    original = train_module.make_optimizer
    monkeypatch.setattr(
        train_module, "make_optimizer", lambda *a: made.append(original(*a)) or made[-1]
    )
    config = config_for(
        tiny_llama_dir,
        small_csvs,
        tmp_path / "r",
        model={"quant": "8bit"},
        train={"optim": "adamw_8bit", "gradient_checkpointing": True, "max_steps": 3},
    )
    run = recipe.train(config, show_progress=False)
    assert isinstance(made[0], bnb.optim.AdamW8bit)
    assert run.model.backbone.base_model.model.is_activation_checkpointing
    lora = [p for n, p in run.model.named_parameters() if "lora_B" in n]
    assert lora and any(p.abs().sum() > 0 for p in lora)  # LoRA B starts at 0: it trained
    assert "adamw_8bit, gradient checkpointing on" in (run.folder / "report.md").read_text()


def test_gradient_checkpointing_auto_only_for_quantized_cuda_runs():
    assert models.use_gradient_checkpointing(None, "4bit", "cuda")
    assert not models.use_gradient_checkpointing(None, "none", "cuda")
    assert not models.use_gradient_checkpointing(None, "4bit", "cpu")
    assert models.use_gradient_checkpointing(True, "none", "cpu")


def test_bad_or_unavailable_optimizer_fails_before_any_work(tiny_model_dir, small_csvs, tmp_path):
    with pytest.raises(UserError, match="train.optim must be one of adamw, adamw_8bit"):
        config_for(tiny_model_dir, small_csvs, tmp_path / "r", train={"optim": "sgd"})
    config = config_for(
        tiny_model_dir, small_csvs, tmp_path / "r", train={"optim": "paged_adamw_8bit"}
    )
    with pytest.raises(UserError, match="needs CUDA .* Use --optim adamw_8bit or adamw"):
        recipe.train(config, show_progress=False)
    assert not (tmp_path / "r").exists()


def test_gguf_model_is_converted_once_atomically_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "cache"))
    calls = []

    def fake_convert(folder: Path, gguf_file: str, output: Path) -> None:
        calls.append(output)
        output.mkdir()
        (output / "config.json").write_text("{}")

    monkeypatch.setattr(models, "convert_gguf", fake_convert)
    first = models.resolve_model_path("smollm2-135m")
    second = models.resolve_model_path("smollm2-135m")
    assert first == second == str(tmp_path / "cache" / "smollm2-135m")
    assert len(calls) == 1 and calls[0].name.startswith("smollm2-135m.tmp-")
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["smollm2-135m"]

    def failing_convert(folder: Path, gguf_file: str, output: Path) -> None:
        output.mkdir()
        raise RuntimeError("disk full")

    monkeypatch.setattr(models, "convert_gguf", failing_convert)
    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path / "other"))
    with pytest.raises(RuntimeError):
        models.resolve_model_path("smollm2-135m")
    assert not list((tmp_path / "other").iterdir())  # nothing half-written that looks finished


def test_bitsandbytes_build_without_kernels_for_the_device_fails_with_what_works(monkeypatch):
    import bitsandbytes.functional

    def no_kernel(*args, **kwargs):
        raise RuntimeError("no kernel registered for this backend")

    monkeypatch.setattr(bitsandbytes.functional, "quantize_4bit", no_kernel)
    with pytest.raises(UserError, match="cannot quantize on cpu .* Use --quant none"):
        models.check_quantization("4bit", "cpu")
    models.check_quantization("8bit", "cpu")  # its own kernel still works
