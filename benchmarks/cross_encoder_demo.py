"""Cross-encoder reranking on Bitext customer-service pairs: the right reply among 20.

    python benchmarks/cross_encoder_demo.py                          # the figures in benchmarks.md
    python benchmarks/cross_encoder_demo.py --train 40 --validation 10 --test 20 --epochs 1  # smoke

Each message's group holds its own reply (the positive) and 19 replies of other intents drawn
from the same file. Training and validation groups come from the bundled train.csv (disjoint
rows); the test groups from test.csv, scored once at the end. The cross-encoder is MiniLM with
LoRA, trained by `finetune.reranking.fit_cross_encoder` (listwise loss; the kept epoch is the
best validation NDCG@10, epoch 0 included). The baseline is the frozen MiniLM's cosine between
the message's and each reply's mean-pooled vectors (a two-tower model before any training).
Both are measured with the same `group_measure` (NDCG@10, MRR) on the same test groups.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd

from finetune import runtime

runtime.configure()

DATA = Path(__file__).resolve().parents[1] / "recipes" / "data" / "bitext"
CANDIDATES = 20


def groups_of(rows: pd.DataFrame, n: int, seed: int):
    """`n` groups: a message, its reply at a random position, 19 replies of other intents."""
    from finetune.reranking import Group

    rng = np.random.default_rng(seed)
    picked = rows.iloc[rng.permutation(len(rows))[:n]]
    groups = []
    for _, row in picked.iterrows():
        others = rows[rows["intent"] != row["intent"]]["reply"].to_numpy()
        candidates = list(rng.choice(others, CANDIDATES - 1, replace=False))
        positive = int(rng.integers(CANDIDATES))
        candidates.insert(positive, row["reply"])
        groups.append(Group(row["message"], candidates, positive))
    return groups


def cosine_scores(groups) -> list[np.ndarray]:
    """The frozen MiniLM's cosine between each message and its candidates."""
    from finetune.modeling.generation import sentence_vectors

    texts = sorted({t for g in groups for t in (g.query, *g.candidates)})
    vectors = sentence_vectors("minilm", texts, 64, "cpu")
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    where = {t: i for i, t in enumerate(texts)}
    return [vectors[[where[c] for c in g.candidates]] @ vectors[where[g.query]] for g in groups]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=48)
    parser.add_argument("--validation", type=int, default=16)
    parser.add_argument("--test", type=int, default=60)
    parser.add_argument("--epochs", type=float, default=2)
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", default="benchmarks/results/cross_encoder_demo.json")
    args = parser.parse_args()

    from finetune.config import Config, DataConfig, ModelConfig, TrainConfig
    from finetune.reranking import fit_cross_encoder, group_measure, rerank

    train_rows = pd.read_csv(DATA / "train.csv")
    order = np.random.default_rng(0).permutation(len(train_rows))  # fixed, not the seed's
    cut = len(order) // 5
    validation = groups_of(train_rows.iloc[order[:cut]], args.validation, 1)
    train = groups_of(train_rows.iloc[order[cut:]], args.train, 2)
    test = groups_of(pd.read_csv(DATA / "test.csv"), args.test, 3)
    config = Config(
        data=DataConfig(max_length=args.max_length),
        model=ModelConfig(name="minilm", lora_r=8),
        train=TrainConfig(
            epochs=args.epochs,
            batch_size=4,
            eval_batch_size=64,
            learning_rate=1e-3,
            head_learning_rate=1e-2,
            checkpoint_steps=0,
            seed=args.seed,
        ),
    )
    start = time.perf_counter()
    fitted = fit_cross_encoder(train, validation, config, show_progress=False)
    train_seconds = time.perf_counter() - start
    measure = group_measure(10)
    positives = np.array([g.positive for g in test])
    start = time.perf_counter()
    scores = rerank(
        fitted.model, fitted.tokenizer, [g.query for g in test], [g.candidates for g in test]
    )
    score_seconds = time.perf_counter() - start
    results = {
        "groups": {"train": len(train), "validation": len(validation), "test": len(test)},
        "candidates": CANDIDATES,
        "history": fitted.result.history,
        "kept_epoch": fitted.result.best_epoch,
        "test": {
            "cross_encoder": measure(scores, positives),
            "frozen_minilm_cosine": measure(cosine_scores(test), positives),
            "random_order_mrr": float(np.mean(1 / np.arange(1, CANDIDATES + 1))),
        },
        "seconds_under_load": {
            "train": round(train_seconds, 1),
            "score_test": round(score_seconds, 1),
        },
        "args": vars(args),
    }
    Path(args.out).write_text(json.dumps(results, indent=2), encoding="utf-8")
    print(
        json.dumps(results["test"], indent=2), results["kept_epoch"], results["seconds_under_load"]
    )


if __name__ == "__main__":
    main()
