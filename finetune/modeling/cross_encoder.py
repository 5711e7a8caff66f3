"""The ranking task's cross-encoder: query and candidate read together, one logit per pair.

Where the two-tower ranker (ranking.py) encodes queries and items apart, a cross-encoder reads
"query [SEP] candidate" as the tokenizer's text pair, so every query token attends to every
candidate token. It costs one forward pass per (query, candidate) pair instead of one per text,
so it reranks a short list (a retriever's top candidates, a handful of replies), not a
catalogue. The model is the LoRA-tuned encoder (loaded by `load_for_lora`, like every encoder
task), pooled, and a linear scorer to one logit. An optional per-candidate offset (a
collaborative score such as a matrix-factorisation prediction, 0 where there is none) is added
to the logit with a learned weight, so the text learns what the offset leaves.

`CrossEncoderTask` is what the shared training loop (training/loop.py) calls. Its training
items are groups (`Group`): one query, its candidates, which of them is the positive:

- loss `listwise` (softmax): cross-entropy of the positive against the group's candidates;
- loss `pairwise` (BPR): -log sigmoid(s(positive) - s(negative)) over the group's negatives.

Groups of different sizes are padded in a batch; padded places never enter a loss. Each
epoch's validation groups are scored and handed to the caller's `measure` (a ranking metric:
the evaluation layer's, this layer has none), whose `val_<select_metric>` picks the kept
epoch. The scorer starts at zero, so epoch 0 (a candidate like elsewhere in the engine) ranks
by the offsets alone (or by the metric's seeded tie-break where there are none).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from finetune.modeling.inference import length_sorted_batches, to_device
from finetune.modeling.inputs import Inputs, padded_width
from finetune.modeling.models import (
    adapt_for_training,
    autocast,
    check_quantization,
    hidden_size_of,
    load_backbone,
    load_for_lora,
    lora_targets,
    model_reference,
    pick_device,
    pool,
    read_info,
    save_adapter,
)

if TYPE_CHECKING:
    from finetune.config import ModelConfig

LOSSES = ("listwise", "pairwise")
SCORER_FILE = "scorer.safetensors"


@dataclass
class CrossEncoderInfo:
    """What rebuilding a saved cross-encoder needs, written as cross_encoder.json."""

    backbone: str
    pooling: str
    quant: str
    hidden_size: int
    max_length: int  # tokens of a query-candidate pair
    bf16: bool
    lora_targets: list[str] | str = "all-linear"
    trust_remote_code: bool = False


@dataclass
class Group:
    """One query, its candidates (texts), the position of its positive among them, and an
    optional offset per candidate (added to its logit; None: no offsets)."""

    query: str
    candidates: list[str]
    positive: int = 0
    offsets: Sequence[float] | None = None


class CrossEncoder(nn.Module):
    """Backbone over a text pair -> pooled vector -> linear scorer -> one logit (+ offset)."""

    def __init__(self, backbone: nn.Module, hidden_size: int, pooling: str, info: Any = None):
        super().__init__()
        self.backbone, self.pooling, self.info = backbone, pooling, info
        self.scorer = nn.Linear(hidden_size, 1)
        nn.init.zeros_(self.scorer.weight)  # epoch 0 ranks by the offsets alone
        nn.init.zeros_(self.scorer.bias)
        self.offset_weight = nn.Parameter(torch.ones(()))
        self.first_trained_layer = 0  # no layer cache: every pair is a new text

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        offsets: torch.Tensor | None = None,
    ) -> torch.Tensor:
        extra = {} if token_type_ids is None else {"token_type_ids": token_type_ids}
        out = self.backbone(input_ids=input_ids, attention_mask=attention_mask, **extra)
        pooled = pool(out.last_hidden_state, attention_mask, self.pooling)
        # The scorer in fp32 even under bf16 autocast: bf16 rounds logits to 2-3 digits, which
        # ties candidates whose scores differ in the third.
        with torch.autocast(device_type=pooled.device.type, enabled=False):
            logits = self.scorer(pooled.float().to(self.scorer.weight.dtype))[:, 0].float()
            if offsets is not None:
                logits = logits + self.offset_weight * offsets.float()
        return logits


def build_cross_encoder(
    options: ModelConfig,
    max_length: int,
    bf16: bool,
    device: str,
    seed: int,
    gradient_checkpointing: bool = False,
) -> tuple[CrossEncoder, Any]:
    """Tokenizer, backbone (quantized if asked), LoRA and a zero scorer, seeded, on `device`."""

    tokenizer, backbone, pooling = load_for_lora(options, bf16)
    info = CrossEncoderInfo(
        backbone=model_reference(options.name),
        pooling=pooling,
        quant=options.quant,
        hidden_size=hidden_size_of(backbone.config),
        max_length=max_length,
        bf16=bf16,
        lora_targets=lora_targets(backbone.config, options.target_modules),
        trust_remote_code=options.trust_remote_code,
    )
    backbone, _ = adapt_for_training(
        backbone, options, info.lora_targets, seed, gradient_checkpointing
    )
    model = CrossEncoder(backbone, info.hidden_size, pooling, info)
    _place(model, options.quant, device)
    return model, tokenizer


def _place(model: CrossEncoder, quant: str, device: str) -> None:
    # A quantized backbone is placed by bitsandbytes already; moving it again is not allowed.
    if quant == "none":
        model.to(device)
    else:
        model.scorer.to(device)
        model.offset_weight.data = model.offset_weight.data.to(device)


def save_cross_encoder(model: CrossEncoder, tokenizer: Any, folder: Path) -> None:
    """Adapter, tokenizer and cross_encoder.json (the engine's one writer), and the scorer."""
    from safetensors.torch import save_file

    save_adapter(model.backbone, tokenizer, model.info, folder, "cross_encoder")
    tensors = {f"scorer.{k}": v for k, v in model.scorer.state_dict().items()}
    tensors["offset_weight"] = model.offset_weight.detach().reshape(1)
    save_file({k: v.cpu().contiguous() for k, v in tensors.items()}, str(folder / SCORER_FILE))


def load_cross_encoder(folder: Path) -> tuple[CrossEncoder, Any]:
    """A saved cross-encoder, in eval mode: it scores what the trained one did."""
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoTokenizer

    info = read_info(folder, "cross_encoder", CrossEncoderInfo)
    device = pick_device()
    check_quantization(info.quant, device)
    compute_dtype = torch.bfloat16 if info.bf16 else torch.float32
    backbone = load_backbone(info.backbone, info.quant, compute_dtype, info.trust_remote_code)
    backbone = PeftModel.from_pretrained(backbone, str(folder))
    model = CrossEncoder(backbone, info.hidden_size, info.pooling, info)
    saved = load_file(str(folder / SCORER_FILE))
    model.scorer.load_state_dict({k[len("scorer.") :]: v for k, v in saved.items() if "." in k})
    with torch.no_grad():
        model.offset_weight.copy_(saved["offset_weight"][0])
    _place(model, info.quant, device)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.padding_side = "right"
    return model.eval(), tokenizer


# A pair's candidate keeps its full length while the query keeps at least this share of the
# pair's tokens; a longer candidate is cut too (the longer of the two first).
QUERY_SHARE = 0.25


def pair_tokens(
    tokenizer: Any, queries: list[str], candidates: list[str], max_length: int
) -> list[tuple[list[int], list[int] | None]]:
    """(input ids, token type ids or None) of each "query [SEP] candidate" pair, at most
    `max_length` tokens: the query is truncated first."""
    lengths = [len(ids) for ids in tokenizer(candidates, add_special_tokens=False)["input_ids"]]
    room = max_length - tokenizer.num_special_tokens_to_add(pair=True)
    fits = [n <= room - int(QUERY_SHARE * room) for n in lengths]
    out: list[Any] = [None] * len(queries)
    for strategy, keep in (("only_first", True), ("longest_first", False)):
        rows = [i for i, f in enumerate(fits) if f is keep]
        if not rows:
            continue
        encoded = tokenizer(
            [queries[i] for i in rows],
            [candidates[i] for i in rows],
            truncation=strategy,
            max_length=max_length,
        )
        types = encoded.get("token_type_ids")
        for n, row in enumerate(rows):
            out[row] = (encoded["input_ids"][n], None if types is None else types[n])
    return out


class PairBatches(Inputs):
    """(ids, token types) pairs, right-padded to the batch's `padded_width`."""

    kind = "pairs"

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def collate(self, items: list[Any], train: bool = False) -> dict[str, torch.Tensor]:
        width = padded_width([len(ids) for ids, _ in items])
        ids = torch.full((len(items), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(items), width), dtype=torch.long)
        types = torch.zeros((len(items), width), dtype=torch.long)
        for row, (sequence, type_ids) in enumerate(items):
            ids[row, : len(sequence)] = torch.tensor(sequence)
            mask[row, : len(sequence)] = 1
            if type_ids is not None:
                types[row, : len(sequence)] = torch.tensor(type_ids)
        batch = {"input_ids": ids, "attention_mask": mask}
        if items and items[0][1] is not None:
            batch["token_type_ids"] = types
        return batch

    def lengths(self, items: list[Any]) -> list[int]:
        return [len(ids) for ids, _ in items]


@dataclass
class EncodedGroups:
    """Groups as token ids: each group's pairs, positive position and offsets (0: none)."""

    pairs: list[list[Any]]
    positives: np.ndarray
    offsets: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.pairs)


def encode_groups(tokenizer: Any, groups: Sequence[Group], max_length: int) -> EncodedGroups:
    """Every group's pairs tokenized in one call (the tokenizer batches them)."""
    queries = [g.query for g in groups for _ in g.candidates]
    candidates = [c for g in groups for c in g.candidates]
    tokens = pair_tokens(tokenizer, queries, candidates, max_length)
    pairs, start = [], 0
    for group in groups:
        pairs.append(tokens[start : start + len(group.candidates)])
        start += len(group.candidates)
    offsets = [
        np.zeros(len(g.candidates), dtype=np.float32)
        if g.offsets is None
        else np.asarray(g.offsets, dtype=np.float32)
        for g in groups
    ]
    return EncodedGroups(pairs, np.array([g.positive for g in groups], dtype=np.int64), offsets)


class GroupInputs(Inputs):
    """The loop's items are group positions; a group's length is its longest pair's, so
    length-grouped batches hold groups of similar length."""

    kind = "ranking"

    def __init__(self, groups: EncodedGroups):
        self._lengths = [max(len(ids) for ids, _ in pairs) for pairs in groups.pairs]

    def lengths(self, items: list[Any]) -> list[int]:
        return [self._lengths[i] for i in items]


@torch.inference_mode()
def score_pairs(
    model: CrossEncoder,
    pairs: list[Any],
    offsets: np.ndarray,
    batch_size: int,
    device: str,
    bf16: bool,
) -> np.ndarray:
    """Each pair's logit (+ its weighted offset), in eval mode, longest pairs first in batches
    of `batch_size` pairs (and the inference token budget), in the caller's order."""
    was_training = model.training
    model.eval()
    inputs = PairBatches(0)
    scores = np.zeros(len(pairs), dtype=np.float32)
    for rows, batch in length_sorted_batches(pairs, inputs.lengths(pairs), batch_size):
        tensors = to_device(inputs.collate(batch), device)
        tensors["offsets"] = torch.as_tensor(offsets[rows], device=device)
        with autocast(device, bf16):
            scores[rows] = model(**tensors).float().cpu().numpy()
    model.train(was_training)
    return scores


def score_groups(
    model: CrossEncoder, groups: EncodedGroups, batch_size: int, device: str, bf16: bool
) -> list[np.ndarray]:
    """Each group's candidate scores (all groups' pairs batched together)."""
    pairs = [pair for group in groups.pairs for pair in group]
    offsets = np.concatenate(groups.offsets) if len(groups) else np.zeros(0, np.float32)
    flat = score_pairs(model, pairs, offsets, batch_size, device, bf16)
    bounds = np.cumsum([0] + [len(group) for group in groups.pairs])
    return [flat[a:b] for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def rerank(
    model: CrossEncoder,
    tokenizer: Any,
    queries: list[str],
    candidates: list[list[str]],
    offsets: list[Sequence[float]] | None = None,
    batch_size: int = 64,
) -> list[np.ndarray]:
    """Each query's candidates' scores (higher ranks first; `np.argsort(-s)` orders them),
    with each candidate's offset added (weighted as trained) where `offsets` are given."""
    if len(queries) != len(candidates):
        raise ValueError(f"{len(queries)} queries but {len(candidates)} candidate lists")
    groups = [
        Group(q, list(c), 0, None if offsets is None else offsets[i])
        for i, (q, c) in enumerate(zip(queries, candidates, strict=True))
    ]
    encoded = encode_groups(tokenizer, groups, model.info.max_length)
    device = str(model.scorer.weight.device.type)
    return score_groups(model, encoded, batch_size, device, model.info.bf16)


# Turns the validation groups' scores (one array per group) and their positives' positions into
# figures: `val_loss` and `val_<select_metric>` among them (the caller's ranking metric).
GroupMeasure = Callable[[list[np.ndarray], np.ndarray], dict[str, float]]


def padded_scores(
    model: nn.Module, groups: EncodedGroups, items: list[int], device: str, bf16: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The groups' logits with gradients, as (groups x most candidates), and the mask of real
    candidates (a padded place holds -inf and is False)."""
    pairs = [pair for i in items for pair in groups.pairs[i]]
    batch = to_device(PairBatches(0).collate(pairs, train=True), device)
    batch["offsets"] = torch.as_tensor(np.concatenate([groups.offsets[i] for i in items]))
    batch["offsets"] = batch["offsets"].to(device)
    with autocast(device, bf16):
        flat = model(**batch).float()
    sizes = torch.as_tensor([len(groups.pairs[i]) for i in items], device=flat.device)
    mask = torch.arange(int(sizes.max()), device=flat.device)[None, :] < sizes[:, None]
    logits = torch.full(mask.shape, float("-inf"), device=flat.device)
    return logits.masked_scatter(mask, flat), mask


@dataclass
class CrossEncoderTask:
    """The loop's task for cross-encoder ranking (see the module docstring)."""

    train: EncodedGroups
    validation: EncodedGroups
    measure: GroupMeasure
    device: str
    bf16: bool
    loss_kind: str = "listwise"
    select_metric: str = "ndcg@10"  # a `val_` figure of `measure`, higher is better
    batch_size: int = 64  # pairs per scoring batch
    scored: list[list[np.ndarray]] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.loss_kind not in LOSSES:
            raise ValueError(f"cross-encoder loss must be one of {LOSSES}, got {self.loss_kind!r}")

    def loss(self, model: nn.Module, items: list[Any], labels: torch.Tensor) -> torch.Tensor:
        items = list(items)
        logits, mask = padded_scores(model, self.train, items, self.device, self.bf16)
        positive = torch.as_tensor(self.train.positives[items], device=logits.device)
        if self.loss_kind == "listwise":
            return nn.functional.cross_entropy(logits, positive)
        rows = torch.arange(len(items), device=logits.device)
        negative = mask.clone()
        negative[rows, positive] = False
        margins = logits[rows, positive][:, None] - logits
        # BPR over every (positive, real negative) pair of the batch; padded places never count.
        return -nn.functional.logsigmoid(margins[negative]).mean()

    @torch.no_grad()
    def figures(self, model: nn.Module, items: list[Any]) -> dict[str, float]:
        """The validation groups scored and measured; each call's scores are kept in
        `scored`, in call order, so the kept epoch's need no second pass."""
        scores = score_groups(
            getattr(model, "module", model),
            self.validation,
            self.batch_size,
            self.device,
            self.bf16,
        )
        self.scored.append(scores)
        return self.measure(scores, self.validation.positives)

    def kept(
        self, model: nn.Module, history: list[dict[str, Any]], best_epoch: float | None
    ) -> list[np.ndarray]:
        """The kept epoch's validation scores: the call's own when the calls line up with the
        loop's history, else (a resumed run) scored again by `model`, which holds the kept
        weights once the loop has finished."""
        key = f"val_{self.select_metric}"
        validated = [r["epoch"] for r in history if key in r]
        if len(validated) == len(self.scored) and best_epoch in validated:
            return self.scored[validated.index(best_epoch)]
        return score_groups(model, self.validation, self.batch_size, self.device, self.bf16)
