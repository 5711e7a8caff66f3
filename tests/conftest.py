"""Shared fixtures: offline mode, a tiny random BERT saved to disk, small labelled files."""

from __future__ import annotations

import os

# Tests never touch the network: any hub lookup fails fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

# Under pytest-xdist each worker gets one core: one torch thread per worker, so two workers
# never fight over the two cores (subprocesses and notebook kernels inherit it).
if os.environ.get("PYTEST_XDIST_WORKER"):
    for _name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_name, "1")

from finetune import runtime  # noqa: E402

runtime.configure()  # the command's CPU settings, before torch loads (notebooks inherit them)

import random  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

INTENTS = {
    "refund": [
        "I want my money back",
        "please refund the order",
        "refund me now",
        "can I get a refund for this",
        "money back please",
        "I was promised a refund",
    ],
    "delivery": [
        "where is my parcel",
        "the package never arrived",
        "delivery is late again",
        "tracking has not moved",
        "courier lost my box",
        "when will it be delivered",
    ],
    "login": [
        "I cannot log in",
        "password reset does not work",
        "my account is locked",
        "login page gives an error",
        "forgot my password",
        "two factor code never comes",
    ],
}


def make_rows(n_per_class: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for label, phrases in INTENTS.items():
        for i in range(n_per_class):
            text = f"{rng.choice(phrases)} {rng.choice(['', 'thanks', 'asap', '!!', 'pls'])} {i}"
            rows.append({"text": text.strip(), "label": label})
    rng.shuffle(rows)
    return rows


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A 2-layer, 64-wide random BERT with the bundled MiniLM tokenizer, saved like a hub model.

    64 wide because bitsandbytes' 4-bit CPU kernels need widths divisible by their block size.
    """
    from transformers import AutoTokenizer, BertConfig, BertModel, set_seed

    from finetune.modeling.models import resolve_model_path

    folder = tmp_path_factory.mktemp("tiny-bert")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("minilm"))
    set_seed(0)
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def small_csvs(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("data")
    train, test = folder / "train.csv", folder / "test.csv"
    pd.DataFrame(make_rows(20, seed=1)).to_csv(train, index=False)
    pd.DataFrame(make_rows(6, seed=2)).to_csv(test, index=False)
    return train, test


def make_mixed_records(n: int, seed: int) -> pd.DataFrame:
    """Numbers with gaps, a category, free-text notes; the outcome depends on all three."""
    rng = np.random.default_rng(seed)
    glucose = rng.normal(120, 25, n).round()
    smoker = rng.choice(["yes", "no"], n)
    notes = rng.choice(["reports chest pain at rest", "routine visit no complaints"], n)
    risk = (glucose - 120) / 25 + (smoker == "yes") + (notes == "reports chest pain at rest")
    outcome = np.where(risk + rng.normal(0, 0.5, n) > 1, "sick", "well")
    glucose_text = [str(int(g)) for g in glucose]
    for i in rng.choice(n, n // 10, replace=False):
        glucose_text[i] = ""
    return pd.DataFrame(
        {"glucose": glucose_text, "smoker": smoker, "notes": notes, "outcome": outcome}
    )


@pytest.fixture(scope="session")
def mixed_table():
    """make_mixed_records(n, seed): patient-like records with gaps, categories and notes."""
    return make_mixed_records


@pytest.fixture(scope="session")
def tiny_gemma3_dir(tiny_llama_dir, tmp_path_factory) -> Path:
    """A 2-layer random Gemma 3 text encoder, bidirectional like EmbeddingGemma, whose layers
    are of two kinds (sliding-window and full attention, with different rotary bases), with
    the tiny Llama's tokenizer."""
    from transformers import AutoTokenizer, Gemma3TextConfig, Gemma3TextModel, set_seed

    folder = tmp_path_factory.mktemp("tiny-gemma3")
    tokenizer = AutoTokenizer.from_pretrained(tiny_llama_dir)
    set_seed(0)
    config = Gemma3TextConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        head_dim=32,
        max_position_embeddings=128,
        sliding_window=4,
        layer_types=["sliding_attention", "full_attention"],
        use_bidirectional_attention=True,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    Gemma3TextModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory) -> Path:
    """A 2-layer, 64-wide random Llama (saved as a causal LM, like real checkpoints) with a
    word-level tokenizer that, like most decoder tokenizers, has an EOS but no pad token."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, set_seed

    folder = tmp_path_factory.mktemp("tiny-llama")
    words = sorted({w for phrases in INTENTS.values() for p in phrases for w in p.split()})
    words += ["thanks", "asap", "!!", "pls", *map(str, range(40))]
    vocab = {token: i for i, token in enumerate(["<unk>", "<s>", "</s>", *sorted(set(words))])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    set_seed(0)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=1,
        eos_token_id=2,
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
