"""The ranking task's cross-encoder (finetune/reranking.py, modeling/cross_encoder.py) on a tiny
random BERT: it learns a task a pair model can learn, both losses run, offsets move the
order, a saved model scores the same after loading, and a seed fixes the scores."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from finetune.config import Config, DataConfig, ModelConfig, TrainConfig
from finetune.errors import UserError
from finetune.reranking import (
    Group,
    fit_cross_encoder,
    group_measure,
    load_cross_encoder,
    rerank,
    save_cross_encoder,
)

WORDS = "apple river stone cloud tiger piano lemon candle forest rocket violet harbor".split()


def make_groups(n: int, seed: int, n_candidates: int = 5) -> list[Group]:
    """The positive candidate names the query's word, drawn from the first half of WORDS;
    the negatives name words of the second half. A tiny random encoder learns this within a
    few epochs (from the candidate's word, and the word it shares with the query)."""
    rng = random.Random(seed)
    half = len(WORDS) // 2
    groups = []
    for _ in range(n):
        word = rng.choice(WORDS[:half])
        candidates = [f"about {w}" for w in rng.sample(WORDS[half:], n_candidates - 1)]
        positive = rng.randrange(n_candidates)
        candidates.insert(positive, f"about {word}")
        groups.append(Group(f"tell me {word}", candidates, positive))
    return groups


def config(tiny_model_dir, **train) -> Config:
    options = dict(epochs=4, batch_size=8, learning_rate=5e-3, head_learning_rate=5e-2, seed=0)
    options.update(train)
    return Config(
        data=DataConfig(max_length=16),
        model=ModelConfig(name=str(tiny_model_dir), lora_r=8, lora_dropout=0.0),
        train=TrainConfig(checkpoint_steps=0, precision="fp32", **options),
    )


@pytest.fixture(scope="module")
def trained(tiny_model_dir):
    return fit_cross_encoder(
        make_groups(96, 0), make_groups(24, 1), config(tiny_model_dir), loss="listwise"
    )


def test_training_raises_validation_ndcg_over_the_untrained_scorer(trained):
    history = trained.result.history
    assert history[0]["epoch"] == 0  # the untrained scorer is a candidate
    best = max(r["val_ndcg@10"] for r in history)
    assert best > history[0]["val_ndcg@10"] + 0.1
    assert trained.result.best_epoch != 0
    kept = next(r for r in history if r["epoch"] == trained.result.best_epoch)
    assert kept["val_ndcg@10"] == best


def test_saved_model_scores_the_same_and_same_seed_gives_same_scores(
    trained, tiny_model_dir, tmp_path
):
    groups = make_groups(6, 2)
    queries = [g.query for g in groups]
    candidates = [g.candidates for g in groups]
    before = rerank(trained.model, trained.tokenizer, queries, candidates)
    save_cross_encoder(trained.model, trained.tokenizer, tmp_path / "ce")
    model, tokenizer = load_cross_encoder(tmp_path / "ce")
    after = rerank(model, tokenizer, queries, candidates)
    for a, b in zip(before, after, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    again = fit_cross_encoder(make_groups(96, 0), make_groups(24, 1), config(tiny_model_dir))
    assert again.result.history == trained.result.history
    for a, b in zip(before, rerank(again.model, again.tokenizer, queries, candidates), strict=True):
        np.testing.assert_array_equal(a, b)


def test_offsets_shift_the_order(trained):
    query, candidates = "tell me apple", ["about apple", "about river", "about stone"]
    (plain,) = rerank(trained.model, trained.tokenizer, [query], [candidates])
    last = int(np.argmin(plain))
    offsets = np.zeros(3)
    offsets[last] = 1e3  # a collaborative score large enough to put it first
    (shifted,) = rerank(trained.model, trained.tokenizer, [query], [candidates], [offsets])
    assert int(np.argmax(shifted)) == last
    weight = float(trained.model.offset_weight)
    np.testing.assert_allclose(shifted - plain, weight * offsets, rtol=1e-4)


def test_pairwise_loss_trains_and_loss_ignores_padded_candidates(tiny_model_dir):
    from finetune.modeling.cross_encoder import CrossEncoderTask, build_cross_encoder, encode_groups

    cfg = config(tiny_model_dir, epochs=2)
    fitted = fit_cross_encoder(make_groups(24, 0), make_groups(8, 1), cfg, loss="pairwise")
    assert len(fitted.result.history) == 3 and np.isfinite(fitted.result.history[-1]["train_loss"])
    model, tokenizer = build_cross_encoder(cfg.model, 16, False, "cpu", seed=0)
    torch.nn.init.normal_(model.scorer.weight)  # non-zero scores
    short = Group("tell me apple", ["about apple", "about river"], 0)
    long = Group("tell me stone", ["about stone", "about cloud", "about lemon", "about tiger"], 2)
    groups = encode_groups(tokenizer, [short, long], 16)
    for kind in ("listwise", "pairwise"):
        task = CrossEncoderTask(groups, groups, group_measure(), "cpu", False, kind)
        model.eval()  # no dropout: batched and alone must agree
        together = task.loss(model, [0, 1], torch.zeros(2))
        # A padded group's loss is its own: the batch loss is the mean of the groups' (listwise)
        # or of all real (positive, negative) pairs (pairwise), never a padded place.
        alone = [task.loss(model, [i], torch.zeros(1)) for i in (0, 1)]
        weights = [1, 1] if kind == "listwise" else [1, 3]
        expected = sum(w * a for w, a in zip(weights, alone, strict=True)) / sum(weights)
        torch.testing.assert_close(together, expected, atol=1e-5, rtol=1e-5)


def test_group_measure_uses_each_groups_own_candidates():
    measure = group_measure(k=10)
    # The positive first in a group of 2; second in a group of 3 (padded to 3 in the matrix).
    figures = measure([np.array([2.0, 1.0]), np.array([3.0, 2.0, 1.0])], np.array([0, 1]))
    assert figures["val_mrr"] == pytest.approx((1 + 1 / 2) / 2)
    assert figures["val_ndcg@10"] == pytest.approx((1 + 1 / np.log2(3)) / 2)


def test_bad_groups_get_one_clear_line(tiny_model_dir):
    bad = [Group("q", ["a", "b"], 2)]
    with pytest.raises(UserError, match="training group 0: positive 2"):
        fit_cross_encoder(bad, [], config(tiny_model_dir))
    with pytest.raises(UserError, match="validation group 0: 1 candidate"):
        fit_cross_encoder(make_groups(2, 0), [Group("q", ["a"])], config(tiny_model_dir))


def test_qlora_cross_encoder_trains_and_reloads(tiny_model_dir, tmp_path):
    cfg = config(tiny_model_dir, max_steps=2)
    cfg.model.quant = "4bit"
    fitted = fit_cross_encoder(make_groups(16, 0), make_groups(4, 1), cfg)
    groups = make_groups(3, 2)
    queries, candidates = [g.query for g in groups], [g.candidates for g in groups]
    before = rerank(fitted.model, fitted.tokenizer, queries, candidates)
    save_cross_encoder(fitted.model, fitted.tokenizer, tmp_path / "q")
    model, tokenizer = load_cross_encoder(tmp_path / "q")
    assert model.info.quant == "4bit"
    for a, b in zip(before, rerank(model, tokenizer, queries, candidates), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_pairs_truncate_the_query_first_and_fit_max_length(tiny_model_dir):
    from finetune.modeling.cross_encoder import pair_tokens
    from finetune.modeling.models import load_tokenizer

    tokenizer = load_tokenizer(str(tiny_model_dir))
    query = " ".join(WORDS)  # 12 words
    short, long = "about apple", " ".join(WORDS * 4)
    (cut_query, types), (both_cut, _) = pair_tokens(tokenizer, [query, query], [short, long], 16)
    assert len(cut_query) == 16 and len(both_cut) == 16
    # The short candidate is whole (its 2 tokens and [SEP] end the pair); the query lost words.
    assert tokenizer.decode(cut_query[-3:-1]) == short and sum(types) == 3
    # A candidate longer than the pair still leaves the query some of its tokens.
    assert tokenizer.decode(both_cut[1:3]) == "apple river"
