"""train.max_batch_tokens: a long batch is trained in pieces whose gradients add up to its own."""

from __future__ import annotations

import json
import math

import pytest
import torch
from run_checks import check_reported_figures

from finetune.training.loop import _backward_in_pieces, split_by_tokens
from recipes.customer_service import recipe


def test_split_by_tokens_keeps_every_row_once_within_the_budget():
    lengths = [5, 40, 12, 12, 3, 90, 7]
    pieces = split_by_tokens(lengths, 60)
    assert sorted(i for piece in pieces for i in piece) == list(range(len(lengths)))
    assert pieces[0] == [5]  # longer than the budget on its own: a piece by itself
    for piece in pieces[1:]:
        assert len(piece) * max(lengths[i] for i in piece) <= 60
    assert split_by_tokens(lengths, 7 * 90) is None  # fits whole
    assert split_by_tokens(lengths, None) is None and split_by_tokens(None, 10) is None


@pytest.mark.parametrize("weighted", [False, True])
def test_pieces_give_the_whole_batch_gradient(tiny_model_dir, weighted):
    from accelerate import Accelerator

    from finetune.modeling.classifiers import build_for_training

    config = recipe.config(model={"name": str(tiny_model_dir), "lora_r": 4, "head_init": "random"})
    model, inputs, _ = build_for_training("text", config, 3, False, "cpu")
    model.eval()  # no dropout: both ways must see the same network
    texts = ["hi", "where is my parcel it has been two weeks now and nothing", "refund"] * 3
    items = inputs.encode(texts)
    labels = torch.tensor([0, 1, 2, 1, 0, 2, 2, 1, 0])
    weight = torch.tensor([1.0, 3.0, 0.5]) if weighted else None

    def grads() -> list[torch.Tensor]:
        out = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        model.zero_grad(set_to_none=True)
        return out

    whole_loss = torch.nn.CrossEntropyLoss(weight=weight)(
        model(**inputs.collate(items, train=True)), labels
    )
    whole_loss.backward()
    whole = grads()
    pieces = split_by_tokens(inputs.lengths(items), 30)
    assert pieces is not None and len(pieces) >= 3
    summed = torch.nn.CrossEntropyLoss(weight=weight, reduction="sum")

    def piece_loss(piece):
        return summed(model(**inputs.collate([items[i] for i in piece], True)), labels[piece])

    normaliser = weight[labels].sum() if weighted else len(items)
    loss = _backward_in_pieces(model, pieces, piece_loss, normaliser, Accelerator(cpu=True))
    torch.testing.assert_close(loss, whole_loss.detach(), rtol=1e-5, atol=1e-6)
    for a, b in zip(whole, grads(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_a_run_with_a_token_budget_trains_and_reports(tiny_model_dir, small_csvs, tmp_path):
    config = recipe.config(
        data={"path": str(small_csvs[0]), "eval_path": str(small_csvs[1])},
        model={"name": str(tiny_model_dir), "lora_r": 4, "lora_alpha": 8},
        train={"epochs": 1, "batch_size": 16, "max_batch_tokens": 40},
        output=str(tmp_path / "run"),
    )
    run = recipe.train(config, show_progress=False)
    check_reported_figures(run.folder)
    # Pieces accumulate into one optimizer step: one epoch is still one step per batch of 16.
    last = json.loads((run.folder / "history.json").read_text())["epochs"][-1]
    assert last["step"] == math.ceil(run.metrics["n_train"] / 16) and last["epoch"] == 1
    assert "max_batch_tokens: 40" in (run.folder / "config.yaml").read_text()


def test_reply_pairs_in_pieces_give_the_whole_batch_gradient(tiny_llama_dir, tmp_path):
    """The loop splits a batch of reply pairs over the budget; the pieces' gradients add up to
    the whole batch's mean over response tokens (rows with long and short replies weigh by
    their tokens, not as rows)."""
    import generation_recipe

    from finetune.modeling.generation import ChatInputs, GenerationTask, build_generator
    from finetune.training.loop import Rows, TrainingLoop

    chat = generation_recipe.chat_model(tiny_llama_dir, tmp_path / "chat")
    config = generation_recipe.config(chat, tmp_path / "run")
    model, tokenizer, _ = build_generator(config.model, 64, False, "cpu", 0)
    model.eval()  # no LoRA dropout: both ways must see the same network
    inputs = ChatInputs(tokenizer, 64)
    prompts = ["refund me now please", "hi", "where is my parcel it has been two weeks", "card"]
    replies = ["ok", "hello there how can I help you today", "sorry", "we will block it now"]
    items = inputs.encode_pairs(prompts, replies)
    task = GenerationTask(inputs, 4, "cpu", False)

    def grads() -> list[torch.Tensor]:
        out = [p.grad.clone() for p in model.parameters() if p.requires_grad]
        model.zero_grad(set_to_none=True)
        return out

    whole_loss = task.loss(model, items, torch.zeros(4))
    whole_loss.backward()
    whole = grads()
    config.train.max_batch_tokens = 2 * max(inputs.lengths(items))
    rows = Rows(items, [0] * 4)
    loop = TrainingLoop(model, rows, rows, config.train, inputs, "cpu", False, task=task)
    pieces = split_by_tokens(inputs.lengths(items), config.train.max_batch_tokens)
    assert pieces is not None and len(pieces) == 2
    loss = loop._backward_pieces(items, torch.zeros(4), pieces)
    torch.testing.assert_close(loss, whole_loss.detach(), rtol=1e-5, atol=1e-6)
    for a, b in zip(whole, grads(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_a_reply_run_with_a_token_budget_trains_in_pieces(tiny_llama_dir, tmp_path, monkeypatch):
    import generation_recipe

    import finetune.training.loop as loop
    from finetune.generation import train_generation

    split = []
    real = loop._backward_in_pieces

    def spy(model, pieces, *rest):
        split.append(pieces)
        return real(model, pieces, *rest)

    monkeypatch.setattr(loop, "_backward_in_pieces", spy)
    chat = generation_recipe.chat_model(tiny_llama_dir, tmp_path / "chat")
    config = generation_recipe.config(chat, tmp_path / "run", steps=2)
    config.train.max_batch_tokens = 16
    data = generation_recipe.pairs()
    run = train_generation(config, data, data, data, max_new_tokens=4)
    assert len(split) == 2 and all(len(pieces) > 1 for pieces in split)
    assert run.metrics["train"]["steps"] == 2
