"""The training loop: LoRA + head, length-grouped batches, bf16 autocast, best epoch kept.

It sees only items and their `Inputs` (modeling/inputs.py), so texts and images train the same
way. The validation figures that pick the kept epoch are the caller's (`validation_figures=`
of `TrainingLoop` and `fit`).

A plain loop on `accelerate` rather than `Trainer`: only the LoRA weights and the head train,
so the best epoch is kept as an in-memory copy of those few tensors instead of full checkpoints
on disk, and the head can have its own learning rate.

`TrainingLoop` is the loop: built once per run, `run()` trains and returns a `TrainResult`.
Its progress lives in a `LoopState` (training/checkpoint.py), which is also what a checkpoint
saves and a resume loads. `fit` is the one-call form.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

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
from finetune.training.checkpoint import (
    Checkpoints,
    LoopState,
    check_tensors,
    restore_rng,
    rng_state,
)

# Steps between handing freed heap pages back to the system (modeling/heap.py).
RELEASE_EVERY = 10

# Scores the validation rows from their probabilities and labels: val_loss and the figures
# `train.select_metric` may name (e.g. `finetune.evaluation.metrics.validation_figures`). The
# caller hands it in so that the training layer needs no evaluation code of its own.
ValidationFigures = Callable[[np.ndarray, np.ndarray], dict[str, float | None]]


class Task(Protocol):
    """A task other than classification, over the same loop: its batch loss (a mean, to
    backpropagate) and the validation figures that pick the kept epoch (with `val_loss`).
    Without one the loop classifies: cross-entropy on the head's logits. A task whose loss is
    a mean over units of its rows (a reply's tokens) also has `weight(items)`, their number:
    then `train.max_batch_tokens` splits its batches too."""

    def loss(
        self, model: torch.nn.Module, items: list[Any], labels: torch.Tensor
    ) -> torch.Tensor: ...

    def figures(self, model: torch.nn.Module, items: list[Any]) -> dict[str, float]: ...


def task_metric(task: Task) -> str:
    """The figure that picks a task's kept epoch: its `select_metric` (a `val_` figure, higher
    is better, e.g. a ranking task's NDCG@10) when it names one, else its validation loss."""
    return getattr(task, "select_metric", None) or "loss"


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
    pieces: list[list[int]],
    piece_loss: Callable[[list[int]], torch.Tensor],
    normaliser: torch.Tensor | float,
    accelerator: Any,
) -> torch.Tensor:
    """Backward over a batch piece by piece; the gradients sum to the whole batch's.

    `piece_loss(positions)` is a piece's summed loss; each is divided by the whole batch's
    normaliser (what the batch loss's mean divides by: its rows, summed class weights or
    response tokens)."""
    from contextlib import nullcontext

    total = torch.zeros(())
    for number, piece in enumerate(pieces):
        # Data parallel: gradients are averaged across processes once, after the last piece.
        last = number == len(pieces) - 1
        with nullcontext() if last else accelerator.no_sync(model):
            loss = piece_loss(piece) / normaliser
            accelerator.backward(loss)
        total += loss.detach().cpu()
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
    seen: int = 0  # training rows stepped over
    tokens: int = 0  # their tokens (0 when the inputs have no token lengths: images)
    # How the number of epochs was chosen when inner folds chose it (train.select_folds;
    # training/kfold.py): the folds' mean figure per epoch, the choice and how sure it is.
    selection: dict[str, Any] | None = None
    # Every training row's out-of-fold probabilities by method, from those inner folds
    # (finetune.evaluation.selection.OutOfFold): they decide the delivered model.
    out_of_fold: Any = None

    @property
    def samples_per_second(self) -> float:
        return self.seen / self.train_seconds if self.train_seconds else 0.0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.train_seconds if self.train_seconds else 0.0


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


@dataclass
class Rows:
    """Items (as `Inputs` encodes them) and their label ids."""

    ids: list[Any]
    labels: np.ndarray


class TrainingLoop:
    """LoRA + head training over `train`, choosing the kept epoch on `validation`.

    `validation_figures` scores each epoch on the validation rows (see `ValidationFigures`).
    Epoch 0 (the weights before training, whose head may be the linear probe) is a candidate;
    without validation rows the last epoch is kept. With `checkpoints`, the state is saved
    every `config.checkpoint_steps` steps and at each epoch end; `resume` continues from the
    saved one exactly (same batches, dropout masks and optimizer moments)."""

    def __init__(
        self,
        model: TextClassifier,
        train: Rows,
        validation: Rows,
        config: TrainConfig,
        inputs: Inputs | int,
        device: str,
        bf16: bool,
        class_weights: np.ndarray | None = None,
        checkpoints: Checkpoints | None = None,
        show_progress: bool = True,
        *,
        validation_figures: ValidationFigures | None = None,
        task: Task | None = None,
    ):
        from accelerate import Accelerator

        self.config, self.device, self.bf16 = config, device, bf16
        self.validation_figures, self.task = validation_figures, task
        self.show_progress = show_progress
        # Precision stays with models.autocast, not Accelerator(mixed_precision=...): accelerate
        # keeps that setting process-wide and refuses a second run at another precision.
        self.accelerator = Accelerator(cpu=device == "cpu")
        self.checkpoints = checkpoints
        mixing = {f"train.{k}": v for k in ("mixup", "cutmix") if (v := getattr(config, k))}
        if mixing and (task is not None or getattr(inputs, "mixable", None) is None):
            what = "a task's examples" if task is not None else f"{inputs.kind} inputs"
            raise UserError(
                f"{' and '.join(f'{k}={v}' for k, v in mixing.items())} mixes images; {what} "
                f"cannot be mixed. Set {' and '.join(mixing)} to 0."
            )
        self.labels = torch.as_tensor(train.labels, dtype=torch.long)
        self.val_labels = validation.labels
        self._cache_layers(model, batches_of(inputs), train.ids, validation.ids)
        self._make_loader()
        # Resolved before `prepare`: a model wrapped for data parallel hides its head.
        # A task names its own figure (task_metric), else its validation loss picks the epoch.
        self.select_metric = (
            task_metric(task)
            if task
            else selection_metric(config.select_metric, model.head.out_features)
        )
        self.optimizer = make_optimizer(
            config.optim, _param_groups(model, config), config.weight_decay
        )
        self.steps_per_epoch = len(self.loader)
        self.total_steps = config.max_steps or math.ceil(config.epochs * self.steps_per_epoch)
        if config.max_steps is None and config.step_budget is not None:
            self.total_steps = min(self.total_steps, config.step_budget)
        self.scheduler = _schedule(self.optimizer, config.warmup_ratio, self.total_steps)
        self.model, self.optimizer = self.accelerator.prepare(model, self.optimizer)
        self._make_losses(class_weights)
        self.state = LoopState()
        # The moving average of the trainable weights (train.ema_decay), or None.
        self.ema = trainable_state(model) if config.ema_decay else None
        self._clock = time.perf_counter()
        self._skip = 0  # batches of the first epoch a resumed run already trained

    def _shows_progress(self) -> bool:
        return self.show_progress and self.accelerator.is_main_process

    def _cache_layers(
        self, model: TextClassifier, inputs: Inputs, train_ids: list[Any], val_ids: list[Any]
    ) -> None:
        """Run the frozen lower layers (model.lora_layers) once here, not in every step; that
        time is training time too, so it counts in train_seconds and samples/s."""
        start = time.perf_counter()
        batch = self.config.eval_batch_size
        label = "caching the frozen lower layers" if self._shows_progress() else None
        cached = cache_inputs(
            model, inputs, [train_ids, val_ids], batch, self.device, self.bf16, label
        )
        if cached is not None:
            inputs, (train_ids, val_ids) = cached
        self.inputs, self.train_ids, self.val_ids = inputs, train_ids, val_ids
        self.cache_seconds = time.perf_counter() - start

    def _make_loader(self) -> None:
        lengths = self.inputs.lengths(self.train_ids)
        self.sampler = LengthGroupedBatches(
            [0] * len(self.train_ids) if lengths is None else lengths,
            self.config.batch_size,
            self.config.seed,
            self.config.group_by_length and lengths is not None,
        )
        labels = self.labels

        def collate(indices: list[int]):
            # Model inputs are made in the loop, after the resume skip: augmentation draws from
            # torch's generator, which a resumed run restores exactly at its checkpoint.
            return list(indices), labels[indices]

        # The loader's own generator: iterating a DataLoader draws a seed from the generator it
        # is given, and from torch's global one without it, which would shift every dropout
        # mask after a resume (it restores the global generator mid-epoch, then iterates again).
        self.loader_rng = torch.Generator().manual_seed(self.config.seed)
        self.loader = DataLoader(
            range(len(self.train_ids)),
            batch_sampler=self.sampler,
            collate_fn=collate,
            generator=self.loader_rng,
        )
        if self.accelerator.num_processes > 1:
            # Data parallel (torchrun / accelerate launch): each process takes its share.
            self.loader = self.accelerator.prepare_data_loader(self.loader)

    def _make_losses(self, class_weights: np.ndarray | None) -> None:
        """The batch loss (a mean), and the summed one the token-budget pieces divide by the
        whole batch's normaliser."""
        weight = None
        if class_weights is not None:
            weight = torch.as_tensor(class_weights, dtype=torch.float32).to(self.device)
        smoothing = self.config.label_smoothing
        self.weight = weight
        self.loss_fn = torch.nn.CrossEntropyLoss(weight=weight, label_smoothing=smoothing)
        self.piece_loss_fn = torch.nn.CrossEntropyLoss(
            weight=weight, label_smoothing=smoothing, reduction="sum"
        )

    def _backward_pieces(
        self, items: list[Any], labels: torch.Tensor, pieces: list[list[int]]
    ) -> torch.Tensor:
        """A batch over the token budget, backpropagated in pieces: classification's summed
        cross-entropy over its rows (or summed class weights), or a task's mean loss times the
        units it is a mean over (its `weight`: a reply's response tokens)."""
        task, model = self.task, self.model
        if task is not None:

            def piece_loss(piece: list[int]) -> torch.Tensor:
                rows = [items[i] for i in piece]
                return task.loss(model, rows, labels[piece]) * task.weight(rows)

            normaliser = torch.tensor(float(task.weight(items)))
        else:

            def piece_loss(piece: list[int]) -> torch.Tensor:
                batch = self.inputs.collate([items[i] for i in piece], train=True)
                with autocast(self.device, self.bf16):
                    logits = model(**to_device(batch, self.device))
                return self.piece_loss_fn(logits.float(), labels[piece])

            rows = torch.tensor(float(len(items)))
            normaliser = rows if self.weight is None else self.weight[labels].sum().cpu()
        return _backward_in_pieces(model, pieces, piece_loss, normaliser, self.accelerator)

    # The run.

    def run(self, resume: bool = False) -> TrainResult:
        """Train to the last step, then leave the model with the kept epoch's weights."""
        from tqdm.auto import tqdm

        self.start(resume)
        self.progress = tqdm(
            total=self.total_steps,
            initial=self.state.step,
            desc="training",
            unit="step",
            disable=not self._shows_progress(),
        )
        self._clock = time.perf_counter()
        self.model.train()
        while self.state.step < self.total_steps:
            self.run_epoch()
            self.end_epoch()
        self.progress.close()
        return self.finish()

    def start(self, resume: bool) -> None:
        """Continue from the saved state (`resume`, when one is saved), or score epoch 0."""
        saved = self.checkpoints.load() if self.checkpoints is not None and resume else None
        if saved is not None:
            self.restore(saved)
        elif len(self.val_ids):
            # Epoch 0 is a candidate too: when the head starts from the linear probe,
            # fine-tuning has to beat the probe on the validation rows to be kept.
            record: dict[str, Any] = {"epoch": 0, "step": 0, "train_loss": None}
            self.validate(record)
            self.state.history.append(record)
        self.state.elapsed += self.cache_seconds

    def run_epoch(self) -> None:
        """The batches of `state.epoch` (after any a resumed run already trained)."""
        state, config = self.state, self.config
        self.sampler.set_epoch(state.epoch)
        state.batch_in_epoch = 0
        for indices, labels in self.loader:
            state.batch_in_epoch += 1
            if state.batch_in_epoch <= self._skip:
                continue  # done before the checkpoint this run resumed from
            items = [self.train_ids[i] for i in indices]
            loss = self.step(items, labels)
            state.step += 1
            state.seen += len(labels)
            state.tokens += sum(self.inputs.lengths(items) or ())
            if state.step % RELEASE_EVERY == 0:
                release_free_heap()
            state.running.append(loss)
            if state.step % 10 == 0 or state.step == self.total_steps:
                recent = float(np.mean(state.running[-10:]))
                state.losses.append((state.step, recent))
                self.progress.set_postfix(loss=f"{recent:.3f}", epoch=state.epoch + 1)
            self.progress.update(1)
            if config.checkpoint_steps and state.step % config.checkpoint_steps == 0:
                if state.step < self.total_steps:
                    self.save()
            if state.step >= self.total_steps:
                break
        self._skip = 0

    def step(self, items: list[Any], labels: torch.Tensor) -> float:
        """One optimizer step on a batch (in token-budget pieces when it is too big); its loss."""
        labels = labels.to(self.device)
        pieces = split_by_tokens(self.inputs.lengths(items), self.config.max_batch_tokens)
        if pieces is not None and (self.task is None or hasattr(self.task, "weight")):
            loss = self._backward_pieces(items, labels, pieces)
        elif self.task is not None:  # whole: its loss may not split (in-batch negatives)
            loss = self.task.loss(self.model, items, labels)
            self.accelerator.backward(loss)
        else:
            batch = self.inputs.collate(items, train=True)
            partner, share = self._mix(batch)
            with autocast(self.device, self.bf16):
                logits = self.model(**to_device(batch, self.device))
            loss = self.loss_fn(logits.float(), labels)
            if partner is not None:
                loss = share * loss + (1 - share) * self.loss_fn(logits.float(), labels[partner])
            self.accelerator.backward(loss)
        if self.config.max_grad_norm:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.ema is not None:
            self._update_ema()
        return loss.item()

    def _mix(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, float]:
        """Mixup (train.mixup: blend the batch's mixable entry with a shuffled copy of itself)
        or cutmix (train.cutmix: paste a rectangle of the copy), in place; the shuffled order
        and the first example's share (None, 1 when off). With both set, each batch takes one
        at random. Drawn from torch's global generator: seeded by the run, restored on resume."""
        mixup, cutmix = self.config.mixup, self.config.cutmix
        if not (mixup or cutmix):
            return None, 1.0
        cut = bool(cutmix) and (not mixup or float(torch.rand(())) < 0.5)
        alpha = cutmix if cut else mixup
        share = float(torch.distributions.Beta(alpha, alpha).sample())
        key = self.inputs.mixable
        partner = torch.randperm(len(batch[key]))
        if cut:
            batch[key], share = paste_box(batch[key], batch[key][partner], share)
        else:
            batch[key] = share * batch[key] + (1 - share) * batch[key][partner]
        return partner, share

    def _update_ema(self) -> None:
        """Move the average towards the weights after this step (`state.step` steps before it)."""
        step = self.state.step
        decay = min(self.config.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for name, parameter in _trainable(self.model).items():
                self.ema[name].lerp_(parameter.detach(), 1 - decay)

    @contextmanager
    def _averaged(self):
        """The model holds the moving average inside the block (when there is one), and its
        own weights again after it."""
        if self.ema is None:
            yield
            return
        own = trainable_state(self.model)
        _copy_into(self.model, self.ema, "The moving average")
        try:
            yield
        finally:
            _copy_into(self.model, own, "The training weights")

    def end_epoch(self) -> None:
        """Record the epoch (or a partial last one), score it, and save the state."""
        state = self.state
        state.epoch += 1
        record: dict[str, Any] = {
            "epoch": round(state.step / self.steps_per_epoch, 3),
            "step": state.step,
            "train_loss": float(np.mean(state.running[-self.steps_per_epoch :])),
        }
        if len(self.val_ids):
            self.validate(record)
            if not self.progress.disable:  # quiet folds and data-parallel workers stay quiet
                self.progress.write(epoch_line(record))
        state.history.append(record)
        state.batch_in_epoch = 0
        self.save()

    def validate(self, record: dict[str, Any]) -> None:
        """Score the validation rows into `record`; keep a copy of the weights if best so far."""
        state = self.state
        with self._averaged():  # the weights scored are the ones the epoch would deliver
            if self.task is not None:
                record.update(self.task.figures(self.model, self.val_ids))
            else:
                proba = predict_proba(
                    self.model,
                    self.val_ids,
                    self.inputs,
                    self.config.eval_batch_size,
                    self.device,
                    self.bf16,
                )
                record.update(self.validation_figures(proba, self.val_labels))
            release_free_heap()
            key = selection_key(record, self.select_metric)
            if state.best_key is None or key > state.best_key:
                state.best_key, state.best_state = key, trainable_state(self.model)
                state.best_epoch = record["epoch"]

    def finish(self) -> TrainResult:
        """The result, with the model holding the kept epoch's weights, in eval mode."""
        state = self.state
        seconds = state.elapsed + time.perf_counter() - self._clock
        result = TrainResult(
            history=state.history,
            losses=state.losses,
            best_epoch=state.best_epoch,
            # Without validation rows the last epoch is kept: nothing is selected.
            select_metric=self.select_metric if len(self.val_ids) else None,
            steps=state.step,
            train_seconds=seconds,
            seen=state.seen,
            tokens=state.tokens,
        )
        if state.best_state is not None:
            # The best epoch's LoRA and head weights (the frozen backbone never changed).
            _copy_into(self.model, state.best_state, "The best epoch's copy")
        else:
            result.best_epoch = state.history[-1]["epoch"] if state.history else None
            if self.ema is not None:  # no validation: the last moving average is kept
                _copy_into(self.model, self.ema, "The moving average")
        self.model.eval()
        return result

    # The state.

    def snapshot(self) -> LoopState:
        """The state with its tensors filled in: what a checkpoint saves."""
        state = self.state
        return replace(
            state,
            elapsed=state.elapsed + time.perf_counter() - self._clock,
            # What the epoch's train loss and the loss curve's 10-step mean still need.
            running=state.running[-max(self.steps_per_epoch, 10) :],
            trainable=trainable_state(self.model),
            ema=None if self.ema is None else {n: t.clone() for n, t in self.ema.items()},
            optimizer=self.optimizer.state_dict(),
            scheduler=self.scheduler.state_dict(),
            rng=rng_state({"loader": self.loader_rng}),
        )

    def save(self) -> None:
        if self.checkpoints is None or self.config.checkpoint_steps <= 0:
            return
        if self.accelerator.is_main_process:
            self.checkpoints.save(self.snapshot())

    def restore(self, saved: LoopState) -> None:
        """Continue exactly where `saved` stopped: same weights, optimizer moments, schedule,
        batch order (the sampler is seeded per epoch) and every RNG."""
        _copy_into(self.model, saved.trainable)
        if saved.best_state is not None:  # checked now, not when restored at the end
            check_tensors(_trainable_shapes(self.model), saved.best_state, "The checkpoint")
        if saved.ema is not None:  # present exactly when ema_decay is on: the settings match
            check_tensors(_trainable_shapes(self.model), saved.ema, "The checkpoint")
            self.ema = saved.ema
        self.optimizer.load_state_dict(saved.optimizer)
        self.scheduler.load_state_dict(saved.scheduler)
        restore_rng(saved.rng, {"loader": self.loader_rng})
        self._skip = saved.batch_in_epoch
        # The tensors are back in the model, optimizer and generators: the state keeps counting.
        self.state = replace(
            saved, trainable=None, ema=None, optimizer=None, scheduler=None, rng=None
        )


def epoch_line(record: dict[str, Any]) -> str:
    """An epoch's figures as the progress bar prints them."""
    if "val_accuracy" not in record:  # a task's figures: its validation loss (and its own)
        own = [
            f"{k[4:]} {v:.3f}"
            for k, v in record.items()
            if k.startswith("val_") and k != "val_loss"
        ]
        train_loss = record["train_loss"]
        return (
            f"epoch {record['epoch']:g}: "
            + (f"train loss {train_loss:.3f}, " if train_loss is not None else "")
            + ", ".join([f"val loss {record['val_loss']:.3f}", *own])
        )
    auc = record["val_auc"]
    return (
        f"epoch {record['epoch']:g}: train loss {record['train_loss']:.3f}, "
        f"val loss {record['val_loss']:.3f}, val acc {record['val_accuracy']:.3f}, "
        f"val macro-F1 {record['val_f1']:.3f}" + (f", val AUC {auc:.3f}" if auc is not None else "")
    )


def _param_groups(model: TextClassifier, config: TrainConfig) -> list[dict[str, Any]]:
    """The backbone's (LoRA) weights at train.learning_rate, the rest at
    train.head_learning_rate: the head, and a side-feature wide part, are fresh layers."""
    backbone_ids = {id(p) for p in model.backbone.parameters()}
    trainable = [p for p in model.parameters() if p.requires_grad]
    lora_params = [p for p in trainable if id(p) in backbone_ids]
    head_params = [p for p in trainable if id(p) not in backbone_ids]
    groups = [
        {"params": lora_params, "lr": config.learning_rate},
        {"params": head_params, "lr": config.head_learning_rate},
    ]
    return [group for group in groups if group["params"]]  # a causal LM has no head


def _schedule(optimizer: Any, warmup_ratio: float, total_steps: int) -> Any:
    # Looked up at each call (not imported at the top): tests replace the schedule.
    from transformers import get_linear_schedule_with_warmup

    return get_linear_schedule_with_warmup(optimizer, int(warmup_ratio * total_steps), total_steps)


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
    validation_figures: ValidationFigures,
) -> TrainResult:
    """Train `model` (its LoRA weights and head) and keep its best epoch: `TrainingLoop` in
    one call. `validation_figures` scores the validation rows (see `ValidationFigures`)."""
    loop = TrainingLoop(
        model,
        Rows(train_ids, train_labels),
        Rows(val_ids, val_labels),
        config,
        inputs,
        device,
        bf16,
        class_weights=class_weights,
        checkpoints=checkpoints,
        show_progress=show_progress,
        validation_figures=validation_figures,
    )
    return loop.run(resume=resume)


def paste_box(
    images: torch.Tensor, others: torch.Tensor, share: float
) -> tuple[torch.Tensor, float]:
    """Cutmix: `images` ([N, C, H, W]) with one rectangle, of about 1 - `share` of their area
    and centred at random (clipped at the edges), taken from `others`; and the share of the
    area the images keep."""
    height, width = images.shape[-2:]
    side = math.sqrt(1 - share)
    cut_h, cut_w = round(height * side), round(width * side)
    y, x = int(torch.randint(0, height, ())), int(torch.randint(0, width, ()))
    top, bottom = max(y - cut_h // 2, 0), min(y + (cut_h + 1) // 2, height)
    left, right = max(x - cut_w // 2, 0), min(x + (cut_w + 1) // 2, width)
    mixed = images.clone()
    mixed[..., top:bottom, left:right] = others[..., top:bottom, left:right]
    return mixed, 1 - (bottom - top) * (right - left) / (height * width)
