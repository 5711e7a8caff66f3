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
    accelerator = Accelerator(cpu=True)
    loss = _backward_in_pieces(
        model, items, labels, pieces, inputs, summed, weight, accelerator, "cpu", False
    )
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
