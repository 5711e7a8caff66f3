"""model.lora_layers: LoRA on the top layers only, the frozen lower layers' output cached."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from run_checks import check_reported_figures

from finetune.modeling import layercache, layersplit
from finetune.modeling.classifiers import build_for_training
from recipes.customer_service import recipe

TEXTS = ["hi", "where is my parcel it has been two weeks now", "refund", "I cannot log in"]


def built(model_dir, pooling="auto"):
    config = recipe.config(
        model={
            "name": str(model_dir),
            "lora_r": 4,
            "lora_layers": 1,
            "head_init": "random",
            "pooling": pooling,
        }
    )
    model, inputs, _ = build_for_training("text", config, 3, False, "cpu")
    return model, inputs


def cached_run(model_dir, csvs, folder, **train):
    """The config of a run with LoRA on the top of 2 layers, the lower one cached (fp32: on a
    CPU with bf16, autocast would round the cached and the whole-model passes apart)."""
    train_csv, test_csv = csvs
    return recipe.config(
        data={"path": str(train_csv), "eval_path": str(test_csv)},
        model={"name": str(model_dir), "lora_r": 4, "lora_layers": 1},
        train={"batch_size": 8, "precision": "fp32", **train},
        output=str(folder),
    )


def lora_layer_numbers(model) -> set[int]:
    names = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" in n]
    assert names
    return {int(part) for n in names for part in n.split(".") if part.isdigit()}


@pytest.mark.parametrize("backbone", ["tiny_model_dir", "tiny_llama_dir", "tiny_gemma3_dir"])
def test_cached_states_give_the_whole_models_logits_and_gradients(backbone, request):
    model, inputs = built(request.getfixturevalue(backbone))
    assert model.first_trained_layer == 1
    assert lora_layer_numbers(model) == {1}  # the top of two layers only
    items = inputs.encode(TEXTS)
    cached, (rows,) = layercache.cache_inputs(model, inputs, [items], 8, "cpu", False)
    assert rows == [0, 1, 2, 3] and cached.lengths(rows) == inputs.lengths(items)
    model.eval()  # no dropout: both ways must compute the same network
    labels = torch.tensor([0, 1, 2, 1])

    def logits_and_grads(batch):
        logits = model(**batch)
        torch.nn.functional.cross_entropy(logits, labels).backward()
        grads = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        model.zero_grad(set_to_none=True)
        return logits.detach(), grads

    whole, whole_grads = logits_and_grads(inputs.collate(items))
    split, split_grads = logits_and_grads(cached.collate(rows))
    torch.testing.assert_close(split, whole, rtol=1e-4, atol=1e-5)
    for a, b in zip(whole_grads, split_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-6)
    # The model is whole again after each split call.
    assert len(layersplit.layer_list(model.backbone.get_base_model())[3]) == 2


def test_no_cache_when_every_layer_trains(tiny_model_dir):
    config = recipe.config(model={"name": str(tiny_model_dir), "lora_r": 4, "head_init": "random"})
    model, inputs, _ = build_for_training("text", config, 3, False, "cpu")
    assert model.first_trained_layer == 0
    assert layercache.cache_inputs(model, inputs, [inputs.encode(TEXTS)], 8, "cpu", False) is None


def test_an_architecture_that_cannot_split_trains_without_the_cache(
    tiny_model_dir, monkeypatch, capsys
):
    model, inputs = built(tiny_model_dir)

    def broken(*args, **kwargs):
        raise TypeError("this model cannot start from a middle layer")

    monkeypatch.setattr(layersplit, "upper_states", broken)
    built_rows, build = [], layercache.build_cache

    def counted(model, items, *args, **kwargs):
        built_rows.append(len(items))
        return build(model, items, *args, **kwargs)

    monkeypatch.setattr(layercache, "build_cache", counted)
    items = inputs.encode(TEXTS * 5)
    assert layercache.cache_inputs(model, inputs, [items], 8, "cpu", False) is None
    assert "training runs through every layer instead" in capsys.readouterr().out
    assert built_rows == [8]  # found on a few rows, before the pass over all 20
    # The run's later passes (training, inner folds) neither build nor check it again.
    monkeypatch.setattr(layercache, "build_cache", broken)
    assert layercache.cache_inputs(model, inputs, [inputs.encode(TEXTS)], 8, "cpu", False) is None
    assert capsys.readouterr().out == ""


def test_lora_layers_must_be_positive():
    from finetune.errors import UserError

    with pytest.raises(UserError, match="model.lora_layers must be positive"):
        recipe.config(model={"lora_layers": 0}).validate()


def test_a_cached_run_trains_saves_and_reloads(tiny_model_dir, small_csvs, tmp_path):
    config = cached_run(tiny_model_dir, small_csvs, tmp_path / "run", epochs=2)
    run = recipe.train(config, show_progress=False)
    check_reported_figures(run.folder)
    # Two epochs over every training row, in the time that includes the caching pass.
    # train_seconds is saved to 0.01 s, which on a sub-second tiny run moves the ratio by a few
    # percent: the rate must fall within what the rounded time allows.
    seen, rounded = 2 * run.metrics["n_train"], run.metrics["train_seconds"]
    rate = run.metrics["samples_per_second"]
    assert seen / (rounded + 0.005) / 1.01 <= rate <= seen / max(rounded - 0.005, 1e-3) * 1.01
    # Tokens/s over the same time: tokens per row stepped over, within the rows' lengths.
    from transformers import AutoTokenizer

    texts = pd.read_csv(small_csvs[0])["text"].tolist()
    lengths = [len(ids) for ids in AutoTokenizer.from_pretrained(tiny_model_dir)(texts).input_ids]
    per_row = run.metrics["tokens_per_second"] / rate
    assert min(lengths) <= per_row <= max(lengths) and max(lengths) > 1
    assert re.search(r"samples/s, \d+ tokens/s\)", (run.folder / "report.md").read_text())
    adapter = json.loads((run.folder / "adapter" / "adapter_config.json").read_text())
    assert adapter["target_modules"] and all(".1." in m for m in adapter["target_modules"])
    # The saved model (whole, no cache) predicts what the run scored on the evaluation file.
    loaded = recipe.load(run.folder)
    written = pd.read_csv(run.folder / "predictions.csv")
    proba = loaded.predict_proba(written["text"].tolist())
    assert (np.asarray(loaded.labels)[proba.argmax(1)] == written["predicted_label"]).all()
    np.testing.assert_allclose(proba.max(1), written["probability"], atol=1e-5)


@pytest.mark.parametrize("folds", [0, 3])
def test_the_lower_layers_run_once_per_row(
    folds, tiny_model_dir, small_csvs, tmp_path, monkeypatch
):
    """The frozen lower layers' states of every row are computed once and serve the baselines'
    frozen vectors, training (each inner fold too) and the evaluation: no other pass runs the
    whole model, except the few rows that check the split."""
    from finetune.modeling.models import TextClassifier

    lower_rows, whole_rows = [], []
    lower, embed = layercache.lower_states, TextClassifier.embed

    def counted_lower(backbone, first, input_ids, attention_mask):
        lower_rows.append(len(input_ids))
        return lower(backbone, first, input_ids=input_ids, attention_mask=attention_mask)

    def counted_embed(self, input_ids=None, attention_mask=None, states=None, features=None):
        if input_ids is not None:
            whole_rows.append(len(input_ids))
        return embed(self, input_ids, attention_mask, states, features)

    monkeypatch.setattr(layercache, "lower_states", counted_lower)
    monkeypatch.setattr(TextClassifier, "embed", counted_embed)
    config = cached_run(
        tiny_model_dir, small_csvs, tmp_path / "run", epochs=2, select_folds=str(folds)
    )
    run = recipe.train(config, show_progress=False)
    check_reported_figures(run.folder)
    assert ("selection" in run.metrics) == bool(folds)
    rows = run.metrics["n_train"] + run.metrics["n_val"] + run.metrics["n_eval"]
    assert sum(lower_rows) == rows + 8  # and the 8 rows that check the split first
    assert sum(whole_rows) == 8


@pytest.mark.parametrize("show_progress", [True, False])
def test_the_long_passes_show_progress_when_the_run_does(
    show_progress, tiny_model_dir, small_csvs, tmp_path, capsys
):
    """The frozen passes (baselines' vectors, the lower layers' cache, the evaluation rows)
    can outlast training on a large encoder: each gets its own bar, counting every row."""
    config = cached_run(tiny_model_dir, small_csvs, tmp_path / "run", epochs=1)
    run = recipe.train(config, show_progress=show_progress)
    err = capsys.readouterr().err
    n_fit, n_val, n_eval = (run.metrics[k] for k in ("n_train", "n_val", "n_eval"))
    bars = {
        "frozen backbone, training rows": n_fit,
        "frozen backbone, evaluation rows": n_eval,
        "frozen backbone, validation rows": n_val,
        "caching the frozen lower layers": n_fit + n_val + n_eval,
        "fine-tuned model, evaluation rows": n_eval,
        "fine-tuned model, validation rows": n_val,
    }
    for label, rows in bars.items():
        if show_progress:
            assert re.search(rf"{label}: 100%.*\b{rows}/{rows} ", err), label
        else:
            assert label not in err


def test_batches_pad_to_a_multiple_of_eight_tokens():
    from finetune.modeling.inputs import PAD_MULTIPLE, pad_batch

    ids, mask = pad_batch([[101, 7, 102], [101, 5, 6, 7, 8, 9, 10, 11, 102]], 0)
    assert PAD_MULTIPLE == 8 and ids.shape == mask.shape == (2, 16)
    assert mask.sum(1).tolist() == [3, 9] and (ids[mask == 0] == 0).all()


def test_batches_pad_as_the_tokenizer_would(tiny_model_dir, tiny_llama_dir):
    """Encoder and decoder (pad token = EOS) tokenizers give the same tensors as pad_batch."""
    from finetune.modeling.inputs import PAD_MULTIPLE, pad_batch
    from finetune.modeling.models import load_tokenizer

    rng = np.random.default_rng(0)
    for folder in (tiny_model_dir, tiny_llama_dir):
        tokenizer = load_tokenizer(str(folder))
        for _ in range(20):
            sizes = rng.integers(1, 30, int(rng.integers(1, 9)))
            sequences = [rng.integers(3, 40, size).tolist() for size in sizes]
            ids, mask = pad_batch(sequences, tokenizer.pad_token_id)
            padded = tokenizer.pad(
                {"input_ids": sequences},
                padding_side="right",
                pad_to_multiple_of=PAD_MULTIPLE,
                return_tensors="pt",
            )
            assert set(padded) == {"input_ids", "attention_mask"}
            assert torch.equal(ids, padded["input_ids"]) and ids.dtype == padded["input_ids"].dtype
            assert torch.equal(mask, padded["attention_mask"])


def test_inference_batches_hold_a_token_budget_and_every_row_once(monkeypatch):
    from finetune.modeling import inference
    from finetune.modeling.inputs import padded_width

    monkeypatch.setattr(inference, "MAX_BATCH_TOKENS", 256)
    lengths = [3, 120, 50, 7, 7, 7, 64, 1] * 10
    batches = list(inference.length_sorted_batches(list(range(80)), lengths, 32))
    rows = np.concatenate([chunk for chunk, _ in batches])
    assert sorted(rows.tolist()) == list(range(80))
    for chunk, _ in batches:
        longest = padded_width([lengths[i] for i in chunk])
        assert len(chunk) == 1 or len(chunk) * longest <= 256
        assert len(chunk) <= 32
    assert max(len(chunk) for chunk, _ in batches) == 32  # short rows still fill a batch


def test_release_free_heap_runs_here():
    from finetune.modeling.heap import release_free_heap

    release_free_heap()  # glibc: returns freed pages; elsewhere a no-op; never raises


def test_image_recipes_refuse_lora_layers():
    from finetune.errors import UserError
    from finetune.modeling.vision import check
    from recipes.image_classification import recipe as images

    with pytest.raises(UserError, match="model.lora_layers .* is for text backbones"):
        check(images.config(model={"lora_layers": 2}))


def test_a_memory_error_while_checking_the_split_is_not_taken_for_an_unsplittable_model(
    tiny_model_dir, monkeypatch
):
    model, inputs = built(tiny_model_dir)

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(layersplit, "upper_states", out_of_memory)
    with pytest.raises(MemoryError):
        layercache.cache_inputs(model, inputs, [inputs.encode(TEXTS)], 8, "cpu", False)
