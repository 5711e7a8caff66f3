"""The ranking task's model side: a two-tower encoder and the loop's `RankingTask`.

Queries (a user's history, a message) and items are encoded apart by the same LoRA-tuned
encoder (mean pooled, L2-normalised) and scored by a scaled dot product, so a catalogue's item
vectors are computed once and scoring every item for a query is one matrix product.

`RankingTask` is what the shared training loop (training/loop.py) calls for this task:

- loss `softmax` (listwise): each query's positive against the batch's other positives (in-batch
  negatives) and `negatives` items sampled uniformly from the catalogue, with the logQ
  correction (Yi et al. 2019): a candidate's logit loses the log of how often it is drawn as a
  candidate (in-batch: its share of the training positives times the batch size; sampled:
  negatives / catalogue size), so popular items are not pushed down merely for being in
  every batch. A candidate that is the query's own positive is masked out.
- loss `bpr` (pairwise): -log sigmoid(s(q, positive) - s(q, sampled negative)).
- validation: NDCG@k over the whole catalogue on the validation queries (their relevant items
  ranked against every item they had not rated), which picks the kept epoch; epoch 0 (the
  frozen encoder) is a candidate like every other.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from finetune.modeling.inference import embed
from finetune.modeling.inputs import Inputs, pad_batch, tokenize
from finetune.modeling.models import (
    add_lora,
    autocast,
    default_pooling,
    enable_gradient_checkpointing,
    load_backbone,
    load_tokenizer,
    lora_targets,
    model_reference,
    pick_device,
    pool,
    read_info,
)

if TYPE_CHECKING:
    from finetune.config import ModelConfig

# Cosine similarity x SCALE is the logit (a softmax temperature of 0.05, as in contrastive
# sentence-encoder training): cosines alone span too little for a sharp softmax.
SCALE = 20.0


@dataclass
class RankerInfo:
    """What rebuilding a saved two-tower ranker needs, written as ranker.json."""

    backbone: str
    pooling: str
    quant: str
    max_length: int  # query tokens
    item_max_length: int
    bf16: bool
    lora_targets: list[str] | str = "all-linear"
    trust_remote_code: bool = False
    scale: float = SCALE


class TwoTower(nn.Module):
    """One encoder for both towers: token ids -> pooled, L2-normalised vector."""

    def __init__(self, backbone: nn.Module, pooling: str, scale: float = SCALE):
        super().__init__()
        self.backbone, self.pooling, self.scale = backbone, pooling, scale
        self.first_trained_layer = 0  # no layer cache: queries and items share every layer

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        states = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
        pooled = pool(states.last_hidden_state, attention_mask, self.pooling).float()
        return nn.functional.normalize(pooled, dim=-1)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.embed(input_ids, attention_mask)


def build_two_tower(
    options: ModelConfig,
    max_length: int,
    item_max_length: int,
    bf16: bool,
    device: str,
    seed: int,
    gradient_checkpointing: bool = False,
) -> tuple[TwoTower, Any, RankerInfo]:
    """Tokenizer, backbone (quantized if asked) and LoRA, seeded, on `device`: the same
    building steps as a classifier's, without a head."""
    from transformers import set_seed

    tokenizer = load_tokenizer(options.name, options.trust_remote_code)
    compute_dtype = torch.bfloat16 if bf16 else torch.float32
    backbone = load_backbone(options.name, options.quant, compute_dtype, options.trust_remote_code)
    pooling = options.pooling
    if pooling == "auto":
        pooling = default_pooling(options.name, backbone.config)
    info = RankerInfo(
        backbone=model_reference(options.name),
        pooling=pooling,
        quant=options.quant,
        max_length=max_length,
        item_max_length=item_max_length,
        bf16=bf16,
        lora_targets=lora_targets(backbone.config, options.target_modules),
        trust_remote_code=options.trust_remote_code,
    )
    if gradient_checkpointing:
        enable_gradient_checkpointing(backbone)
    set_seed(seed)  # the LoRA initialisation is seeded too
    backbone = add_lora(
        backbone, options.lora_r, options.lora_alpha, options.lora_dropout, info.lora_targets
    )
    model = TwoTower(backbone, pooling)
    if options.quant == "none":  # a quantized backbone is placed by bitsandbytes already
        model.to(device)
    return model, tokenizer, info


def save_two_tower(model: TwoTower, tokenizer: Any, info: RankerInfo, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    model.backbone.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    (folder / "ranker.json").write_text(json.dumps(asdict(info), indent=2))


def load_two_tower(folder: Path) -> tuple[TwoTower, Any, RankerInfo]:
    from peft import PeftModel
    from transformers import AutoTokenizer

    from finetune.modeling.models import check_quantization

    info = read_info(folder, "ranker", RankerInfo)
    device = pick_device()
    check_quantization(info.quant, device)
    compute_dtype = torch.bfloat16 if info.bf16 else torch.float32
    backbone = load_backbone(info.backbone, info.quant, compute_dtype, info.trust_remote_code)
    model = TwoTower(PeftModel.from_pretrained(backbone, str(folder)), info.pooling, info.scale)
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    tokenizer.padding_side = "right"
    if info.quant == "none":
        model.to(device)
    return model.eval(), tokenizer, info


class Encoder:
    """Texts to token ids (each tower its own length) and token ids to vectors."""

    def __init__(self, tokenizer: Any, batch_size: int, device: str, bf16: bool):
        self.tokenizer, self.batch_size, self.device, self.bf16 = (
            tokenizer,
            batch_size,
            device,
            bf16,
        )
        self.pad_id = tokenizer.pad_token_id

    def tokens(self, texts: list[str], max_length: int) -> list[list[int]]:
        return tokenize(self.tokenizer, texts, max_length)

    def vectors(self, model: TwoTower, ids: list[list[int]]) -> np.ndarray:
        """Normalised vectors, in eval mode (no dropout), batched by length."""
        if not ids:
            return np.zeros((0, 0), dtype=np.float32)
        return embed(model, ids, self.pad_id, self.batch_size, self.device, self.bf16)

    def scores(
        self, model: TwoTower, queries: list[list[int]], items: np.ndarray | list[list[int]]
    ) -> np.ndarray:
        """Query x item scores (cosine x scale); `items` as token ids or precomputed vectors."""
        item_vectors = items if isinstance(items, np.ndarray) else self.vectors(model, items)
        return model.scale * self.vectors(model, queries) @ item_vectors.T

    def batch(self, model: TwoTower, ids: list[list[int]]) -> torch.Tensor:
        """Vectors with gradients (training)."""
        input_ids, mask = pad_batch(ids, self.pad_id)
        with autocast(self.device, self.bf16):
            return model(input_ids.to(self.device), mask.to(self.device)).float()


@dataclass
class Validation:
    """The queries that choose the kept epoch: their token ids, and `measure`, which turns
    their query x catalogue score matrix into figures (`val_loss` and `val_<select_metric>`
    among them; the caller's ranking metrics: this layer has none of its own)."""

    queries: list[list[int]]
    measure: Callable[[np.ndarray], dict[str, float]]


class QueryInputs(Inputs):
    """The loop's items are query positions; their lengths group batches by length."""

    kind = "ranking"

    def __init__(self, lengths: list[int]):
        self._lengths = lengths

    def lengths(self, items: list[Any]) -> list[int]:
        return [self._lengths[i] for i in items]


class RankingTask:
    """The loop's task for ranking (see the module docstring)."""

    def __init__(
        self,
        encoder: Encoder,
        queries: list[list[int]],
        positives: np.ndarray,
        items: list[list[int]],
        validation: Validation,
        loss: str = "softmax",
        negatives: int = 64,
        popularity_correction: float = 1.0,
        k: int = 10,
    ):
        if loss not in ("softmax", "bpr"):
            raise ValueError(f"ranking loss must be softmax or bpr, got {loss!r}")
        self.encoder, self.queries, self.positives = encoder, queries, positives
        self.items, self.validation = items, validation
        self.kind, self.negatives, self.k = loss, negatives, k
        self.select_metric = f"ndcg@{k}"  # what picks the kept epoch (higher is better)
        counts = np.bincount(positives, minlength=len(items)).astype(np.float64)
        share = np.maximum(counts, 0.5) / counts.sum()  # never log(0) for an unseen item
        self.log_share = torch.as_tensor(popularity_correction * np.log(share), dtype=torch.float32)
        self.correction = popularity_correction

    def _draw(self, n: int, device: torch.device) -> torch.Tensor:
        # torch's global generator: seeded with the run, restored by a resume.
        return torch.randint(0, len(self.items), (n,)).to(device)

    def loss(self, model: nn.Module, items: list[Any], labels: torch.Tensor) -> torch.Tensor:
        rows = list(items)
        queries = self.encoder.batch(model, [self.queries[i] for i in rows])
        positive = torch.as_tensor(self.positives[rows], device=queries.device)
        sampled = self._draw(
            self.negatives if self.kind == "softmax" else len(rows), queries.device
        )
        candidates = torch.cat([positive, sampled])
        unique, where = torch.unique(candidates, return_inverse=True)
        vectors = self.encoder.batch(model, [self.items[i] for i in unique.tolist()])
        scale = _scale(model)
        if self.kind == "bpr":
            pos = (queries * vectors[where[: len(rows)]]).sum(-1)
            neg = (queries * vectors[where[len(rows) :]]).sum(-1)
            return -nn.functional.logsigmoid(scale * (pos - neg)).mean()
        logits = scale * queries @ vectors[where].T
        n_batch = len(rows)
        # logQ: in-batch candidates are drawn in proportion to their share of the positives.
        in_batch = self.log_share.to(logits.device)[positive] + float(np.log(n_batch))
        uniform = torch.full((len(sampled),), float(np.log(len(sampled) / len(self.items))))
        correction = torch.cat([in_batch, self.correction * uniform.to(logits.device)])
        logits = logits - correction[None, :]
        # The query's own positive elsewhere in the candidates is not a negative.
        same = positive[:, None] == candidates[None, :]
        same[:, :n_batch] &= ~torch.eye(n_batch, dtype=torch.bool, device=same.device)
        logits = logits.masked_fill(same, float("-inf"))
        target = torch.arange(n_batch, device=logits.device)
        return nn.functional.cross_entropy(logits, target)

    @torch.no_grad()
    def figures(self, model: nn.Module, items: list[Any]) -> dict[str, float]:
        """The validation queries scored against the whole catalogue, then measured."""
        was_training = model.training
        model.eval()
        scores = self.encoder.scores(model, self.validation.queries, self.items)
        model.train(was_training)
        return self.validation.measure(scores)


def _scale(model: nn.Module) -> float:
    return getattr(model, "module", model).scale  # unwrapped from data parallel
