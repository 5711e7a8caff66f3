"""What choosing the linear probe's C costs: one logistic-regression fit at C=1.0 against
`probe_strength` (3 folds x 8 values of C, warm-started), on Banking77's frozen, mean-pooled
MiniLM vectors of all 10,003 training messages (texts cut at 64 tokens).

    python benchmarks/probe_cost.py [--data ../shared/data/banking77/train.csv]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from transformers import AutoModel, AutoTokenizer

from finetune.evaluation.baselines import probe_strength
from finetune.modeling.models import resolve_model_path


def frozen_vectors(texts: list[str]) -> np.ndarray:
    path = resolve_model_path("minilm")
    tokenizer, model = AutoTokenizer.from_pretrained(path), AutoModel.from_pretrained(path).eval()
    vectors = []
    with torch.inference_mode():
        for start in range(0, len(texts), 128):
            batch = tokenizer(
                texts[start : start + 128],
                padding=True,
                truncation=True,
                max_length=64,
                return_tensors="pt",
            )
            states = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            vectors.append(((states * mask).sum(1) / mask.sum(1)).numpy())
    return np.concatenate(vectors)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/banking77/train.csv")
    args = parser.parse_args()
    frame = pd.read_csv(args.data)
    labels = pd.factorize(frame["category"])[0]
    vectors = frozen_vectors(frame["text"].astype(str).tolist())
    standardised = StandardScaler().fit_transform(vectors)
    print(f"vectors: {standardised.shape[0]} x {standardised.shape[1]}, {labels.max() + 1} classes")
    start = time.perf_counter()
    LogisticRegression(C=1.0, max_iter=3000, random_state=42).fit(standardised, labels)
    print(f"one fit at C=1.0: {time.perf_counter() - start:.1f} s")
    start = time.perf_counter()
    strength = probe_strength(standardised, labels, 42)
    print(f"probe_strength: C={strength:g} in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    main()
