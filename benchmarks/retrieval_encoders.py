"""Retrieval by a frozen sentence encoder, read three ways: does the engine lose anything by
mean-pooling the transformer's output and skipping what a sentence-transformers folder adds
after the pooling (Dense projections, a task prompt)?

    python benchmarks/retrieval_encoders.py --model embeddinggemma --dataset banking77
    python benchmarks/retrieval_encoders.py --model embeddinggemma --dataset chinese_reviews
    python benchmarks/retrieval_encoders.py --model minilm --dataset banking77

The figure is what reply retrieval lives on: the share of messages whose most similar
training message (cosine) carries the same label (1-NN accuracy, and its macro-F1). An index
of `--index` training rows is searched by `--validation` other training rows, which choose
the reading; the test rows (at most `--test`) are then scored once with every reading, for
the record only. Readings:

- `mean`: the engine's (sentence_vectors): mean-pooled last hidden states, no prompt;
- `mean+dense`: then the folder's Dense modules, as sentence-transformers applies them;
- `sts+dense`: the same, every text after the model's sentence-similarity prompt;
- `search+dense`: queries after its search-query prompt, the index after its document
  prompt (the asymmetric retrieval reading).

Prompts and Dense modules are read from the folder's own config_sentence_transformers.json
and modules.json; an encoder without them (MiniLM) is read as `mean` only.

`--probe` asks the same of the classification probe instead: a logistic regression (C chosen
by 3 folds of the index rows) on `mean` or `mean+dense` vectors of the index rows, scored on
the validation and test rows.

    python benchmarks/retrieval_encoders.py --model embeddinggemma --dataset banking77 --probe
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from safetensors.torch import load_file
from sklearn.linear_model import LogisticRegressionCV
from sklearn.metrics import accuracy_score, f1_score
from sklearn.model_selection import train_test_split

from finetune.modeling.generation import RETRIEVAL_MAX_LENGTH, sentence_encoder
from finetune.modeling.inference import embed
from finetune.modeling.inputs import tokenize
from finetune.modeling.models import resolve_model_path

ROOT = Path(__file__).resolve().parent.parent
DATASETS = {  # name: (train file, test file, text column, label column)
    "banking77": (
        ROOT.parent / "shared/data/banking77/train.csv",
        ROOT.parent / "shared/data/banking77/test.csv",
        "text",
        "category",
    ),
    "chinese_reviews": (
        ROOT / "recipes/data/chinese_reviews/train.csv",
        ROOT / "recipes/data/chinese_reviews/test.csv",
        "text",
        "label",
    ),
    "bitext": (
        ROOT / "recipes/data/bitext/train.csv",
        ROOT / "recipes/data/bitext/test.csv",
        "message",
        "intent",
    ),
}
# Prompt names in config_sentence_transformers.json: (query prompt, index prompt).
PROMPTS = {"sts+dense": ("STS", "STS"), "search+dense": ("query", "document")}


def dense_modules(folder: Path) -> list[tuple[torch.Tensor, torch.Tensor | None, str]]:
    """The folder's Dense modules after pooling, in order: (weight, bias, activation)."""
    modules = folder / "modules.json"
    if not modules.is_file():
        return []
    found = []
    for module in json.loads(modules.read_text(encoding="utf-8")):
        if not module["type"].endswith("models.Dense"):
            continue
        path = folder / module["path"]
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        weights = load_file(str(path / "model.safetensors"))
        bias = weights.get("linear.bias")
        found.append((weights["linear.weight"], bias, config["activation_function"]))
    return found


ACTIVATIONS = {
    "torch.nn.modules.linear.Identity": lambda x: x,
    "torch.nn.modules.activation.Tanh": torch.tanh,
}


def project(vectors: np.ndarray, dense: list) -> np.ndarray:
    """`vectors` through the Dense modules (sentence-transformers' Dense: linear, activation)."""
    out = torch.from_numpy(np.asarray(vectors, dtype=np.float32))
    for weight, bias, activation in dense:
        out = out @ weight.float().T + (0 if bias is None else bias.float())
        out = ACTIVATIONS[activation](out)
    return out.numpy()


def unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)


def encode(encoder, texts: list[str], prompt: str, batch: int) -> tuple[np.ndarray, float]:
    tokenizer, model = encoder
    start = time.perf_counter()
    ids = tokenize(tokenizer, texts, RETRIEVAL_MAX_LENGTH, prompt)
    vectors = embed(model, ids, tokenizer.pad_token_id, batch, "cpu", False)
    return np.asarray(vectors), time.perf_counter() - start


def nearest_labels(queries: np.ndarray, index: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return labels[(unit(queries) @ unit(index).T).argmax(axis=1)]


def figures(true: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {
        "accuracy": round(float(accuracy_score(true, predicted)), 4),
        "macro_f1": round(float(f1_score(true, predicted, average="macro")), 4),
    }


def rows(args: argparse.Namespace) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    train_file, test_file, text, label = DATASETS[args.dataset]
    train = pd.read_csv(train_file)[[text, label]].set_axis(["text", "label"], axis=1)
    test = pd.read_csv(test_file)[[text, label]].set_axis(["text", "label"], axis=1)
    rest, validation = train_test_split(
        train, test_size=args.validation, stratify=train.label, random_state=args.seed
    )
    if len(rest) > args.index:
        rest = train_test_split(
            rest, train_size=args.index, stratify=rest.label, random_state=args.seed
        )[0]
    if len(test) > args.test:
        test = train_test_split(
            test, train_size=args.test, stratify=test.label, random_state=args.seed
        )[0]
    return rest, validation, test


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="embeddinggemma")
    parser.add_argument("--dataset", choices=sorted(DATASETS), default="banking77")
    parser.add_argument("--index", type=int, default=3000)
    parser.add_argument("--validation", type=int, default=1000)
    parser.add_argument("--test", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--probe", action="store_true", help="a logistic-regression probe")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    index, validation, test = rows(args)
    folder = Path(resolve_model_path(args.model))
    dense = dense_modules(folder)
    config = folder / "config_sentence_transformers.json"
    prompts = (
        json.loads(config.read_text(encoding="utf-8")).get("prompts", {})
        if config.is_file()
        else {}
    )
    readings = ["mean"] + (["mean+dense"] if dense else [])
    if not args.probe:
        readings += [
            r for r, names in PROMPTS.items() if dense and all(n in prompts for n in names)
        ]
    encoder = sentence_encoder(args.model, "cpu")
    cache: dict[str, np.ndarray] = {}
    seconds: dict[str, float] = {}

    def vectors(rows_name: str, texts: list[str], prompt: str) -> np.ndarray:
        key = f"{rows_name}|{prompt}"
        if key not in cache:
            cache[key], seconds[key] = encode(encoder, texts, prompt, args.batch)
        return cache[key]

    def score(reading: str, queries: pd.DataFrame, name: str) -> dict[str, float]:
        query_prompt, index_prompt = ("", "")
        if reading in PROMPTS:
            query_prompt, index_prompt = (prompts[n] for n in PROMPTS[reading])
        q = vectors(name, queries.text.tolist(), query_prompt)
        i = vectors("index", index.text.tolist(), index_prompt)
        if reading != "mean":
            q, i = project(q, dense), project(i, dense)
        if args.probe:
            return figures(queries.label.to_numpy(), probe(reading, i).predict(unit(q)))
        return figures(queries.label.to_numpy(), nearest_labels(q, i, index.label.to_numpy()))

    probes: dict[str, LogisticRegressionCV] = {}

    def probe(reading: str, index_vectors: np.ndarray) -> LogisticRegressionCV:
        if reading not in probes:
            model = LogisticRegressionCV(Cs=[0.1, 1.0, 10.0, 100.0], cv=3, max_iter=3000)
            probes[reading] = model.fit(unit(index_vectors), index.label.to_numpy())
        return probes[reading]

    on_validation = {r: score(r, validation, "validation") for r in readings}
    chosen = max(readings, key=lambda r: (on_validation[r]["macro_f1"], -readings.index(r)))
    on_test = {r: score(r, test, "test") for r in readings}
    result = {
        "command": "python benchmarks/retrieval_encoders.py "
        f"--model {args.model} --dataset {args.dataset}" + (" --probe" if args.probe else ""),
        "rows": {"index": len(index), "validation": len(validation), "test": len(test)},
        "labels": int(index.label.nunique()),
        "validation": on_validation,
        "chosen_on_validation": chosen,
        "test_reported_once": on_test,
        "encode_seconds": {k: round(v, 1) for k, v in seconds.items()},
        "prompts": {r: [prompts[n] for n in PROMPTS[r]] for r in readings if r in PROMPTS},
        "probe_C": {r: float(m.C_[0]) for r, m in probes.items()},
    }
    print(json.dumps(result, indent=2, ensure_ascii=False))
    if args.output:
        args.output.write_text(
            json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )


if __name__ == "__main__":
    main()
