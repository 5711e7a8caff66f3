"""The training loop: LoRA + head, length-grouped batches, bf16 autocast, best epoch kept.

It sees only items and their `Inputs` (modeling/inputs.py), so texts and images train the same
way. The validation figures that pick the kept epoch are the caller's (`fit(validation_figures=)`).

A plain loop on `accelerate` rather than `Trainer`: only the LoRA weights and the head train,
so the best epoch is kept as an in-memory copy of those few tensors instead of full checkpoints
on disk, and the head can have its own learning rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Sampler

from finetune.config import TrainConfig
from finetune.errors import UserError
from finetune.modeling.heap import release_free_heap
from finetune.modeling.inference import predict_proba, to_device
from finetune.modeling.inputs import Inputs, batches_of
from finetune.modeling.layercache import cache_inputs
from finetune.modeling.models import TextClassifier, autocast
from finetune.training.checkpoint import Checkpoints, check_tensors, restore_rng, rng_state

# Steps between handing freed heap pages back to the system (modeling/heap.py).
RELEASE_EVERY = 10


def split_by_tokens(lengths: list[int] | None, budget: int | None) -> list[list[int]] | None:
    """A batch's positions in pieces of at most `budget` padded tokens (rows x longest row), or
    None when the whole batch fits (or has no lengths: images are never split).

    Longest rows first, so each piece pads to its own longest; a row longer than the budget
    is a piece of its own."""
    if budget is None or not lengths or len(lengths) * max(lengths) <= budget:
        return None
    pieces: list[list[int]] = []
    for position in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if pieces and (len(pieces[-1]) + 1) * lengths[pieces[-1][0]] <= budget:
            pieces[-1].append(position)
        else:
            pieces.append([position])
    return pieces


def _backward_in_pieces(
    model: torch.nn.Module,
    items: list[Any],
    labels: torch.Tensor,
    pieces: list[list[int]],
    inputs: Inputs,
    piece_loss_fn: torch.nn.Module,
    weight: torch.Tensor | None,
    accelerator: Any,
    device: str,
    bf16: bool,
) -> torch.Tensor:
    """Backward over a batch piece by piece; the gradients sum to the whole batch's.

    Each piece's summed loss is divided by the whole batch's normaliser (its row count, or its
    summed class weights, which is what CrossEntropyLoss's mean divides by)."""
    from contextlib import nullcontext

    normaliser = weight[labels].sum() if weight is not None else torch.tensor(float(len(items)))
    total = torch.zeros((), device=device)
    for number, piece in enumerate(pieces):
        # Data parallel: gradients are averaged across processes once, after the last piece.
        last = number == len(pieces) - 1
        with nullcontext() if last else accelerator.no_sync(model):
            batch = inputs.collate([items[i] for i in piece], train=True)
            with autocast(device, bf16):
                logits = model(**to_device(batch, device))
            loss = piece_loss_fn(logits.float(), labels[piece]) / normaliser
            accelerator.backward(loss)
        total += loss.detach()
    return total


class LengthGroupedBatches(Sampler[list[int]]):
    """Shuffled batches of similar length: sort within random pools of 50 batches, shuffle batches.

    Padding then costs little while batch order stays random. Seeded per epoch.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group: bool):
        self.lengths = lengths
        self.batch_size = batch_size
        self.seed = seed
        self.group = group
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(len(self.lengths))
        if self.group:
            pool = self.batch_size * 50
            order = np.concatenate(
                [
                    sorted(order[i : i + pool], key=lambda j: -self.lengths[j])
                    for i in range(0, len(order), pool)
                ]
            )
        # Batches are cut from `order` as they are asked for: one integer per row in memory.
        for index in rng.permutation(len(self)):
            start = index * self.batch_size
            yield order[start : start + self.batch_size].tolist()


def selection_metric(choice: str, n_classes: int) -> str:
    """train.select_metric with `auto` resolved: AUC for two classes, macro-F1 otherwise."""
    if choice != "auto":
        return choice
    return "auc" if n_classes == 2 else "f1"


def selection_key(record: dict[str, Any], metric: str) -> tuple[float, ...]:
    """How an epoch's validation record ranks (higher is better): the chosen figure, then the
    lower log-loss. An undefined AUC (one class in the validation rows) ranks on loss alone."""
    if metric == "loss":
        return (-record["val_loss"],)
    value = record.get(f"val_{metric}")
    return (float("-inf") if value is None else value, -record["val_loss"])


@dataclass
class TrainResult:
    history: list[dict[str, Any]] = field(default_factory=list)
    losses: list[tuple[int, float]] = field(default_factory=list)  # (step, loss) for the curve
    best_epoch: float | None = None
    # The validation figure that chose best_epoch (train.select_metric, resolved).
    select_metric: str | None = None
    steps: int = 0
    train_seconds: float = 0.0
    samples_per_second: float = 0.0


def check_optimizer(name: str, device: str) -> None:
    """Fail before any work if the chosen optimizer cannot run here."""
    if name == "adamw":
        return
    if name.startswith("paged_") and device != "cuda":
        raise UserError(
            f"train.optim={name} pages optimizer state between GPU and CPU memory and needs CUDA "
            f"(this device: {device}). Use --optim adamw_8bit or adamw."
        )
    from finetune.modeling.models import check_quantization

    try:
        check_quantization("8bit", device)  # the same bitsandbytes checks
    except UserError as error:
        raise UserError(
            f"train.optim={name} needs bitsandbytes on this device: {error} Use --optim adamw."
        ) from None


def make_optimizer(name: str, groups: list[dict[str, Any]], weight_decay: float):
    """AdamW from torch, or bitsandbytes' 8-bit AdamW (state in 8 bits; paged on CUDA)."""
    if name == "adamw":
        return torch.optim.AdamW(groups, weight_decay=weight_decay)
    import bitsandbytes as bnb

    kind = bnb.optim.PagedAdamW8bit if name == "paged_adamw_8bit" else bnb.optim.AdamW8bit
    return kind(groups, weight_decay=weight_decay)


def _trainable(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The LoRA and head tensors by the model's own names: unwrapped from data parallel, so a
    checkpoint's names do not depend on how many processes wrote it."""
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        model = model.module
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _trainable_shapes(model: torch.nn.Module) -> dict[str, torch.Size]:
    return {n: p.shape for n, p in _trainable(model).items()}


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in _trainable(model).items()}


def _copy_into(
    model: torch.nn.Module, state: dict[str, torch.Tensor], source: str = "The checkpoint"
) -> None:
    """Copy `state` into the model's trainable tensors: every one of them, and nothing else
    (a name or shape that does not match is refused, never skipped)."""
    trainable = _trainable(model)
    check_tensors(_trainable_shapes(model), state, source)
    with torch.no_grad():
        for name, parameter in trainable.items():
            parameter.copy_(state[name])


def fit(
    model: TextClassifier,
    train_ids: list[Any],
    train_labels: np.ndarray,
    val_ids: list[Any],
    val_labels: np.ndarray,
    config: TrainConfig,
    inputs: Inputs | int,
    device: str,
    bf16: bool,
    show_progress: bool = True,
    class_weights: np.ndarray | None = None,
    checkpoints: Checkpoints | None = None,
    resume: bool = False,
    *,
    validation_figures: Callable[[np.ndarray, np.ndarray], dict[str, float | None]],
) -> TrainResult:
    """Train `model` on the items, validating after each epoch; keep the best epoch's weights.

    `validation_figures(probabilities, labels)` scores the validation rows (val_loss and the
    figures `train.select_metric` may name, e.g. `finetune.evaluation.metrics.validation_figures`):
    it is handed in so that the loop needs no evaluation code of its own.
    """
    from accelerate import Accelerator
    from tqdm.auto import tqdm
    from transformers import get_linear_schedule_with_warmup

    accelerator = Accelerator(cpu=device == "cpu")
    labels = torch.as_tensor(train_labels, dtype=torch.long)
    inputs = batches_of(inputs)
    # Frozen lower layers (model.lora_layers) run once here, not in every step; that time is
    # training time too, so it counts in train_seconds and samples/s.
    cache_start = time.perf_counter()
    cached = cache_inputs(model, inputs, [train_ids, val_ids], config.eval_batch_size, device, bf16)
    if cached is not None:
        inputs, (train_ids, val_ids) = cached
    cache_seconds = time.perf_counter() - cache_start
    lengths = inputs.lengths(train_ids)
    sampler = LengthGroupedBatches(
        [0] * len(train_ids) if lengths is None else lengths,
        config.batch_size,
        config.seed,
        config.group_by_length and lengths is not None,
    )

    def collate(indices: list[int]):
        # Model inputs are made in the loop, after the resume skip: augmentation draws from
        # torch's generator, which a resumed run restores exactly at its checkpoint.
        return list(indices), labels[indices]

    # The loader's own generator: iterating a DataLoader draws a seed from the generator it
    # is given, and from torch's global one without it, which would shift every dropout mask
    # after a resume (it restores the global generator mid-epoch, then iterates again).
    loader_rng = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        range(len(train_ids)), batch_sampler=sampler, collate_fn=collate, generator=loader_rng
    )
    if accelerator.num_processes > 1:
        # Data parallel (torchrun / accelerate launch): each process takes its share of batches.
        loader = accelerator.prepare_data_loader(loader)
    # Resolved here: once prepared for data parallel, the model is wrapped and hides its head.
    select_metric = selection_metric(config.select_metric, model.head.out_features)
    head_params = [p for p in model.head.parameters() if p.requires_grad]
    head_ids = {id(p) for p in head_params}
    lora_params = [p for p in model.parameters() if p.requires_grad and id(p) not in head_ids]
    optimizer = make_optimizer(
        config.optim,
        [
            {"params": lora_params, "lr": config.learning_rate},
            {"params": head_params, "lr": config.head_learning_rate},
        ],
        config.weight_decay,
    )
    steps_per_epoch = len(loader)
    total_steps = config.max_steps or math.ceil(config.epochs * steps_per_epoch)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(config.warmup_ratio * total_steps), total_steps
    )
    model, optimizer = accelerator.prepare(model, optimizer)
    weight = None if class_weights is None else torch.as_tensor(class_weights, dtype=torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss(
        weight=None if weight is None else weight.to(device),
        label_smoothing=config.label_smoothing,
    )
    piece_loss_fn = torch.nn.CrossEntropyLoss(
        weight=None if weight is None else weight.to(device),
        label_smoothing=config.label_smoothing,
        reduction="sum",
    )
    weight = None if weight is None else weight.to(device)

    result = TrainResult()
    if len(val_ids):  # without validation rows the last epoch is kept: nothing is selected
        result.select_metric = select_metric
    best_key: tuple[float, float] | None = None
    best_state: dict[str, torch.Tensor] | None = None
    step, seen, running = 0, 0, []

    def validate(record: dict[str, Any]) -> None:
        """Score the validation rows; keep a copy of the weights if they are the best so far."""
        nonlocal best_key, best_state
        proba = predict_proba(model, val_ids, inputs, config.eval_batch_size, device, bf16)
        release_free_heap()
        record.update(validation_figures(proba, val_labels))
        key = selection_key(record, result.select_metric)
        if best_key is None or key > best_key:
            best_key, best_state = key, trainable_state(model)
            result.best_epoch = record["epoch"]

    def snapshot(epoch: int, batch_in_epoch: int) -> dict[str, Any]:
        return {
            "step": step,
            "epoch": epoch,
            "batch_in_epoch": batch_in_epoch,
            "seen": seen,
            "elapsed": elapsed + time.perf_counter() - start,
            # What the epoch's train loss and the loss curve's 10-step mean still need.
            "running": running[-max(steps_per_epoch, 10) :],
            "history": result.history,
            "losses": result.losses,
            "best_epoch": result.best_epoch,
            "best_key": best_key,
            "best_state": best_state,
            "trainable": trainable_state(model),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state({"loader": loader_rng}),
        }

    saving = checkpoints is not None and config.checkpoint_steps > 0
    saving = saving and accelerator.is_main_process
    state = checkpoints.load() if checkpoints is not None and resume else None
    epoch, skip, elapsed = 0, 0, 0.0
    if state is not None:
        # Continue exactly where the checkpoint stopped: same weights, optimizer moments,
        # schedule, batch order (the sampler is seeded per epoch) and every RNG.
        _copy_into(model, state["trainable"])
        if state["best_state"] is not None:  # checked now, not when restored at the end
            check_tensors(_trainable_shapes(model), state["best_state"], "The checkpoint")
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        step, seen, elapsed = state["step"], state["seen"], state["elapsed"]
        epoch, skip, running = state["epoch"], state["batch_in_epoch"], list(state["running"])
        result.history, result.losses = state["history"], state["losses"]
        result.best_epoch, best_state = state["best_epoch"], state["best_state"]
        best_key = tuple(state["best_key"]) if state["best_key"] is not None else None
        restore_rng(state["rng"], {"loader": loader_rng})
    elif len(val_ids):
        # Epoch 0 is a candidate too: when the head starts from the linear probe, fine-tuning
        # has to beat the probe on the validation rows to be kept.
        start_record: dict[str, Any] = {"epoch": 0, "step": 0, "train_loss": None}
        validate(start_record)
        result.history.append(start_record)
    elapsed += cache_seconds
    show_progress = show_progress and accelerator.is_main_process
    progress = tqdm(
        total=total_steps, initial=step, desc="training", unit="step", disable=not show_progress
    )
    start = time.perf_counter()
    model.train()
    while step < total_steps:
        sampler.set_epoch(epoch)
        batch_in_epoch = 0
        for indices, batch_labels in loader:
            batch_in_epoch += 1
            if batch_in_epoch <= skip:
                continue  # done before the checkpoint this run resumed from
            items = [train_ids[i] for i in indices]
            pieces = split_by_tokens(inputs.lengths(items), config.max_batch_tokens)
            if pieces is None:
                batch = inputs.collate(items, train=True)
                with autocast(device, bf16):
                    logits = model(**to_device(batch, device))
                loss = loss_fn(logits.float(), batch_labels.to(device))
                accelerator.backward(loss)
            else:
                loss = _backward_in_pieces(
                    model,
                    items,
                    batch_labels.to(device),
                    pieces,
                    inputs,
                    piece_loss_fn,
                    weight,
                    accelerator,
                    device,
                    bf16,
                )
            if config.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seen += len(batch_labels)
            if step % RELEASE_EVERY == 0:
                release_free_heap()
            running.append(loss.item())
            if step % 10 == 0 or step == total_steps:
                result.losses.append((step, float(np.mean(running[-10:]))))
                progress.set_postfix(loss=f"{np.mean(running[-10:]):.3f}", epoch=epoch + 1)
            progress.update(1)
            if saving and step % config.checkpoint_steps == 0 and step < total_steps:
                checkpoints.save(snapshot(epoch, batch_in_epoch))
            if step >= total_steps:
                break
        skip = 0
        epoch += 1
        # Evaluate at each epoch end, and at the end of a partial last epoch.
        record: dict[str, Any] = {
            "epoch": round(step / steps_per_epoch, 3),
            "step": step,
            "train_loss": float(np.mean(running[-steps_per_epoch:])),
        }
        if len(val_ids):
            validate(record)
            progress.write(
                f"epoch {record['epoch']:g}: train loss {record['train_loss']:.3f}, "
                f"val loss {record['val_loss']:.3f}, val acc {record['val_accuracy']:.3f}, "
                f"val macro-F1 {record['val_f1']:.3f}"
                + (f", val AUC {record['val_auc']:.3f}" if record["val_auc"] is not None else "")
            )
        result.history.append(record)
        if saving:
            checkpoints.save(snapshot(epoch, 0))
    progress.close()
    result.train_seconds = elapsed + time.perf_counter() - start
    result.steps = step
    result.samples_per_second = seen / result.train_seconds if result.train_seconds else 0.0
    if best_state is not None:
        # Restore the best epoch's LoRA and head weights (the frozen backbone never changed).
        _copy_into(model, best_state, "The best epoch's copy")
    else:
        result.best_epoch = result.history[-1]["epoch"] if result.history else None
    model.eval()
    return result
