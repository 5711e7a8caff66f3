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

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from finetune.modeling import layersplit
from finetune.modeling.inference import embed, to_device
from finetune.modeling.inputs import Inputs, TokenBatches, tokenize
from finetune.modeling.models import (
    adapt_for_training,
    autocast,
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
    """One encoder for both towers: token ids (or cached lower-layer states) -> pooled,
    L2-normalised vector."""

    def __init__(self, backbone: nn.Module, pooling: str, scale: float = SCALE):
        super().__init__()
        self.backbone, self.pooling, self.scale = backbone, pooling, scale
        # With LoRA on the top layers only (model.lora_layers), the layers below never change:
        # queries and items enter training and every evaluation as their cached states.
        self.first_trained_layer = 0
        # An optional per-item prior (e.g. log(1 + training likes)) added to every score with
        # a learned weight: the collaborative signal where the log has one, zero for an item
        # nobody interacted with (whose score is then its text's alone).
        self.prior_weight = nn.Parameter(torch.ones(()))
        self.register_buffer("item_prior", None, persistent=False)

    def set_item_prior(self, prior: np.ndarray | None) -> None:
        device = self.prior_weight.device
        self.item_prior = None if prior is None else torch.as_tensor(prior, device=device).float()

    def offsets(self, items: torch.Tensor | None = None) -> torch.Tensor | float:
        """The prior's share of the scores of `items` (catalogue positions; None: all)."""
        if self.item_prior is None:
            return 0.0
        prior = self.item_prior if items is None else self.item_prior[items]
        return self.prior_weight * prior

    @torch.no_grad()
    def catalogue_offsets(self) -> np.ndarray | float:
        offsets = self.offsets()
        return offsets.float().cpu().numpy() if isinstance(offsets, torch.Tensor) else 0.0

    def embed(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if states is None:
            last = self.backbone(input_ids=input_ids, attention_mask=attention_mask)
            last = last.last_hidden_state
        else:
            first = self.first_trained_layer
            last = layersplit.upper_states(self.backbone, first, states, attention_mask)
        pooled = pool(last, attention_mask, self.pooling).float()
        return nn.functional.normalize(pooled, dim=-1)

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.embed(input_ids, attention_mask, states)


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

    tokenizer, backbone, pooling = load_for_lora(options, bf16)
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
    backbone, layers = adapt_for_training(
        backbone, options, info.lora_targets, seed, gradient_checkpointing
    )
    model = TwoTower(backbone, pooling)
    model.first_trained_layer = layers[0] if layers else 0
    if options.quant == "none":  # a quantized backbone is placed by bitsandbytes already
        model.to(device)
    return model, tokenizer, info


def save_two_tower(model: TwoTower, tokenizer: Any, info: RankerInfo, folder: Path) -> None:
    save_adapter(model.backbone, tokenizer, info, folder, "ranker")


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
    """Texts to token ids (each tower its own length) and token ids to vectors.

    After `cache`, the towers' inputs are row numbers into the lower layers' cached states
    (computed once), and vectors, scores and training batches run the top layers only."""

    def __init__(self, tokenizer: Any, batch_size: int, device: str, bf16: bool):
        self.tokenizer, self.batch_size, self.device, self.bf16 = (
            tokenizer,
            batch_size,
            device,
            bf16,
        )
        self.inputs: Inputs = TokenBatches(tokenizer.pad_token_id)

    def tokens(self, texts: list[str], max_length: int) -> list[list[int]]:
        return tokenize(self.tokenizer, texts, max_length)

    def cache(self, model: TwoTower, groups: list[list[list[int]]]) -> list[list[Any]]:
        """The groups' items as cached lower-layer states when only the top layers train
        (each group's items become row numbers); unchanged when every layer trains or the
        split model does not compute what the whole model does."""
        from finetune.modeling.layercache import build_cache

        if not model.first_trained_layer:
            return groups
        items = [item for group in groups for item in group]
        width = model.backbone.get_base_model().config.hidden_size
        cached = build_cache(
            model, items, self.inputs, self.batch_size, self.device, self.bf16, width
        )
        rows = list(range(min(4, len(items))))
        whole = self.vectors(model, [items[i] for i in rows])
        before, self.inputs = self.inputs, cached
        if not np.allclose(whole, self.vectors(model, rows), atol=0.05 if self.bf16 else 1e-3):
            self.inputs = before
            print("model.lora_layers: the two towers cannot run from a middle layer here.")
            return groups
        out, start = [], 0
        for group in groups:
            out.append(list(range(start, start + len(group))))
            start += len(group)
        return out

    def lengths(self, items: list[Any]) -> list[int]:
        return list(self.inputs.lengths(items))

    def vectors(self, model: TwoTower, ids: list[Any]) -> np.ndarray:
        """Normalised vectors, in eval mode (no dropout), batched by length."""
        if not len(ids):
            return np.zeros((0, 0), dtype=np.float32)
        return embed(model, ids, self.inputs, self.batch_size, self.device, self.bf16)

    def scores(
        self, model: TwoTower, queries: list[Any], items: np.ndarray | list[Any]
    ) -> np.ndarray:
        """Query x item scores (cosine x scale; without the items' prior, which
        `TwoTower.catalogue_offsets` adds); `items` as inputs or precomputed vectors."""
        item_vectors = items if isinstance(items, np.ndarray) else self.vectors(model, items)
        return model.scale * self.vectors(model, queries) @ item_vectors.T

    def batch(self, model: TwoTower, ids: list[Any]) -> torch.Tensor:
        """Vectors with gradients (training)."""
        batch = to_device(self.inputs.collate(ids), self.device)
        with autocast(self.device, self.bf16):
            return model(**batch).float()


# Candidate weights of the item prior, tried on the training queries before training starts.
PRIOR_WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def fit_prior_weight(scores: np.ndarray, prior: np.ndarray, positive: np.ndarray) -> float:
    """The prior weight (of PRIOR_WEIGHTS) with the lowest full-catalogue softmax loss of the
    training queries' positives, given their text scores (queries x catalogue): where
    training starts, so that epoch 0 already uses what the log knows about items."""
    rows = np.arange(len(positive))
    losses = []
    for weight in PRIOR_WEIGHTS:
        logits = scores + weight * prior[None, :]
        top = logits.max(1, keepdims=True)
        log_norm = top[:, 0] + np.log(np.exp(logits - top).sum(1))
        losses.append(float(np.mean(log_norm - logits[rows, positive])))
    return PRIOR_WEIGHTS[int(np.argmin(losses))]


@dataclass
class Scored:
    """One evaluation of the towers: the catalogue's item vectors and the validation queries'
    scores against them (and the figures measured from those scores)."""

    item_vectors: np.ndarray
    scores: np.ndarray
    figures: dict[str, float] = field(default_factory=dict)


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
        self.scored: list[Scored] = []
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
        towers = getattr(model, "module", model)  # unwrapped from data parallel
        scale, offsets = towers.scale, towers.offsets(candidates)
        offsets = offsets if isinstance(offsets, torch.Tensor) else torch.zeros(len(candidates))
        offsets = offsets.to(queries.device)
        if self.kind == "bpr":
            pos = scale * (queries * vectors[where[: len(rows)]]).sum(-1) + offsets[: len(rows)]
            neg = scale * (queries * vectors[where[len(rows) :]]).sum(-1) + offsets[len(rows) :]
            return -nn.functional.logsigmoid(pos - neg).mean()
        logits = scale * queries @ vectors[where].T + offsets[None, :]
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

    def start_from(self, model: nn.Module, frozen: Scored) -> None:
        """The towers as they are now (before training), already scored: `figures` reuses
        `frozen` instead of encoding the catalogue again while the trainable weights are
        still these (epoch 0: LoRA's B matrices start at zero)."""
        self._initial = {n: p.detach().clone() for n, p in _trainable(model).items()}
        self._frozen = frozen

    def _unchanged(self, model: nn.Module) -> bool:
        initial = getattr(self, "_initial", None)
        trainable = _trainable(model)
        return (
            initial is not None
            and initial.keys() == trainable.keys()
            and all(torch.equal(p, initial[n]) for n, p in trainable.items())
        )

    @torch.no_grad()
    def figures(self, model: nn.Module, items: list[Any]) -> dict[str, float]:
        """The validation queries scored against the whole catalogue (the item vectors
        computed once per call), then measured. Each call's vectors and scores are kept in
        `scored`, in call order, so the caller reuses the kept epoch's instead of encoding the
        catalogue again."""
        if self._unchanged(model):
            scored = Scored(self._frozen.item_vectors, self._frozen.scores)
        else:
            was_training = model.training
            model.eval()
            vectors = self.encoder.vectors(model, self.items)
            scores = self.encoder.scores(model, self.validation.queries, vectors)
            towers = getattr(model, "module", model)
            scored = Scored(vectors, scores + towers.catalogue_offsets())
            model.train(was_training)
        scored.figures = self.validation.measure(scored.scores)
        self.scored.append(scored)
        return scored.figures

    def kept(self, history: list[dict[str, Any]], best_epoch: float | None) -> Scored | None:
        """The evaluation of the kept epoch (None when the calls and the loop's history do not
        line up, e.g. after a resume: then the caller encodes again)."""
        validated = [r["epoch"] for r in history if self.select_metric_key in r]
        if len(validated) != len(self.scored) or best_epoch not in validated:
            return None
        return self.scored[validated.index(best_epoch)]

    @property
    def select_metric_key(self) -> str:
        return f"val_{self.select_metric}"


def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p for n, p in getattr(model, "module", model).named_parameters() if p.requires_grad}
