"""Invariants of the engine that no single feature test pins: the best epoch really is what the
saved model scores, epoch 0 kept means the model is the probe, the length-grouped sampler sees
every row once per epoch, and the recommendation ranking lists are what the protocol says."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import INTENTS, make_rows
from sklearn.metrics import f1_score

from finetune.training.loop import LengthGroupedBatches

# --- (c) length-grouped batches ------------------------------------------------------------


@pytest.mark.parametrize("group", [True, False])
@pytest.mark.parametrize(("n_rows", "batch_size"), [(1, 4), (7, 3), (250, 4), (1003, 8)])
def test_each_index_once_per_epoch_in_the_length_grouped_sampler(n_rows, batch_size, group):
    rng = np.random.default_rng(n_rows)
    lengths = rng.integers(1, 100, n_rows).tolist()
    sampler = LengthGroupedBatches(lengths, batch_size, seed=3, group=group)
    orders = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert all(1 <= len(batch) <= batch_size for batch in batches)
        flat = [index for batch in batches for index in batch]
        assert sorted(flat) == list(range(n_rows)), f"epoch {epoch}: an index missing or repeated"
        orders.append(flat)
    if n_rows > 2 * batch_size:
        assert orders[0] != orders[1], "the order does not change between epochs"
        sampler.set_epoch(1)
        assert [i for batch in sampler for i in batch] == orders[1], "an epoch is not repeatable"


def test_length_grouping_reduces_padding():
    """Grouping is what the sampler is for: padded tokens per batch well below random batches."""
    lengths = np.random.default_rng(0).integers(1, 200, 4000).tolist()

    def padded(group: bool) -> int:
        batches = LengthGroupedBatches(lengths, 16, seed=0, group=group)
        return sum(len(b) * max(lengths[i] for i in b) for b in batches)

    assert padded(True) < 0.7 * padded(False)


# --- (a) and (b): the best epoch is what the saved model scores ------------------------------


def _fixed_rows(n_per_class: int, seed: int) -> tuple[list[str], np.ndarray]:
    rows = make_rows(n_per_class, seed)
    labels = sorted(INTENTS)
    return [r["text"] for r in rows], np.array([labels.index(r["label"]) for r in rows])


def test_restored_model_scores_the_recorded_best_epoch(tiny_model_dir, monkeypatch):
    """After `fit`, the validation figures of the model it leaves are the history's best record,
    not the last epoch's. Training is made to wreck the model after its first epoch (the learning
    rate jumps 1000x), so the best epoch is an early one and the restore has work to do."""
    import torch
    import transformers

    from finetune.evaluation.metrics import validation_figures
    from finetune.modeling.classifiers import build_for_training
    from finetune.modeling.inference import predict_proba
    from finetune.training.loop import fit
    from recipes.customer_service import recipe

    epochs = 4

    def wrecking_schedule(optimizer, warmup_steps, total_steps):
        first_epoch = total_steps // epochs
        return torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: 1.0 if step < first_epoch else 1000.0
        )

    monkeypatch.setattr(transformers, "get_linear_schedule_with_warmup", wrecking_schedule)
    config = recipe.config(
        model={"name": str(tiny_model_dir), "lora_r": 4, "head_init": "random"},
        train={
            "epochs": epochs,
            "batch_size": 8,
            "head_learning_rate": 3e-2,
            "precision": "fp32",
            "checkpoint_steps": 0,
        },
    )
    model, inputs, _ = build_for_training("text", config, len(INTENTS), False, "cpu")
    train_texts, y_train = _fixed_rows(8, seed=1)
    val_texts, y_val = _fixed_rows(6, seed=2)
    train_ids, val_ids = inputs.encode(train_texts), inputs.encode(val_texts)
    result = fit(
        model,
        train_ids,
        y_train,
        val_ids,
        y_val,
        config.train,
        inputs,
        "cpu",
        False,
        False,
        validation_figures=validation_figures,
    )

    records = {record["epoch"]: record for record in result.history}
    assert len(records) == epochs + 1  # epoch 0 and each epoch end
    last = result.history[-1]
    assert result.best_epoch != last["epoch"], "the setup should make a later epoch worse"
    best = records[result.best_epoch]
    assert best["val_loss"] != pytest.approx(last["val_loss"], rel=1e-3)

    proba = predict_proba(model, val_ids, inputs, 64, "cpu", False)
    val_loss = -np.mean(np.log(np.clip(proba[np.arange(len(y_val)), y_val], 1e-12, 1)))
    assert val_loss == pytest.approx(best["val_loss"], rel=1e-5)
    assert (proba.argmax(1) == y_val).mean() == pytest.approx(best["val_accuracy"])
    assert f1_score(y_val, proba.argmax(1), average="macro") == pytest.approx(best["val_f1"])


def test_epoch_0_kept_means_the_model_is_the_probe(tiny_model_dir, small_csvs, tmp_path):
    """With the head started from the linear probe and training that cannot help (a learning
    rate that wrecks the weights), the run keeps epoch 0, and its evaluation probabilities are
    then the embedding_logreg baseline's: the same probe on the same frozen vectors."""
    from recipes.customer_service import recipe

    config = recipe.config(
        data={"path": str(small_csvs[0]), "eval_path": str(small_csvs[1])},
        model={"name": str(tiny_model_dir), "lora_r": 4, "head_init": "probe"},
        train={
            "epochs": 2,
            "batch_size": 8,
            "learning_rate": 5.0,
            "head_learning_rate": 50.0,
            "warmup_ratio": 0.0,
            "precision": "fp32",
        },
        output=str(tmp_path / "run"),
    )
    run = recipe.train(config, show_progress=False)
    history = json.loads((run.folder / "history.json").read_text())["epochs"]
    assert run.metrics["best_epoch"] == 0, history
    # Training did move the weights (a later epoch scores differently), so equality below is
    # the restore's doing, not an untouched model's.
    assert history[-1]["val_loss"] != pytest.approx(history[0]["val_loss"], rel=1e-3)
    scores = np.load(run.folder / "scores.npz")
    np.testing.assert_allclose(scores["fine-tuned (LoRA)"], scores["embedding_logreg"], atol=1e-4)
    # And the saved run reloads to the same probabilities.
    texts = pd.read_csv(small_csvs[1])["text"].tolist()
    reloaded = recipe.load(run.folder)
    np.testing.assert_allclose(reloaded.model_proba(texts), scores["fine-tuned (LoRA)"], atol=1e-4)


# --- (d) the recommendation recipe's ranking protocol --------------------------------------


def test_sampled_candidates_follow_the_protocol():
    """Per ranked test user: the held-out item is the user's latest test-period like; then
    exactly the configured number of negatives, distinct, none of which the user ever
    interacted with (in any period), none equal to the held-out item."""
    from test_recommendation_ranking import synthetic

    from recipes.recommendation_ranking import ranking_data
    from recipes.recommendation_split import TEST

    log, options = synthetic(sampled_negatives=20)
    data = ranking_data(log, options, seed=0)
    protocol, items = data.protocol, data.items["item"].tolist()
    interactions = data.split.interactions
    test = data.split.rows(TEST)
    assert len(data.test.users) > 0 and protocol.negatives.shape == (len(data.test.users), 20)
    for row, user in enumerate(data.test.users):
        likes = test[(test["user"] == user) & (test["label"] == 1)]
        latest = likes.sort_values("timestamp", kind="stable")["item"].iloc[-1]
        assert items[protocol.positive[row]] == latest, user
        negatives = [items[i] for i in protocol.negatives[row]]
        assert len(set(negatives)) == len(negatives), f"{user}: a candidate listed twice"
        ever = set(interactions.loc[interactions["user"] == user, "item"])
        assert not set(negatives) & ever, f"{user}: a negative the user interacted with"
