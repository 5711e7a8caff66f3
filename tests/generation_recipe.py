"""A small generation "recipe" for the tests: memorisable prompt/response pairs and a tiny
Llama whose tokenizer is given a minimal chat template (called through the Python API)."""

from __future__ import annotations

import shutil
from pathlib import Path

from finetune.config import Config
from finetune.data.pairs import Pairs

# Words the tiny Llama's word-level tokenizer knows (tests/conftest.py INTENTS).
PAIRS = [
    ("where is my parcel", "tracking has not moved"),
    ("I cannot log in", "password reset does not work"),
    ("refund me now", "money back please"),
    ("delivery is late again", "courier lost my box"),
    ("my account is locked", "forgot my password"),
    ("please refund the order", "I was promised a refund"),
]

# User turn, then the assistant's words and EOS: no role markers (the tokenizer has none).
TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}{{ m['content'] }} "
    "{% if m['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
)


def chat_model(tiny_llama_dir: Path, folder: Path) -> Path:
    """A copy of the tiny Llama whose tokenizer has `TEMPLATE` as its chat template.

    Its output layer is scaled up: a random 64-wide model's logits span about 1 nat, too
    little for LoRA (which leaves that layer frozen) to memorise anything in a few steps."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    shutil.copytree(tiny_llama_dir, folder)
    model = AutoModelForCausalLM.from_pretrained(str(folder))
    with torch.no_grad():
        model.lm_head.weight.mul_(30)
    model.save_pretrained(str(folder))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.chat_template = TEMPLATE
    tokenizer.save_pretrained(str(folder))
    return folder


def pairs() -> Pairs:
    return Pairs([p for p, _ in PAIRS], [r for _, r in PAIRS], "memorise")


def config(model: Path, output: Path, quant: str = "none", steps: int = 40) -> Config:
    cfg = Config(recipe="generation-test", output=str(output))
    cfg.model.name = str(model)
    cfg.model.quant = quant
    cfg.model.lora_dropout = 0.0
    cfg.train.max_steps = steps
    cfg.train.batch_size = 6
    cfg.train.learning_rate = 1e-2
    cfg.train.warmup_ratio = 0.0
    cfg.train.checkpoint_steps = 0
    cfg.train.precision = "fp32"
    cfg.data.max_length = 32
    return cfg


def chinese_reply_run_args(
    tiny_llama_dir: Path, retrieval_model: Path, folder: Path, pairs: list[tuple[str, str, str]]
) -> tuple[list[str], Path, Path]:
    """(the arguments of a tiny reply run on Chinese (message, reply, intent) `pairs`, its
    evaluation file, its run folder): twice the pairs to train on, the pairs to evaluate."""
    import pandas as pd

    chat = chat_model(tiny_llama_dir, folder / "chat")
    rows = [{"message": m, "reply": r, "intent": i} for m, r, i in pairs]
    data, evaluation, run = folder / "pairs.csv", folder / "eval.csv", folder / "run"
    pd.DataFrame(rows * 2).to_csv(data, index=False)
    pd.DataFrame(rows).to_csv(evaluation, index=False)
    args = [
        "customer-service", "train", "--task", "reply", "--quick",
        "--data", str(data), "--eval-data", str(evaluation), "--model", str(chat),
        "--output", str(run), "--max-steps", "2", "--set", "train.batch_size=8",
        "--set", "train.precision=fp32",
        "--set", "options.val_rows=2", "--set", "options.eval_rows=null",
        "--set", "options.max_new_tokens=4", "--set", "options.retrieved_reply=true",
        "--set", f"options.retrieval_model={retrieval_model}",
    ]  # fmt: skip
    return args, evaluation, run
