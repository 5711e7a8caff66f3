"""`finetune export` for reply runs: `reply.py`, which serves replies as the run did.

The merged causal LM alone (export.py) answers a bare chat prompt. The run's model was
trained and measured on more than that: messages with PII redacted, the reply to the most
similar training message in the system turn (`options.retrieved_reply`), and served replies
with any e-mail address, phone or card number a reply makes up replaced, and any number of 5
digits or more the conversation did not give. `reply.py` does all
three with torch, transformers and numpy only, and when the run serves retrieval (its model
lost to it on validation) it answers with the retrieved reply, as `predict` does (the
consensus of the nearest replies also needs sacrebleu, for chrF):

- `pii.py`: a copy of `finetune/data/pii.py` (standard library only), when the run redacted;
- `retrieval/`: the frozen sentence encoder, the training messages' unit vectors and their
  replies, when the run retrieved for its prompts or serves retrieval;
- the prompt builders (`conversation`, `with_retrieved_reply`, `prompt_text`,
  `conversation_text`) and the
  consensus (`consensus`) copied in as source, so the prompt and the served reply are the
  ones the run built.

The export checks `reply.py` itself, run from the written folder on the run's evaluation
messages, against the run's adapter decoding the prompts the run built.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from finetune.data import pairs, pii
from finetune.modeling import generation, retrieval

REPLY_HEAD = '''"""Replies from this merged chat model, served as the run that trained it
served them (torch, transformers and numpy only).

    python reply.py "how do I cancel my order?" "where is my parcel?"

In Python: `reply = load(folder)`; `reply(prompts)` gives one reply per prompt: a message, or
a conversation so far as a list of {"role": ..., "content": ...} turns. As the run did, it
redacts e-mail addresses, phone and card numbers in the prompts (when the run redacted), puts
the reply to the most similar training message in the system turn (when the run retrieved),
decodes greedily, and replaces any e-mail address, phone or card number a reply makes up, and
any number of 5 digits or more the conversation did not give (when the run redacted).
When the run serves retrieval (reply.json's "serve"), the reply is a training reply: the most
similar training message's own (retrieval_embedding), or of the replies to the few most
similar, the one most like the others (retrieval_consensus, which needs sacrebleu);
`load(folder, serve="model")` gives this folder's model's replies instead.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging

logging.disable_progress_bar()  # no per-tensor loading bar before the replies

'''

REPLY_TAIL = '''

def load_pii(folder):
    # Loaded by path (the folder need not be on sys.path); registered before it runs, as
    # dataclasses look their module up there.
    spec = importlib.util.spec_from_file_location("_exported_pii", Path(folder) / "pii.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def retriever(folder, max_length):
    """(texts, k) -> the replies to each one's k most similar training messages, nearest first
    (cosine of mean-pooled sentence vectors; on a tie, the earlier training message)."""
    folder = Path(folder) / "retrieval"
    tokenizer = AutoTokenizer.from_pretrained(folder / "encoder")
    encoder = AutoModel.from_pretrained(folder / "encoder").eval()
    vectors = np.load(folder / "vectors.npy")
    replies = json.loads((folder / "replies.json").read_text(encoding="utf-8"))

    @torch.no_grad()
    def candidates(texts, k=1):
        batch = tokenizer(
            list(texts), padding=True, truncation=True, max_length=max_length,
            return_tensors="pt",
        )
        states = encoder(**batch).last_hidden_state
        weights = batch["attention_mask"].unsqueeze(-1).to(states.dtype)
        pooled = ((states * weights).sum(1) / weights.sum(1).clamp(min=1e-9)).numpy()
        pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
        order = np.argsort(-(pooled @ vectors.T), axis=1, kind="stable")[:, :k]
        return [[replies[i] for i in row] for row in order]

    return candidates


def cleaner(pii):
    """prompt -> the prompt with PII redacted (as it is without a redactor)."""

    def clean(prompt):
        if pii is None:
            return prompt
        if isinstance(prompt, str):
            return pii.redact(prompt)[0]
        return [{**turn, "content": pii.redact(turn["content"])[0]} for turn in prompt]

    return clean


def load(folder=Path(__file__).resolve().parent, max_new_tokens=None, serve=None):
    """reply(prompts): see the top of this file. `max_new_tokens`: a cap on new tokens per
    reply other than the run's; `serve`: "model" or "retrieval_embedding" (the retrieved
    reply) or "retrieval_consensus" other than the run's."""
    folder = Path(folder)
    info = json.loads((folder / "reply.json").read_text(encoding="utf-8"))
    if max_new_tokens is not None:
        info["max_new_tokens"] = max_new_tokens
    serve = serve or info["serve"]
    pii = load_pii(folder) if info["redact_pii"] else None
    clean = cleaner(pii)

    def served(texts, prompts):
        """Replies as the run serves them: PII and numbers the conversation did not give
        replaced (when the run redacted)."""
        if pii is None:
            return texts
        return pii.redact_replies(texts, [conversation_text(p) for p in prompts])[0]

    candidates = None
    if info["retrieved_reply"] or serve in SERVABLE:
        candidates = retriever(folder, info["retrieval_max_length"])
    if serve in SERVABLE:  # a retrieved reply itself: no model to load

        def retrieved(prompts):
            prompts = [clean(prompt) for prompt in prompts]
            found = candidates([prompt_text(p) for p in prompts], CONSENSUS_CANDIDATES)
            if serve == "retrieval_consensus":
                texts = consensus(found)
            else:
                texts = [replies[0] for replies in found]
            return served(texts, prompts)

        return retrieved
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    if pad is None:
        pad = eos

    def floor(retrieved):
        """New tokens before a reply may end (the run's min_reply_share of its retrieved
        reply's length)."""
        if retrieved is None or not info["min_reply_share"]:
            return 0
        share = math.ceil(info["min_reply_share"] * len(tokenizer(retrieved)["input_ids"]))
        return min(share, info["max_new_tokens"])

    @torch.no_grad()
    def decode(heads, min_new_tokens):
        encoded = [tokenizer(head, add_special_tokens=False)["input_ids"] for head in heads]
        width = max(len(ids) for ids in encoded)
        ids = torch.tensor([[pad] * (width - len(row)) + row for row in encoded])
        mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in encoded])
        out = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=info["max_new_tokens"],
            min_new_tokens=min_new_tokens or None, do_sample=False, pad_token_id=pad,
            eos_token_id=eos,
        )
        texts = []
        for row in out[:, width:].tolist():
            row = row[: row.index(eos)] if eos in row else row
            texts.append(tokenizer.decode(row, skip_special_tokens=True).strip())
        return texts

    def reply(prompts, batch_size=16):
        prompts = [clean(prompt) for prompt in prompts]
        retrieved = [None] * len(prompts)
        if info["retrieved_reply"] and prompts:
            texts = [prompt_text(prompt) for prompt in prompts]
            retrieved = [replies[0] for replies in candidates(texts)]
        heads = [
            tokenizer.apply_chat_template(
                conversation(prompt, info["system"]) if found is None
                else with_retrieved_reply(prompt, found, info["system"]),
                tokenize=False, add_generation_prompt=True,
            )
            for prompt, found in zip(prompts, retrieved)
        ]
        floors = [floor(found) for found in retrieved]
        texts = []
        if any(floors):  # a floor is per reply: one at a time
            for head, least in zip(heads, floors):
                texts += decode([head], least)
        else:
            for start in range(0, len(heads), batch_size):
                texts += decode(heads[start : start + batch_size], 0)
        return served(texts, prompts)

    return reply


if __name__ == "__main__":
    for stream in (sys.stdout, sys.stderr):  # a reply the console cannot encode: escapes
        stream.reconfigure(errors="backslashreplace")
    kit = Path(__file__).resolve().parent
    note = json.loads((kit / "reply.json").read_text(encoding="utf-8"))["note"]
    if note:
        print(note, file=sys.stderr)
    for text in load()(sys.argv[1:]):
        print(text)
'''


def reply_source() -> str:
    """reply.py: the run's prompt builders, as source, between its head and its tail."""
    constants = (
        f"RETRIEVED_LEAD = {generation.RETRIEVED_LEAD!r}\n"
        f"RETRIEVED_MAX_CHARS = {generation.RETRIEVED_MAX_CHARS!r}\n"
        f"SERVABLE = {retrieval.SERVABLE!r}\n"
        f"CONSENSUS_CANDIDATES = {retrieval.CONSENSUS_CANDIDATES!r}\n\n\n"
    )
    builders = [
        pairs.prompt_text,
        pairs.conversation_text,
        generation.conversation,
        generation.with_retrieved_reply,
        retrieval.consensus,
    ]
    source = "\n\n".join(inspect.getsource(builder) for builder in builders)
    return REPLY_HEAD + constants + source + REPLY_TAIL


def write_reply_kit(
    folder: Path,
    run_folder: Path,
    system: str | None,
    options: dict,
    redact: bool,
    in_prompts: bool,
    serve: str = "model",
    note: str | None = None,
) -> None:
    """reply.py and what it reads (reply.json; pii.py and retrieval/ when the run used them)
    into the export `folder`. `in_prompts`: the run's prompts carried retrieved replies.
    `serve`: "model", or one of retrieval.SERVABLE when the run serves a retrieved reply.
    `note`: what reply.py says first when run as a command (the run's verdict, when its model
    lost to retrieval on validation)."""
    description = {
        "note": note,
        "serve": serve,
        "system": system,
        "max_new_tokens": int(options.get("max_new_tokens") or 64),
        "min_reply_share": float(options.get("min_reply_share") or 0.0),
        "redact_pii": redact,
        "retrieved_reply": in_prompts,
        "retrieval_max_length": generation.RETRIEVAL_MAX_LENGTH,
    }
    (folder / "reply.json").write_text(
        json.dumps(description, indent=2, ensure_ascii=False), encoding="utf-8"
    )
    (folder / "reply.py").write_text(reply_source(), encoding="utf-8")
    if redact:  # the redactor itself, not a second copy of its patterns
        shutil.copy(Path(pii.__file__), folder / "pii.py")
    if in_prompts or serve in retrieval.SERVABLE:
        _write_retrieval(folder / "retrieval", run_folder)


def _write_retrieval(folder: Path, run_folder: Path) -> None:
    from transformers import AutoModel

    from finetune.modeling.models import load_tokenizer, resolve_model_path

    folder.mkdir()
    saved = json.loads((run_folder / "retrieval.json").read_text(encoding="utf-8"))
    vectors = np.load(run_folder / "retrieval_vectors.npy")
    np.save(folder / "vectors.npy", vectors.astype(np.float32))
    (folder / "replies.json").write_text(
        json.dumps(saved["replies"], ensure_ascii=False), encoding="utf-8"
    )
    name = saved.get("encoder", generation.RETRIEVAL_ENCODER)
    AutoModel.from_pretrained(resolve_model_path(name)).save_pretrained(str(folder / "encoder"))
    load_tokenizer(name).save_pretrained(str(folder / "encoder"))


def exported_replies(
    folder: Path, prompts: list[Any], max_new_tokens: int, serve: str = "model"
) -> list[str]:
    """The export's own reply.py, run as a user without finetune-kit would, with a cap of
    `max_new_tokens`, serving `serve` ("model" or one of retrieval.SERVABLE): the export's
    checks."""
    if not prompts:
        return []
    spec = importlib.util.spec_from_file_location("_exported_reply", folder / "reply.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load(folder, max_new_tokens, serve)(prompts)
