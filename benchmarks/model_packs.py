"""Installed model packs: load time offline and one measured figure each.

    finetune models fetch mpnet      # (and the others) first
    HF_HUB_OFFLINE=1 python benchmarks/model_packs.py --output benchmarks/results/model_packs.json

- mpnet: frozen mean-pooled embeddings + logistic regression on the bundled shop_intents
  (700 train / 280 test), beside the bundled MiniLM in the same run.
- embeddinggemma: cosine similarity of Chinese sentences and their English translations,
  against mismatched pairs.
- qwen2.5-0.5b: greedy replies to three Chinese customer messages (ChatML template).
Load times are wall-clock seconds of `from_pretrained` on an installed pack.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from finetune import runtime

runtime.configure()  # the command's CPU settings (passive OpenMP waits), before torch loads

import numpy as np  # noqa: E402
import torch  # noqa: E402

PAIRS = [
    (
        "我的快递三天了还没到，请帮我查一下。",
        "My parcel has not arrived after three days, please check.",
    ),
    ("这个耳机音质很好，物超所值。", "These headphones sound great and are good value for money."),
    ("房间很脏，空调也坏了，非常失望。", "The room was dirty and the air conditioning was broken."),
    ("我想退货，尺码太小了。", "I want to return this, the size is too small."),
]
PROMPTS = [
    "我的订单已经一周了还没发货，怎么回事？",
    "收到的杯子是碎的，可以换一个吗？",
    "请问怎么开发票？",
]


def mean_pool(model, tokenizer, texts: list[str], batch: int = 32) -> np.ndarray:
    out = []
    with torch.inference_mode():
        for i in range(0, len(texts), batch):
            enc = tokenizer(
                texts[i : i + batch],
                padding=True,
                truncation=True,
                max_length=128,
                return_tensors="pt",
            )
            states = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(states.dtype)
            out.append(((states * mask).sum(1) / mask.sum(1)).float().numpy())
    return np.concatenate(out)


def timed_load(loader, path: str):
    start = time.perf_counter()
    model = loader(path)
    return model.eval(), round(time.perf_counter() - start, 1)


def probe_accuracy(name: str) -> dict:
    from importlib.resources import files

    import pandas as pd
    from transformers import AutoModel, AutoTokenizer

    from finetune.evaluation.baselines import fit_probe
    from finetune.modeling.models import resolve_model_path

    bundled = files("recipes") / "data" / "customer_service"

    path = resolve_model_path(name)
    model, load_s = timed_load(AutoModel.from_pretrained, path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    train = pd.read_csv(bundled / "train.csv")
    test = pd.read_csv(bundled / "test.csv")
    labels = sorted(train.label.unique())
    y_train = train.label.map(labels.index).to_numpy()
    y_test = test.label.map(labels.index).to_numpy()
    start = time.perf_counter()
    x_train = mean_pool(model, tokenizer, train.text.tolist())
    x_test = mean_pool(model, tokenizer, test.text.tolist())
    embed_s = time.perf_counter() - start
    probe = fit_probe(x_train, y_train, len(labels), seed=42)
    accuracy = float((probe.predict_proba(x_test).argmax(1) == y_test).mean())
    return {
        "load_s": load_s,
        "shop_intents_frozen_probe_accuracy": round(accuracy, 4),
        "texts_per_s": round((len(train) + len(test)) / embed_s, 1),
    }


def gemma_figures() -> dict:
    from transformers import AutoModel, AutoTokenizer

    from finetune.modeling.models import resolve_model_path

    path = resolve_model_path("embeddinggemma")
    model, load_s = timed_load(AutoModel.from_pretrained, path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    zh = mean_pool(model, tokenizer, [p[0] for p in PAIRS])
    en = mean_pool(model, tokenizer, [p[1] for p in PAIRS])
    zh /= np.linalg.norm(zh, axis=1, keepdims=True)
    en /= np.linalg.norm(en, axis=1, keepdims=True)
    sims = zh @ en.T
    matched = float(np.diag(sims).mean())
    mismatched = float(sims[~np.eye(len(PAIRS), dtype=bool)].mean())
    return {
        "load_s": load_s,
        "zh_en_translation_cosine": round(matched, 3),
        "zh_en_mismatched_cosine": round(mismatched, 3),
    }


def qwen_figures() -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from finetune.modeling.models import resolve_model_path

    path = resolve_model_path("qwen2.5-0.5b")
    model, load_s = timed_load(AutoModelForCausalLM.from_pretrained, path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    replies = []
    start = time.perf_counter()
    for prompt in PROMPTS:
        messages = [
            {"role": "system", "content": "你是一家网店的客服，请用中文简短、礼貌地回复顾客。"},
            {"role": "user", "content": prompt},
        ]
        ids = tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=80, do_sample=False)
        reply = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
        replies.append({"prompt": prompt, "reply": reply.strip()})
    return {
        "load_s": load_s,
        "generate_s": round(time.perf_counter() - start, 1),
        "replies": replies,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--only", nargs="*", default=["qwen", "embeddinggemma", "mpnet", "minilm"])
    args = parser.parse_args()
    torch.manual_seed(0)
    results = {}
    for name in args.only:
        if name in ("mpnet", "minilm"):
            results[name] = probe_accuracy(name)
        elif name == "embeddinggemma":
            results[name] = gemma_figures()
        elif name == "qwen":
            results["qwen2.5-0.5b"] = qwen_figures()
        print(
            name,
            json.dumps(results.get(name) or results.get("qwen2.5-0.5b"), ensure_ascii=False),
            flush=True,
        )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(results, indent=2, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
