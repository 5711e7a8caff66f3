"""The generation task's model side: a causal LM with LoRA, chat-template inputs, decoding.

A pair is encoded with the model's own chat template (user turn = prompt, assistant turn =
response); the labels are -100 on the prompt and on padding, so the loss is the response
tokens' alone. Training batches are right-padded; generation left-pads its prompts so every
row's new tokens start at the same column. `GenerationTask` is what the shared training loop
(training/loop.py) calls for this task: the batch loss and the validation loss per token.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from finetune.data.pairs import Pairs, prompt_text
from finetune.errors import UserError
from finetune.modeling.inputs import Inputs, pad_batch, padded_width
from finetune.modeling.kvcache import growing_cache
from finetune.modeling.models import (
    add_lora,
    autocast,
    check_quantization,
    disable_cpu_inference_packing,
    load_tokenizer,
    lora_targets,
    model_reference,
    pick_device,
    quantization_config,
    read_info,
    resolve_model_path,
    save_adapter,
    trained_layers,
)
from finetune.modeling.retrieval import CONSENSUS_CANDIDATES, consensus

IGNORE = -100  # the label value cross-entropy skips
RETRIEVAL_ENCODER = "minilm"  # frozen sentence encoder of retrieval (baseline and prompts)
RETRIEVAL_MAX_LENGTH = 128  # tokens of a message the retrieval encoder reads


@dataclass
class GeneratorInfo:
    """What rebuilding a saved generator needs, written as generator.json."""

    backbone: str
    quant: str
    max_length: int
    bf16: bool
    lora_targets: list[str] | str = "all-linear"
    trust_remote_code: bool = False
    # The system turn every prompt starts with (the recipe's prompt format); None: none added.
    system: str | None = None


class CausalLM(nn.Module):
    """A causal LM with LoRA as `backbone` (the training loop's LoRA parameter group)."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone

    def forward(self, **batch: torch.Tensor) -> Any:
        return self.backbone(**batch)


def conversation(prompt: Any, system: str | None = None) -> list[dict[str, str]]:
    """The turns before the reply: `system` (if given and the prompt has none), then the
    prompt (one user message, or a conversation so far)."""
    turns = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    if system and not any(t["role"] == "system" for t in turns):
        turns = [{"role": "system", "content": system}, *turns]
    return turns


# How a retrieved reply is introduced in the system turn (retrieval-augmented replies), and
# the characters of it kept (a long one is cut, so the prompt leaves room for the reply).
RETRIEVED_LEAD = "The shop's reply to a similar earlier message, to adapt to this customer:"
RETRIEVED_MAX_CHARS = 1200


def with_retrieved_reply(prompt: Any, reply: str, system: str | None = None) -> list[dict]:
    """The prompt's turns (`conversation`) with `reply`, the answer to a similar past
    message, added to the system turn (one is started when there is none)."""
    turns = conversation(prompt, system)
    if len(reply) > RETRIEVED_MAX_CHARS:
        reply = reply[:RETRIEVED_MAX_CHARS].rsplit(" ", 1)[0] + " ..."
    note = f"{RETRIEVED_LEAD}\n{reply}"
    if turns[0]["role"] == "system":
        return [{"role": "system", "content": f"{turns[0]['content']}\n\n{note}"}, *turns[1:]]
    return [{"role": "system", "content": note}, *turns]


def chat_texts(
    tokenizer: Any, prompt: Any, response: str, system: str | None = None
) -> tuple[str, str]:
    """The prompt as the template writes it up to the assistant's turn, and the rest (the
    response with the template's end-of-turn marks)."""
    if not getattr(tokenizer, "chat_template", None):
        raise UserError(
            f"The tokenizer of '{tokenizer.name_or_path}' has no chat template; the generation "
            "task needs one. Use an instruction-tuned model or set tokenizer.chat_template."
        )
    user = conversation(prompt, system)
    head = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    whole = tokenizer.apply_chat_template(
        [*user, {"role": "assistant", "content": response}], tokenize=False
    )
    if not whole.startswith(head):
        raise UserError(
            f"The chat template of '{tokenizer.name_or_path}' does not write the prompt as the "
            "start of the conversation; the response's tokens cannot be told apart."
        )
    return head, whole[len(head) :]


def encode_prompt(tokenizer: Any, prompt: Any, system: str | None = None) -> list[int]:
    head, _ = chat_texts(tokenizer, prompt, "", system)
    return tokenizer(head, add_special_tokens=False)["input_ids"]


class ChatInputs(Inputs):
    """Items are (token ids, number of prompt tokens); collated right-padded with labels."""

    kind = "chat"

    def __init__(self, tokenizer: Any, max_length: int, system: str | None = None):
        self.tokenizer, self.max_length, self.system = tokenizer, max_length, system
        self.pad_id = tokenizer.pad_token_id

    def encode_pairs(self, prompts: list[Any], responses: list[str]) -> list[tuple[list[int], int]]:
        items = []
        for row, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
            head, rest = chat_texts(self.tokenizer, prompt, response, self.system)
            ids = self.tokenizer(head, add_special_tokens=False)["input_ids"]
            answer = self.tokenizer(rest, add_special_tokens=False)["input_ids"]
            if len(ids) >= self.max_length:
                raise UserError(
                    f"Pair {row + 1}: the prompt alone is {len(ids)} tokens, max_length is "
                    f"{self.max_length}; no response token would be trained. Raise "
                    "data.max_length or shorten the prompt."
                )
            items.append(((ids + answer)[: self.max_length], len(ids)))
        return items

    def collate(self, items: list[Any], train: bool = False) -> dict[str, torch.Tensor]:
        width = padded_width([len(ids) for ids, _ in items])
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE, dtype=torch.long)
        for row, (sequence, n_prompt) in enumerate(items):
            ids[row, : len(sequence)] = torch.tensor(sequence)
            mask[row, : len(sequence)] = 1
            labels[row, n_prompt : len(sequence)] = torch.tensor(sequence[n_prompt:])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    def lengths(self, items: list[Any]) -> list[int]:
        return [len(ids) for ids, _ in items]

    def save(self, folder: Path) -> None:
        self.tokenizer.save_pretrained(str(folder))


def load_causal_lm(name: str, quant: str, bf16: bool, trust_remote_code: bool) -> nn.Module:
    """The pretrained causal LM, quantized when asked (placed by bitsandbytes then)."""
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    from finetune.modeling.models import _load_error

    hf_logging.disable_progress_bar()
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if quant != "none":
        compute_dtype = torch.bfloat16 if bf16 else torch.float32
        kwargs["quantization_config"] = quantization_config(quant, compute_dtype)
        if torch.cuda.is_available():
            kwargs["device_map"] = {"": torch.cuda.current_device()}
    try:
        model = AutoModelForCausalLM.from_pretrained(resolve_model_path(name), **kwargs)
    except (OSError, ValueError) as error:
        raise _load_error(name, error) from None
    if quant == "4bit":
        disable_cpu_inference_packing(model)
    return model


def build_generator(
    options: Any, max_length: int, bf16: bool, device: str, seed: int
) -> tuple[CausalLM, Any, GeneratorInfo]:
    """Tokenizer, causal LM (quantized if asked) and LoRA, seeded, on `device`."""
    from transformers import set_seed

    check_quantization(options.quant, device)
    tokenizer = load_tokenizer(options.name, options.trust_remote_code)
    backbone = load_causal_lm(options.name, options.quant, bf16, options.trust_remote_code)
    info = GeneratorInfo(
        backbone=model_reference(options.name),
        quant=options.quant,
        max_length=max_length,
        bf16=bf16,
        lora_targets=lora_targets(backbone.config, options.target_modules),
        trust_remote_code=options.trust_remote_code,
    )
    # LoRA on the top layers only (model.lora_layers): backpropagation stops at the lowest
    # adapted layer, so the layers below only run forward.
    layers = trained_layers(backbone.config, options.lora_layers)
    set_seed(seed)  # the LoRA initialisation is seeded too
    lora = add_lora(
        backbone,
        options.lora_r,
        options.lora_alpha,
        options.lora_dropout,
        info.lora_targets,
        layers,
    )
    model = CausalLM(lora)
    if options.quant == "none":
        model.to(device)
    return model, tokenizer, info


def save_generator(model: CausalLM, tokenizer: Any, info: GeneratorInfo, folder: Path) -> None:
    """Adapter, tokenizer and generator.json: a reload generates the same text."""
    save_adapter(model.backbone, tokenizer, info, folder, "generator")


def load_generator(folder: Path) -> tuple[CausalLM, Any, GeneratorInfo]:
    from peft import PeftModel
    from transformers import AutoTokenizer

    info = read_info(folder, "generator", GeneratorInfo)
    device = pick_device()
    check_quantization(info.quant, device)
    base = load_causal_lm(info.backbone, info.quant, info.bf16, info.trust_remote_code)
    model = CausalLM(PeftModel.from_pretrained(base, str(folder)))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    if info.quant == "none":
        model.to(device)
    return model.eval(), tokenizer, info


@dataclass
class Generated:
    texts: list[str]
    new_tokens: int
    seconds: float


@torch.no_grad()
def generate(
    model: CausalLM,
    tokenizer: Any,
    prompts: list[Any],
    max_new_tokens: int,
    batch_size: int,
    bf16: bool = False,
    sample: bool = False,
    seed: int = 0,
    system: str | None = None,
    min_new_tokens: list[int] | None = None,
    progress: str | None = None,
) -> Generated:
    """Responses to `prompts` (messages or conversations), batched and left-padded; greedy,
    or sampled with `seed`; under bf16 autocast with `bf16` (on a CPU, fast with a
    `decoding_model`). `min_new_tokens`: per prompt, how many new tokens come before its
    reply may end. `progress`: the label of a progress bar over the prompts (None: none)."""
    from finetune.modeling.inference import progress_bar

    was_training = model.training
    model.eval()
    if sample:
        torch.manual_seed(seed)
    new_tokens, start = 0, time.perf_counter()
    encoded = [encode_prompt(tokenizer, p, system) for p in prompts]
    # Prompts of similar length decode together: a batch runs until its longest reply ends,
    # and a prompt with a long retrieved reply tends to get a long reply.
    order = sorted(range(len(prompts)), key=lambda i: len(encoded[i]))
    texts = [""] * len(prompts)
    with progress_bar(progress, len(prompts)) as bar:
        for begin in range(0, len(order), batch_size):
            rows = order[begin : begin + batch_size]
            floors = None if min_new_tokens is None else [min_new_tokens[i] for i in rows]
            replies = _decode_batch(
                model, tokenizer, [encoded[i] for i in rows], max_new_tokens, sample, bf16, floors
            )
            for i, row in zip(rows, replies, strict=True):
                new_tokens += len(row)
                texts[i] = tokenizer.decode(row, skip_special_tokens=True).strip()
            bar.update(len(rows))
    model.train(was_training)
    return Generated(texts, new_tokens, time.perf_counter() - start)


# New tokens per round of a batch's decoding: between rounds, the replies that have ended
# leave the batch, instead of riding along until its longest reply ends ("Decoding replies in
# rounds" in docs/benchmarks.md).
DECODING_ROUND = 32


def _decode_batch(
    model: CausalLM,
    tokenizer: Any,
    encoded: list[list[int]],
    max_new_tokens: int,
    sample: bool,
    bf16: bool,
    floors: list[int] | None,
) -> list[list[int]]:
    """The reply tokens of one batch of encoded prompts, without the end-of-reply token.
    Decoded in rounds of DECODING_ROUND new tokens; rows whose reply has ended are dropped
    from the batch and its cache between rounds, so the rest run on a smaller batch."""
    device = next(model.parameters()).device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    ids, mask = pad_batch(encoded, pad, left=True)
    ids, mask, width = ids.to(device), mask.to(device), ids.shape[1]
    cache = growing_cache(model.backbone.config, width + max_new_tokens)
    step = max_new_tokens if cache is None else DECODING_ROUND
    alive, replies, made = list(range(len(encoded))), [[] for _ in encoded], 0
    while made < max_new_tokens:
        n = min(step, max_new_tokens - made)
        minimum = None
        if floors is not None:
            minimum = [MinimumLengths(width, [floors[i] for i in alive], tokenizer)]
        with autocast(device.type, bf16):
            out = model.backbone.generate(
                input_ids=ids, attention_mask=mask, max_new_tokens=n, do_sample=sample,
                pad_token_id=pad, eos_token_id=eos, logits_processor=minimum,
                **({} if cache is None else {"cache": cache}),
            )  # fmt: skip
        new = out[:, ids.shape[1] :]
        keep = []
        for j, row in enumerate(new.tolist()):
            ended = eos in row
            replies[alive[j]] += row[: row.index(eos)] if ended else row
            if not ended:
                keep.append(j)
        made += n
        if not keep or made >= max_new_tokens:
            break
        mask = torch.cat([mask, torch.ones_like(new)], dim=1)
        ids = out
        if len(keep) < len(alive):
            chosen = torch.tensor(keep, device=device)
            ids, mask = ids.index_select(0, chosen), mask.index_select(0, chosen)
            cache.batch_select_indices(chosen)
            alive = [alive[j] for j in keep]
    return replies


class MinimumLengths:
    """A logits processor for `generate`: each row's end-of-reply token is ruled out until the
    row has its own number of new tokens (transformers' min_new_tokens is one for the batch)."""

    def __init__(self, start: int, floors: list[int], tokenizer: Any):
        self.start, self.floors, self.eos = start, torch.tensor(floors), tokenizer.eos_token_id

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        short = self.floors.to(scores.device) > input_ids.shape[1] - self.start
        scores[short, self.eos] = -float("inf")
        return scores


def decoding_model(model: CausalLM, untuned: bool) -> CausalLM | None:
    """On a CPU, a copy of the model to decode with: the LoRA update folded into the weights
    (or left out, `untuned`), which saves two matrix products per layer, and every weight
    marked as requiring grad, which is what makes bf16 autocast cache its bf16 cast for the
    whole batch instead of casting each frozen weight again at every new token (decoding is
    under no_grad all the same; "Decoding on CPU" in docs/benchmarks.md). None where the model
    decodes as it is: on a GPU (no second copy of its weights), or quantized."""
    device = next(model.parameters()).device
    base = model.backbone.get_base_model()
    if device.type != "cpu" or getattr(base, "hf_quantizer", None) is not None:
        return None
    backbone = copy.deepcopy(model.backbone)
    plain = backbone.unload() if untuned else backbone.merge_and_unload()
    for weight in plain.parameters():
        weight.requires_grad_(True)
    return CausalLM(plain).eval()


class GenerationTask:
    """The loop's task for generation: LM loss on response tokens, validation loss per token."""

    def __init__(self, inputs: ChatInputs, batch_size: int, device: str, bf16: bool):
        self.inputs, self.batch_size, self.device, self.bf16 = inputs, batch_size, device, bf16

    def loss(self, model: nn.Module, items: list[Any], labels: torch.Tensor) -> torch.Tensor:
        batch = {k: v.to(self.device) for k, v in self.inputs.collate(items, True).items()}
        with autocast(self.device, self.bf16):
            return response_loss(model, batch)

    def weight(self, items: list[Any]) -> int:
        """The response tokens `loss` is a mean over (the loop's token-budget pieces)."""
        return sum(len(ids) - n_prompt for ids, n_prompt in items)

    @torch.no_grad()
    def figures(self, model: nn.Module, items: list[Any]) -> dict[str, float]:
        """Validation loss per response token (every token weighs the same, not every row)."""
        was_training = model.training
        model.eval()
        total = 0.0
        for begin in range(0, len(items), self.batch_size):
            batch = self.inputs.collate(items[begin : begin + self.batch_size])
            batch = {k: v.to(self.device) for k, v in batch.items()}
            with autocast(self.device, self.bf16):
                total += response_loss(model, batch, reduction="sum").item()
        model.train(was_training)
        return {"val_loss": total / max(self.weight(items), 1)}


def response_loss(model: nn.Module, batch: dict[str, torch.Tensor], reduction: str = "mean"):
    """Cross-entropy of each response token given the tokens before it (fp32). The output layer
    runs on the positions that predict a response token only: vocabulary-wide logits at the
    prompt's and the padding's positions are work and memory no loss uses (docs/benchmarks.md,
    "Reply training: logits on response tokens only")."""
    targets = batch["labels"][:, 1:]
    wanted = torch.zeros_like(batch["labels"], dtype=torch.bool)
    wanted[:, :-1] = targets != IGNORE
    inner = getattr(model, "module", model)  # under DistributedDataParallel
    head = getattr(inner, "backbone", inner).get_output_embeddings()
    # The layer gets (positions, hidden) instead of (rows, width, hidden); whatever the model
    # does to its logits afterwards (scaling, soft-capping) is per position all the same.
    hook = head.register_forward_pre_hook(lambda _, args: (args[0][wanted], *args[1:]))
    try:
        out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        hook.remove()
    return nn.functional.cross_entropy(
        out.logits.float(), targets[targets != IGNORE], reduction=reduction
    )


def sentence_encoder(name: str, device: str) -> tuple[Any, nn.Module]:
    """The frozen encoder `name` with mean pooling, and its tokenizer (retrieval)."""
    from finetune.modeling.models import TextClassifier, hidden_size_of, load_backbone

    backbone = load_backbone(name, "none", torch.float32)
    model = TextClassifier(backbone, hidden_size_of(backbone.config), 1, "mean").to(device)
    return load_tokenizer(name), model


def sentence_vectors(
    name: str, texts: list[str], batch_size: int, device: str, encoder: Any = None
) -> Any:
    """Mean-pooled vectors of `texts` from the frozen encoder `name` (retrieval baselines);
    `encoder` (from `sentence_encoder`) saves loading it again."""
    from finetune.modeling.inference import embed
    from finetune.modeling.inputs import tokenize

    tokenizer, model = encoder or sentence_encoder(name, device)
    ids = tokenize(tokenizer, texts, RETRIEVAL_MAX_LENGTH)
    return embed(model, ids, tokenizer.pad_token_id, batch_size, device, False)


@dataclass
class RetrievedReplies:
    """The reply to the most similar training message (cosine of a frozen sentence encoder's
    vectors): the `retrieval_embedding` baseline, and with retrieval-augmented replies what
    every prompt carries, so the model learns to adapt a known-good reply rather than recall
    one. A training pair gets its nearest *other* training message, as a new message would."""

    vectors: np.ndarray  # one unit row per training message
    replies: list[str]
    batch_size: int = 16
    device: str = "cpu"
    model: str = RETRIEVAL_ENCODER  # the sentence encoder: a name or folder, as model.name
    # Whether the run's prompts carry these replies (options.retrieved_reply); when not, the
    # run keeps the index for the `retrieval_embedding` baseline and to serve it.
    in_prompts: bool = True
    encoder: Any = field(default=None, repr=False)  # loaded on first use, then kept

    @classmethod
    def fit(
        cls,
        train: Pairs,
        batch_size: int,
        device: str,
        model: str = RETRIEVAL_ENCODER,
        in_prompts: bool = True,
    ) -> RetrievedReplies:
        retrieved = cls(
            np.zeros((0, 0)), list(train.responses), batch_size, device, model, in_prompts
        )
        retrieved.vectors = retrieved.unit_vectors(train.messages)
        return retrieved

    def loaded_encoder(self) -> tuple[Any, nn.Module]:
        """(tokenizer, encoder), loaded on first use and then kept."""
        if self.encoder is None:
            self.encoder = sentence_encoder(self.model, self.device)
        return self.encoder

    def unit_vectors(self, texts: list[str]) -> np.ndarray:
        """Unit-length sentence vectors of `texts` (dot products are cosines)."""
        encoder = self.loaded_encoder()
        vectors = sentence_vectors(self.model, texts, self.batch_size, self.device, encoder)
        vectors = np.asarray(vectors)
        return vectors / np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)

    def notes(self, texts: list[str]) -> list[str]:
        """A warning when the encoder's vocabulary misses much of `texts` (an English encoder
        reads most Chinese characters as [UNK], and its retrieval is then close to chance)."""
        from finetune.modeling.inputs import UNKNOWN_SHARE, tokenize, unknown_share

        tokenizer = self.loaded_encoder()[0]
        share = unknown_share(tokenizer, tokenize(tokenizer, texts[:2000], RETRIEVAL_MAX_LENGTH))
        if share < UNKNOWN_SHARE:
            return []
        return [
            f"{share:.0%} of the training messages' tokens are unknown to the retrieval "
            f"encoder `{self.model}`: its retrieval cannot read them. Set "
            "options.retrieval_model to an encoder that covers their language (for Chinese: "
            "embeddinggemma, see `finetune models`)."
        ]

    def nearest(self, messages: list[str]) -> list[str]:
        return [replies[0] for replies in self.candidates(messages, 1)]

    def served(self, messages: list[str]) -> dict[str, list[str]]:
        """Each SERVABLE method's replies to `messages`, from one encoding of them."""
        candidates = self.candidates(messages, CONSENSUS_CANDIDATES)
        nearest = [replies[0] for replies in candidates]
        return {"retrieval_embedding": nearest, "retrieval_consensus": consensus(candidates)}

    def candidates(self, messages: list[str], k: int) -> list[list[str]]:
        """The replies of the `k` training messages most similar to each message, nearest
        first (on a tie, the earlier training message)."""
        scores = self.unit_vectors(messages) @ self.vectors.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [[self.replies[i] for i in row] for row in order]

    def prompts(self, prompts: list[Any], system: str | None) -> list[Any]:
        """`prompts` with the nearest training reply in their system turn."""
        return self.with_replies(prompts, system)[0]

    def with_replies(self, prompts: list[Any], system: str | None) -> tuple[list[Any], list[str]]:
        """(`prompts` with the nearest training reply in their system turn, those replies)."""
        replies = self.nearest([prompt_text(p) for p in prompts]) if prompts else []
        shown = [with_retrieved_reply(p, r, system) for p, r in zip(prompts, replies, strict=True)]
        return shown, replies

    def training_pairs(self, train: Pairs, system: str | None) -> Pairs:
        """The training pairs, each prompt with the reply of its nearest other training
        message (leave one out: a pair never sees its own reply)."""
        scores = self.vectors @ self.vectors.T
        np.fill_diagonal(scores, -np.inf)
        replies = [self.replies[i] for i in scores.argmax(axis=1)]
        prompts = [
            with_retrieved_reply(p, r, system) for p, r in zip(train.prompts, replies, strict=True)
        ]
        return Pairs(prompts, train.responses, train.name, train.labels)

    def save(self, folder: Path) -> None:
        np.save(folder / "retrieval_vectors.npy", self.vectors.astype(np.float32))
        info = {"encoder": self.model, "replies": self.replies, "in_prompts": self.in_prompts}
        (folder / "retrieval.json").write_text(
            json.dumps(info, ensure_ascii=False), encoding="utf-8"
        )

    @classmethod
    def load(cls, folder: Path, batch_size: int, device: str) -> RetrievedReplies | None:
        """The run's retrieval index, or None for a run that kept none."""
        if not (folder / "retrieval.json").is_file():
            return None
        info = json.loads((folder / "retrieval.json").read_text(encoding="utf-8"))
        vectors = np.load(folder / "retrieval_vectors.npy")
        model = info.get("encoder", RETRIEVAL_ENCODER)
        # Older runs kept the index only when their prompts carried its replies.
        in_prompts = bool(info.get("in_prompts", True))
        return cls(vectors, info["replies"], batch_size, device, model, in_prompts)
