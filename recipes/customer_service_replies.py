"""Customer service, reply task: a small chat model fine-tuned to write the shop's replies.

The *what* of `finetune customer-service train --task reply`: the bundled Bitext pairs (or
`--dataset shop_replies_zh`, Chinese pairs, or the user's file), the split, the prompt
format (a system turn, then the customer's message), the defaults and the baselines. The
*how* (LoRA on a causal LM, loss on reply tokens only, batched decoding, metrics, run
folder) is the engine's (finetune/generation.py).

Splits: the bundled data has a fixed test split (finetune/cards/bitext.md,
finetune/cards/shop_replies_zh.md); a user's file is evaluated on `--eval-data`, else on a
seeded hold-out (data.eval_fraction, data.split_seed, stratified by intent when the file has
an intent column). Validation rows (`val_rows`, stratified) come from the training rows
only; they pick the kept epoch (loss per reply token) and decide the run's verdict against
retrieval. `train_rows` and `eval_rows` take fixed, stratified subsamples (seeded by
data.split_seed, never by the training seed) so that a CPU run finishes in minutes
(docs/recipes/customer-service.md).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from importlib.resources import files
from typing import Annotated, Any

import numpy as np
from annotated_types import Interval

from finetune.config import Config, NonNegative, Positive
from finetune.data.pairs import Pairs, read_pairs
from finetune.errors import UserError
from finetune.recipe import bundled_dataset

SYSTEM = (
    "You are the customer-service assistant of an online shop. Reply to the customer's "
    "message helpfully and politely."
)
# Bundled pairs (their folder under recipes/data) and the defaults each brings over the reply
# task's own (a --config file, flags and --set still win).
DATASETS: dict[str, dict[str, Any]] = {
    "bitext": {},
    "shop_replies_zh": {
        # A Chinese system turn; 2 validation pairs per intent (27 would leave 45 of its 72
        # to train on); 56 pairs are 7 steps an epoch, and validation keeps the best of 3.
        "options": {
            "system": "你是一家网店的客服助手。请礼貌、有帮助地回复顾客的消息。",
            "val_rows": 16,
        },
        "train": {"epochs": 3},
    },
}
BASELINES = ("untuned", "retrieval_tfidf", "retrieval_embedding", "retrieval_consensus")

# Reply-task defaults (they replace the intent classifier's): retrieval-augmented prompts, so
# max_length leaves room for the retrieved reply (a longer pair loses its reply's tail).
# Sizes, timings and how many pairs are cut: docs/recipes/customer-service.md.
DEFAULTS: dict[str, Any] = {
    "data": {"redact_pii": True, "max_length": 512},
    # No LoRA dropout: level with 0.05 on the validation pairs, and faster (its input copies
    # go); measured in docs/recipes/customer-service.md.
    "model": {"name": "smollm2-135m", "lora_r": 16, "lora_alpha": 32, "lora_dropout": 0.0},
    "train": {
        "epochs": 1,
        "batch_size": 8,
        "eval_batch_size": 16,
        "learning_rate": 5e-4,
        "warmup_ratio": 0.05,
        "checkpoint_steps": 0,
        # Batches of more padded tokens train in pieces (same gradient): a third of the peak
        # memory, and faster (docs/benchmarks.md, "Reply training: logits on response
        # tokens only").
        "max_batch_tokens": 1024,
    },
    "options": {
        "dataset": "bitext",
        "train_rows": 240,
        "val_rows": 27,
        "eval_rows": 108,
        "max_new_tokens": 256,
        "retrieved_reply": True,
    },
}
# The intent classifier's options the reply task never reads, each with why (and what it
# reads instead); set, they stop the run with one line.
UNUSED: dict[str, str] = {
    "data.text_column": "the reply task reads a message and a reply column: --prompt-column "
    "and --response-column.",
    "data.label_column": "the reply task's intent column is options.intent_column (--set "
    "options.intent_column=NAME).",
    "data.val_fraction": "the reply task holds out options.val_rows training pairs for validation.",
    "data.positive_label": "the reply task writes replies; it has no positive class.",
    "data.memory_map": "the reply task reads its pairs into memory; only the intent task's "
    "text table can stay on disk.",
    "train.class_weight": "the reply task's loss is over reply tokens; it has no classes to "
    "weight.",
    "train.select_metric": "the reply task keeps the epoch with the lowest loss per reply "
    "token on its validation pairs.",
    "train.select_folds": "the reply task's validation pairs (options.val_rows) choose the "
    "epoch; it has no inner folds.",
    "eval.folds": "the reply task is scored on one split (--eval-data, or the bundled test "
    "messages); it has no cross-validation.",
    "eval.target_recall": "the reply task writes replies; it has no decision threshold.",
    "eval.calibrate": "the reply task writes replies; it has no probabilities to calibrate.",
    "eval.blend": "blends are for the intent task's classifiers.",
}
# `--quick`: a smoke run in a minute or two (CI, tests): 16 short pairs seen once.
QUICK: dict[str, Any] = {
    "data": {"max_length": 384},
    "train": {"max_steps": 4, "batch_size": 4},
    "options": {"train_rows": 16, "val_rows": 8, "eval_rows": 8, "max_new_tokens": 24},
}


@dataclass
class CustomerServiceOptions:
    # intent: classify messages (the default); reply: fine-tune a chat model to write replies.
    task: str = "intent"
    # Bundled dataset used without --data: shop_intents or chinese_reviews (intent task),
    # bitext or shop_replies_zh (reply task, whose defaults make it bitext).
    dataset: str = "shop_intents"
    # Reply task, user files: the message, reply and (optional) intent columns.
    prompt_column: str = "message"
    response_column: str = "reply"
    intent_column: str = "intent"
    # Reply task: stratified subsamples of the training and evaluation rows (None: all), and
    # the validation rows held out of the training rows.
    train_rows: Positive | None = None
    val_rows: NonNegative = 27
    eval_rows: Positive | None = None
    # Reply task: replies decoded together. A wide batch reads the model's weights once per
    # token for more replies, and replies that end leave it (docs/benchmarks.md, "Decoding
    # replies in rounds").
    decode_batch: Positive = 64
    # Reply task: cap on generated tokens per reply (Bitext replies: about 175 tokens on
    # average with SmolLM2's tokenizer).
    max_new_tokens: Positive = 256
    # Reply task: the system turn before each message (the prompt format; "": none).
    system: str = SYSTEM
    # Reply task: add the reply to the most similar training message to the system turn
    # (retrieval-augmented replies; the model learns to adapt it).
    retrieved_reply: bool = False
    # Reply task, with retrieved replies: no reply ends before this share of its retrieved
    # reply's length in tokens (0: a reply may end anywhere).
    min_reply_share: Annotated[float, Interval(ge=0, le=1)] = 0.0
    # Reply task: the frozen sentence encoder that finds the most similar training message
    # (the retrieved replies and the retrieval_embedding baseline); a name from `finetune
    # models` or a folder. MiniLM reads English only: for Chinese, embeddinggemma.
    retrieval_model: str = "minilm"


# The options only the reply task reads (the intent task refuses them): all but these two.
REPLY_OPTIONS = tuple(
    f.name for f in fields(CustomerServiceOptions) if f.name not in ("task", "dataset")
)


def spread(labels: list[str] | None, n: int | None, seed: int, count: int) -> list[int]:
    """`n` row indices of `count` rows (all when None), stratified by `labels`: a seeded
    shuffle, then one row per label in turn, so every label gets its share."""
    order = np.random.default_rng(seed).permutation(count)
    if n is None or n >= count:
        return sorted(order.tolist())
    if labels is None:
        return sorted(order[:n].tolist())
    queues: dict[str, list[int]] = {}
    for row in order.tolist():
        queues.setdefault(labels[row], []).append(row)
    picked: list[int] = []
    while len(picked) < n:
        for queue in queues.values():
            if queue and len(picked) < n:
                picked.append(queue.pop(0))
    return sorted(picked)


def _read(path: Any, options: CustomerServiceOptions) -> Pairs:
    return read_pairs(path, options.prompt_column, options.response_column, options.intent_column)


def _sources(config: Config) -> tuple[Pairs, Pairs]:
    """(training pool, evaluation pairs): the bundled split, or the user's files."""
    options = config.options
    if config.data.path is None:
        name = bundled_dataset(options.dataset, DATASETS, "reply")
        folder, bundled = files("recipes") / "data" / name, CustomerServiceOptions()
        pool, evaluation = _read(folder / "train.csv", bundled), _read(folder / "test.csv", bundled)
        pool.name, evaluation.name = f"{name} train", f"{name} test"
        return pool, evaluation
    pool = _read(config.data.path, options)
    if config.data.eval_path is not None:
        return pool, _read(config.data.eval_path, options)
    n_eval = round(len(pool) * config.data.eval_fraction)
    if n_eval < 1:
        raise UserError("No evaluation rows: pass --eval-data or set data.eval_fraction > 0.")
    held = set(spread(pool.labels, n_eval, config.data.split_seed, len(pool)))
    kept = [i for i in range(len(pool)) if i not in held]
    return pool.take(kept), pool.take(sorted(held))


def split(config: Config) -> tuple[Pairs, Pairs, Pairs]:
    """(train, validation, evaluation) pairs of a reply run."""
    options, seed = config.options, config.data.split_seed
    pool, evaluation = _sources(config)
    evaluation = evaluation.take(
        spread(evaluation.labels, options.eval_rows, seed, len(evaluation))
    )
    if options.val_rows >= len(pool) - 1:
        raise UserError(
            f"{pool.name}: {len(pool)} training pairs leave none for training after "
            f"options.val_rows={options.val_rows} validation pairs; lower it."
        )
    held = set(
        spread(pool.labels, options.val_rows, seed + 1, len(pool)) if options.val_rows else []
    )
    train = pool.take([i for i in range(len(pool)) if i not in held])
    train = train.take(spread(train.labels, options.train_rows, seed + 2, len(train)))
    return train, pool.take(sorted(held)), evaluation


def train(config: Config, show_progress: bool = True) -> Any:
    from finetune.generation import train_generation

    training, validation, evaluation = split(config)
    return train_generation(
        config,
        training,
        evaluation,
        validation if len(validation) else None,
        max_new_tokens=config.options.max_new_tokens,
        show_progress=show_progress,
        system=config.options.system or None,
        baselines=BASELINES,
        retrieved_reply=config.options.retrieved_reply,
        min_share=config.options.min_reply_share,
        decode_batch=config.options.decode_batch,
        retrieval_model=config.options.retrieval_model,
    )
