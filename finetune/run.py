"""One fine-tuning run from examples to a finished run folder, and reloading that folder.

`train` runs stages that each return one value (a small dataclass) to the later ones, so data
flows one way: `prepare` (validated config, device, folder) -> `split` (the recipe's Splits,
redacted and labelled) -> `encode` (model and model inputs: tokens or pixels) ->
`fit_baselines` -> `fit_model` -> `evaluate` (every method's figures, the recipe's extra
report) -> `write` (the run folder). The folder is written under a temporary name and renamed
when complete (`finetune.files.staged`), so a crashed run never looks finished.

The API layer: this module and `finetune.crossval` use the engine's sub-packages (data,
modeling, training, evaluation, reporting) and are used by `finetune.recipe`; they call a
recipe's hooks (`RecipeHooks`) without importing the recipe API.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
from sklearn.utils.class_weight import compute_class_weight

from finetune.config import Config, save_yaml
from finetune.data.columns import Column, take, to_list
from finetune.data.pii import RedactionCounts, redact_all
from finetune.data.tables import Examples, check_train_eval, shared_texts
from finetune.errors import UserError
from finetune.evaluation.baselines import (
    NEEDS_VECTORS,
    PROBE_FOLDS,
    BaselineInputs,
    fit_probe,
    resolve_baselines,
)
from finetune.evaluation.context import EvalContext
from finetune.evaluation.metrics import (
    MODEL_NAME,
    classification_metrics,
    confusion,
    headline,
    operating_point,
    validation_figures,
)
from finetune.evaluation.selection import (
    Delivery,
    OutOfFold,
    Served,
    add_blends,
    calibration_figures,
    deliver,
    is_blend,
    load_served,
    save_served,
)
from finetune.files import output_folder, staged
from finetune.reporting.report import write_report
from finetune.runtime import environment, peak_memory_mb, warn_now
from finetune.splits import Splits, concat, group_folds, split_rows

if TYPE_CHECKING:
    from finetune.evaluation.baselines import Baseline
    from finetune.modeling.features import FeatureEncoder
    from finetune.modeling.inputs import Inputs
    from finetune.training.checkpoint import Checkpoints
    from finetune.training.loop import TrainResult

# The delivered model's evaluation probabilities in scores.npz (each method's are under its name).
DELIVERED = "delivered"
# data.memory_map's default cap on the rows the baselines fit on (eval.baseline_max_rows).
BASELINE_ROWS_MEMORY_MAPPED = 20_000


class RecipeHooks(Protocol):
    """What a run asks of its recipe; `finetune.recipe.Recipe` is the implementation recipes
    subclass (its docstrings say what each hook does). Typed here, where the hooks are called,
    so that the run never imports the recipe API built on top of it."""

    name: str
    title: str
    inputs: str
    baselines: tuple[str | Baseline, ...]
    extra_key: str

    def primary_metric_for(self, n_classes: int) -> str: ...

    def split(self, config: Config) -> Splits: ...

    def card(self, config: Config) -> dict[str, Any] | None: ...

    def read(self, path: str | Path, config: Config, labelled: bool = True) -> Examples: ...

    def extra_report(self, context: EvalContext) -> tuple[dict[str, Any], list[str]]: ...

    def save_files(self, folder: Path, context: EvalContext) -> None: ...


@dataclass
class Run:
    """A trained classifier and its run folder; what `train` returns and `load` rebuilds."""

    folder: Path
    config: Config
    labels: list[str]
    model: Any
    inputs: Inputs  # how examples become model input (tokens or pixels)
    bf16: bool
    metrics: dict[str, Any]
    # What predict serves: the fine-tuned model or a baseline, and a calibration map (chosen on
    # validation rows; finetune.evaluation.selection). None: the fine-tuned model as it is.
    served: Served | None = None

    @property
    def tokenizer(self) -> Any:
        """The tokenizer of a text run (None for other kinds)."""
        return getattr(self.inputs, "tokenizer", None)

    @classmethod
    def load(cls, folder: str | Path, options: object | None = None) -> Run:
        """Rebuild a finished run; `options` is the recipe's default options object, if any."""
        from finetune.config import load_yaml, merge
        from finetune.modeling.classifiers import load_classifier

        folder = Path(folder)
        if not (folder / "labels.json").is_file():
            raise UserError(f"{folder} is not a finished run folder (labels.json is missing).")
        saved = load_yaml(folder / "config.yaml")
        raw_options = saved.pop("options", None)
        config = merge(Config(options=options), saved, source=str(folder))
        if options is not None and raw_options:
            config = merge(config, {"options": raw_options}, source=str(folder))
        elif raw_options:
            # Loaded without its recipe: keep the recipe's options as they were saved.
            config = replace(config, options=raw_options)
        # Where the run is now, not where it was written (it may have been moved).
        config = replace(config, output=str(folder))
        model, inputs, info = load_classifier(folder / "adapter")
        labels = json.loads((folder / "labels.json").read_text(encoding="utf-8"))["labels"]
        metrics_file = folder / "metrics.json"
        metrics = (
            json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else {}
        )
        served = load_served(folder)
        return cls(folder, config, labels, model, inputs, info.bf16, metrics, served)

    def prepare(self, texts: list[str]) -> list[str]:
        """The same preprocessing as in training (redaction when the run used it)."""
        return prepare_texts(texts, self.config)

    def predict_proba(
        self, texts: Sequence[str] | Examples, batch_size: int | None = None
    ) -> np.ndarray:
        """Class probabilities of the delivered model (the fine-tuned one, or the baseline that
        beat it on validation rows), calibrated when the run calibrated, for texts or examples
        (a run with model.side_features, or a delivered table baseline, reads their table
        columns too, and needs examples)."""
        check_texts(texts)
        served = self.served
        if not len(texts):
            return np.zeros((0, len(self.labels)))
        if served is None or served.predictor is None:
            proba = self.model_proba(texts, batch_size)
        elif served.reads_vectors:
            proba = served.predictor.predict_proba(self._frozen_vectors(texts, batch_size))
        else:
            proba = served.predictor.predict_proba(self._examples(texts))
        if served is not None and served.blend:
            proba = (self.model_proba(texts, batch_size) + proba) / 2
        return proba if served is None else served.calibrate(proba)

    def model_proba(
        self, texts: Sequence[str] | Examples, batch_size: int | None = None
    ) -> np.ndarray:
        """The fine-tuned model's own class probabilities (uncalibrated), whatever the run
        delivers."""
        check_texts(texts)
        from finetune.modeling.inference import predict_proba
        from finetune.modeling.models import pick_device

        if not len(texts):
            return np.zeros((0, len(self.labels)))
        batch = batch_size or self.config.train.eval_batch_size
        items = self._encode(texts)
        return predict_proba(self.model, items, self.inputs, batch, pick_device(), self.bf16)

    def _encode(self, texts: Sequence[str] | Examples) -> Sequence[Any]:
        if isinstance(texts, Examples):
            return self.inputs.encode_examples(self._examples(texts))
        return self.inputs.encode(self.prepare(texts))

    def _examples(self, texts: Sequence[str] | Examples) -> Examples:
        """Texts or examples as prepared Examples (texts redacted when the run redacted)."""
        if isinstance(texts, Examples):
            return replace(texts, texts=self.prepare(texts.texts))
        prepared = self.prepare(texts)
        return Examples(prepared, [""] * len(prepared), "given texts")

    def _frozen_vectors(self, texts: Sequence[str] | Examples, batch_size: int | None) -> Any:
        """The frozen backbone's pooled vectors (adapter disabled), as embedding_logreg's probe
        was fitted on."""
        from finetune.modeling.inference import embed
        from finetune.modeling.models import pick_device

        batch = batch_size or self.config.train.eval_batch_size
        items = self._encode(texts)
        with self.model.backbone.disable_adapter():
            return embed(self.model, items, self.inputs, batch, pick_device(), self.bf16)

    def predict(self, texts: list[str]) -> list[str]:
        return [self.labels[i] for i in self.predict_proba(texts).argmax(axis=1)]

    def evaluate(self, examples: Examples) -> dict[str, Any]:
        index = {label: i for i, label in enumerate(self.labels)}
        unknown = sorted(set(examples.labels) - set(index))
        if unknown:
            raise UserError(
                f"{examples.source}: labels the model was not trained on: "
                f"{', '.join(map(repr, unknown[:10]))}. It knows: {', '.join(self.labels)}."
            )
        y = np.array([index[label] for label in examples.labels])
        metrics = classification_metrics(y, self.predict_proba(examples), self.labels)
        metrics["source"] = examples.source
        if examples.skipped:
            metrics["skipped_inputs"] = {
                "count": len(examples.skipped),
                "first": examples.skipped[:5],
            }
        return metrics


def prepare_texts(texts: Sequence[str], config: Config) -> list[str]:
    """New texts as the model saw its training texts: redacted when the run redacted them."""
    if config.data.redact_pii:
        texts, _ = redact_all(texts)
    return list(texts)


def train(recipe: RecipeHooks, config: Config, show_progress: bool = True) -> Run:
    """Fine-tune, evaluate against baselines, and write the run folder. Returns the Run.

    Each stage returns what the next ones read, so the data flows one way:
    prepare -> split -> encode -> baselines -> fit -> evaluate -> write."""
    prepared = prepare(recipe, config, show_progress)
    data = split(recipe, prepared.config)
    encoded = encode(recipe, prepared, data)
    baselines = fit_baselines(recipe, prepared, data, encoded)
    result = fit_model(prepared, data, encoded, baselines, show_progress)
    evaluated = evaluate(recipe, prepared, data, encoded, baselines, result)
    return write(recipe, prepared, data, encoded, result, evaluated)


@dataclass
class Prepared:
    """The validated config, the device and the run folder (not written yet), checked before
    any data is read."""

    config: Config
    device: str
    folder: Path
    checkpoints: Checkpoints  # where training saves its state, to resume a killed run
    started: float  # time.perf_counter() at the start, for the wall time
    show_progress: bool = False  # progress bars on the long passes

    def progress(self, label: str | None) -> str | None:
        """`label` for a progress bar when the run shows them, else None."""
        return label if self.show_progress else None


def prepare(recipe: RecipeHooks, config: Config, show_progress: bool = False) -> Prepared:
    """Fail early on what the device or the recipe cannot do; seed everything."""
    from transformers import set_seed

    from finetune.modeling import models
    from finetune.modeling.classifiers import check as check_inputs
    from finetune.training.checkpoint import open_checkpoints
    from finetune.training.loop import check_optimizer

    started = time.perf_counter()
    config = config.validate()
    check_blends(recipe, config)
    device = models.pick_device()
    models.check_quantization(config.model.quant, device)
    check_optimizer(config.train.optim, device)
    folder = output_folder(config.output, config.recipe, config.overwrite)
    checkpoints = open_checkpoints(folder, config, device, main=is_main_process())
    set_seed(config.train.seed)
    check_inputs(recipe.inputs, config)
    return Prepared(config, device, folder, checkpoints, started, show_progress)


def check_blends(recipe: RecipeHooks, config: Config) -> None:
    """eval.blend may only name the recipe's baselines (checked before anything is trained)."""
    known = list(resolve_baselines(recipe.baselines))
    unknown = sorted(set(config.eval.blend) - set(known))
    if unknown:
        raise UserError(
            f"eval.blend names {', '.join(unknown)}, not a baseline of this recipe "
            f"({', '.join(known)}): blend one of those, or leave eval.blend empty."
        )


@dataclass
class RunData:
    """The run's rows, prepared (redacted when the run redacts) and labelled.

    `train` holds every training row: `fit_rows` of them train the model and every baseline,
    `val_rows` choose the kept epoch, the delivered model, its calibration and the decision
    thresholds."""

    train: Examples
    evaluation: Examples
    fit_rows: list[int]
    val_rows: list[int]
    labels: list[str]  # class order: label ids index it
    y_train: np.ndarray  # label ids of `train`
    y_eval: np.ndarray  # label ids of `evaluation`
    thresholds: bool  # a decision threshold is chosen (eval.target_recall, two classes)
    redaction: dict[str, RedactionCounts]  # by part: what PII redaction replaced
    overlap: dict[str, Any] | None  # evaluation texts also in the training data

    @property
    def y_fit(self) -> np.ndarray:
        return self.y_train[self.fit_rows]

    @property
    def y_val(self) -> np.ndarray:
        return self.y_train[self.val_rows]

    @property
    def skipped(self) -> list[str]:
        """Unreadable inputs left out; a hold-out shares its reader's skips: each counts once."""
        return list(dict.fromkeys(self.train.skipped + self.evaluation.skipped))


def check_texts(texts: Sequence[str] | Examples) -> None:
    """One line for texts that are not a sequence of strings: a bare string would be read as
    its characters, a missing value would fail deep in the tokenizer."""
    if isinstance(texts, str):
        raise UserError("Pass a list of texts; for one text, [text].")
    if isinstance(texts, Examples):
        return
    for row, text in enumerate(texts):
        if not isinstance(text, str):
            raise UserError(f"Text {row} is {type(text).__name__}, not a string.")


def split(recipe: RecipeHooks, config: Config) -> RunData:
    """The recipe's split (`Recipe.split`), checked, redacted and labelled."""
    train_ex, fit_rows, val_rows, eval_ex = training_rows(recipe.split(config), config)
    redaction = {"train": RedactionCounts(), "evaluation": RedactionCounts()}
    if config.data.memory_map and not isinstance(train_ex.texts, Column):
        raise UserError(
            f"data.memory_map: the {recipe.name} recipe reads its data into memory; only recipes "
            "that read a plain text table (text and label columns) can keep it on disk."
        )
    if config.data.redact_pii:
        train_ex.texts, redaction["train"] = _redact(train_ex.texts)
        eval_ex.texts, redaction["evaluation"] = _redact(eval_ex.texts)
    overlap = None if recipe.inputs == "image" else shared_texts(train_ex.texts, eval_ex.texts)
    if overlap:
        warn_now(overlap_line(overlap))
    labels = label_order(
        sorted(set(train_ex.labels)), config.data.positive_label, recipe.card(config)
    )
    thresholds = config.eval.target_recall is not None and len(labels) == 2
    if thresholds and not val_rows and not _inner_folds(config, len(fit_rows)):
        raise UserError(
            "eval.target_recall: the decision threshold is chosen on validation rows, and this "
            "run holds none out (data.val_fraction is 0). Set --set data.val_fraction=0.2."
        )
    y_train, y_eval = label_ids(train_ex.labels, labels), label_ids(eval_ex.labels, labels)
    return RunData(
        train_ex,
        eval_ex,
        fit_rows,
        val_rows,
        labels,
        y_train,
        y_eval,
        thresholds,
        redaction,
        overlap,
    )


def training_rows(
    splits: Splits, config: Config
) -> tuple[Examples, list[int], list[int], Examples]:
    """(every training row, the rows that train, the validation rows, the evaluation rows).

    The validation rows are the recipe's own (`Splits.validation`, e.g. the latest ones, for a
    split by time) placed after the training rows, else a seeded, stratified data.val_fraction
    of the training rows (whole groups when the examples have them; the training seed: the
    evaluation rows never move with it)."""
    train, evaluation = splits.train, splits.evaluation
    check_train_eval(train, evaluation)
    if splits.validation is None and _inner_folds(config, len(train)):
        # train.select_folds: inner folds of every training row choose the epoch, and their
        # out-of-fold predictions the delivered model, calibration and threshold; none is
        # held out.
        return train, list(range(len(train))), [], evaluation
    if splits.validation is None:
        fit_rows, val_rows = split_rows(train, config.data.val_fraction, config.train.seed)
        return train, fit_rows, val_rows, evaluation
    check_train_eval(train, splits.validation)
    everything = concat(train, splits.validation)
    return everything, list(range(len(train))), list(range(len(train), len(everything))), evaluation


@dataclass
class Encoded:
    """The model to fine-tune (LoRA on the backbone, fresh head) and its inputs, encoded."""

    model: Any  # a classifier: finetune.modeling.models.TextClassifier or the image one
    inputs: Inputs  # how examples become model input (tokens or pixels)
    info: Any  # what the model's builder reports (pooling, LoRA targets), saved with it
    bf16: bool
    checkpointing: bool  # gradient checkpointing
    fit_ids: Sequence[Any]
    val_ids: Sequence[Any]
    eval_ids: Sequence[Any]
    notes: list[str]  # the inputs' report notes (e.g. truncated texts)
    # model.lora_layers on text: the same rows as the frozen lower layers' states, computed
    # once (cache_rows); the passes over the rows read them. None: nothing is cached.
    cached: Encoded | None = None
    cache_seconds: float = 0.0

    @property
    def rows(self) -> Encoded:
        """What a pass over the run's rows reads: the cached states when there are some."""
        return self.cached or self


def encode(recipe: RecipeHooks, prepared: Prepared, data: RunData) -> Encoded:
    """Build the model and encode every row once (token ids or pixels)."""
    from finetune.modeling import models
    from finetune.modeling.classifiers import build_for_training

    config, device = prepared.config, prepared.device
    bf16 = models.use_bf16(config.train.precision, device)
    checkpointing = models.use_gradient_checkpointing(
        config.train.gradient_checkpointing, config.model.quant, device
    )
    model, model_inputs, info = build_for_training(
        recipe.inputs,
        config,
        len(data.labels),
        bf16,
        device,
        features=_side_features(config, data),
        gradient_checkpointing=checkpointing,
    )
    all_ids = model_inputs.encode_examples(data.train)
    eval_ids = model_inputs.encode_examples(data.evaluation)
    warnings = model_inputs.warnings(all_ids, eval_ids)
    warn_now(*warnings)
    notes = model_inputs.notes(all_ids, eval_ids) + warnings
    fit_ids, val_ids = take(all_ids, data.fit_rows), take(all_ids, data.val_rows)
    encoded = Encoded(
        model, model_inputs, info, bf16, checkpointing, fit_ids, val_ids, eval_ids, notes
    )
    if model_inputs.kind == "text":
        encoded.cached, encoded.cache_seconds = cache_rows(prepared, encoded)
    return encoded


def cache_rows(prepared: Prepared, encoded: Encoded) -> tuple[Encoded | None, float]:
    """With model.lora_layers, the frozen lower layers' states of every row (training,
    validation, evaluation) and the seconds they took: computed once, they serve the
    baselines' frozen vectors, training (its inner folds too) and the evaluation, which run
    only the top layers from them. (None, 0) where layercache.cache_inputs caches nothing."""
    from finetune.modeling.layercache import cache_inputs

    if prepared.config.data.memory_map:  # not cached (the training loop says so)
        return None, 0.0
    start = time.perf_counter()
    groups = [encoded.fit_ids, encoded.val_ids, encoded.eval_ids]
    batch = prepared.config.train.eval_batch_size
    label = prepared.progress("caching the frozen lower layers")
    cached = cache_inputs(
        encoded.model, encoded.inputs, groups, batch, prepared.device, encoded.bf16, label
    )
    if cached is None:
        return None, 0.0
    inputs, (fit_ids, val_ids, eval_ids) = cached
    rows = replace(encoded, inputs=inputs, fit_ids=fit_ids, val_ids=val_ids, eval_ids=eval_ids)
    return rows, time.perf_counter() - start


def _side_features(config: Config, data: RunData) -> FeatureEncoder | None:
    """With model.side_features, the encoder of the table's columns, fitted on the rows that
    train the model (never the validation or evaluation rows)."""
    from finetune.modeling.features import FeatureEncoder

    if not config.model.side_features:
        return None
    if data.train.features is None:
        raise UserError(
            "model.side_features: this recipe's examples carry no table columns to read beside "
            "the text; set model.side_features=false."
        )
    rows = data.train.features.iloc[data.fit_rows]
    return FeatureEncoder.fit(rows, spline_knots=config.model.spline_knots)


@dataclass
class BaselineScores:
    """The baselines' class probabilities, and what they were fitted on."""

    inputs: BaselineInputs  # their data; also the frozen vectors and fitted models they left
    scores: dict[str, np.ndarray]  # by baseline: on the evaluation rows
    val_scores: dict[str, np.ndarray]  # by baseline: on the validation rows (for selection)
    notes: list[str]  # for the report (e.g. fitted on a sample)
    # The baselines themselves, by name: inner folds refit them for out-of-fold predictions.
    fitters: dict[str, Any] = field(default_factory=dict)


def fit_baselines(
    recipe: RecipeHooks, prepared: Prepared, data: RunData, encoded: Encoded
) -> BaselineScores:
    """Fit every baseline on the model's training rows (or a seeded sample of them: they hold
    their data in memory) and score the validation rows (they choose the delivered model, its
    calibration and thresholds) and the evaluation rows."""
    from finetune.modeling.heap import release_free_heap

    config = prepared.config
    sample = baseline_sample(len(data.fit_rows), config)
    notes = []
    if len(sample) < len(data.fit_rows):
        notes.append(
            f"The baselines and the head's starting probe were fitted on a seeded sample of "
            f"{len(sample):,} of the {len(data.fit_rows):,} training rows (eval.baseline_max_rows)."
        )
    base_rows = [data.fit_rows[i] for i in sample]
    # The validation rows are prepended to the evaluation rows the baselines score, and split
    # off after.
    scored = data.train.subset(data.val_rows, "") if data.val_rows else None
    inputs = BaselineInputs(
        train_texts=to_list(take(data.train.texts, base_rows)),
        train_labels=data.y_fit[sample],
        eval_texts=(to_list(scored.texts) if scored is not None else [])
        + to_list(data.evaluation.texts),
        n_classes=len(data.labels),
        seed=config.train.seed,
        train_features=None
        if data.train.features is None
        else data.train.subset(base_rows, "").features,
        eval_features=_stacked_features(scored, data.evaluation),
    )
    baselines = resolve_baselines(recipe.baselines)
    if config.model.head_init == "probe" or NEEDS_VECTORS & set(baselines):
        _embed_frozen(inputs, prepared, encoded, sample, with_validation=scored is not None)
    scores = {name: baseline(inputs) for name, baseline in baselines.items()}
    if "tfidf_analyzer" in inputs.fitted:
        notes.append(f"TF-IDF baseline features: {inputs.fitted['tfidf_analyzer']}.")
    if "probe" in inputs.fitted:
        notes.append(
            f"Frozen-vector probe: C={inputs.fitted['probe'].strength:g}, chosen by "
            f"{PROBE_FOLDS} folds of the training rows."
        )
    n_val = len(data.val_rows) if scored is not None else 0
    release_free_heap()  # what the baselines and the frozen pass freed, before training
    return BaselineScores(
        inputs,
        {name: p[n_val:] for name, p in scores.items()},
        {name: p[:n_val] for name, p in scores.items()},
        notes,
        baselines,
    )


def _embed_frozen(
    inputs: BaselineInputs,
    prepared: Prepared,
    encoded: Encoded,
    sample: np.ndarray,
    with_validation: bool,
) -> None:
    """The frozen pretrained backbone's vectors of the baselines' rows, into `inputs`."""
    from finetune.modeling.inference import embed

    model, batch = encoded.model, prepared.config.train.eval_batch_size
    device, bf16 = prepared.device, encoded.bf16

    rows = encoded.rows

    def vectors(ids: Sequence[Any], name: str) -> np.ndarray:
        label = prepared.progress(f"frozen backbone, {name} rows")
        return embed(model, ids, rows.inputs, batch, device, bf16, label)

    with model.backbone.disable_adapter():
        inputs.train_vectors = vectors(take(rows.fit_ids, sample), "training")
        inputs.eval_vectors = vectors(rows.eval_ids, "evaluation")
        if with_validation:
            val_vectors = vectors(rows.val_ids, "validation")
            inputs.eval_vectors = np.concatenate([val_vectors, inputs.eval_vectors])


def fit_model(
    prepared: Prepared,
    data: RunData,
    encoded: Encoded,
    baselines: BaselineScores,
    show_progress: bool,
) -> TrainResult:
    """Fine-tune the model in place (from the probe's head with model.head_init=probe); the
    number of epochs by inner folds of the training rows with train.select_folds. The
    training time includes the pass of the frozen lower layers (cache_rows)."""
    config = prepared.config
    if not data.val_rows and _inner_folds(config, len(data.fit_rows)):
        result = fit_by_folds(prepared, data, encoded, baselines, show_progress)
    else:
        result = _fit_on_validation(prepared, data, encoded, baselines, show_progress)
    result.train_seconds += encoded.cache_seconds  # and with it the rates, per second
    return result


def _fit_on_validation(
    prepared: Prepared,
    data: RunData,
    encoded: Encoded,
    baselines: BaselineScores,
    show_progress: bool,
) -> TrainResult:
    """Fine-tune, the epoch kept by the validation rows."""
    from finetune.training.loop import fit

    config = prepared.config
    if config.model.head_init == "probe":
        inputs = baselines.inputs
        probe = inputs.fitted.get("probe") or fit_probe(
            inputs.train_vectors, inputs.train_labels, len(data.labels), config.train.seed
        )
        encoded.model.set_head(probe.weight, probe.bias, probe.center)
    elif config.model.head_init == "wide":
        _start_from_wide(prepared, data, encoded)
    rows = encoded.rows
    return fit(
        encoded.model,
        rows.fit_ids,
        data.y_fit,
        rows.val_ids,
        data.y_val,
        config.train,
        rows.inputs,
        prepared.device,
        encoded.bf16,
        show_progress=show_progress,
        class_weights=class_weights(data.y_fit, len(data.labels), config.train.class_weight),
        checkpoints=prepared.checkpoints,
        resume=config.resume,
        validation_figures=validation_figures,
    )


def _inner_folds(config: Config, n_rows: int) -> int:
    """train.select_folds resolved for `n_rows` training rows (0: the validation rows choose)."""
    from finetune.config import select_folds

    return select_folds(config.train.select_folds, n_rows)


def fit_by_folds(
    prepared: Prepared,
    data: RunData,
    encoded: Encoded,
    baselines: BaselineScores,
    show_progress: bool,
) -> TrainResult:
    """Choose the number of epochs by inner folds of the training rows (finetune.training.
    kfold), then train on all of them for that many epochs; `selection` in the result says
    how the choice was made."""
    from finetune.evaluation.folds import fold_indices
    from finetune.training.kfold import choose_epochs, train_chosen
    from finetune.training.loop import Rows

    config, model = prepared.config, encoded.model
    y = data.y_fit
    folds = _inner_fold_count(config, y, data.labels)
    labels = [data.labels[i] for i in y]
    if data.train.groups is None:
        splits = fold_indices(labels, folds, config.train.seed)
    else:  # patients or sites: whole groups on one side of every inner fold
        groups = [data.train.groups[i] for i in data.fit_rows]
        splits = group_folds(labels, groups, folds, config.train.seed)
    vectors = baselines.inputs.train_vectors
    sample = baseline_sample(len(y), config)

    def start(positions: Sequence[int]) -> None:
        """The head for a fold: the linear probe (or, head_init=wide, the wide part's
        regression) fitted on that fold's training rows alone."""
        if config.model.head_init == "wide":
            _start_from_wide(prepared, data, encoded, positions)
            return
        if config.model.head_init != "probe" or vectors is None:
            return
        keep = np.flatnonzero(np.isin(sample, positions))
        probe = fit_probe(vectors[keep], y[sample[keep]], len(data.labels), config.train.seed)
        model.set_head(probe.weight, probe.bias, probe.center)

    def weights(labels: np.ndarray) -> np.ndarray | None:
        return class_weights(labels, len(data.labels), config.train.class_weight)

    rows = Rows(list(encoded.rows.fit_ids), y)
    common = (encoded.rows.inputs, prepared.device, encoded.bf16, start, weights)
    if show_progress:
        print(f"train.select_folds: choosing the number of epochs by {folds} inner folds")
    selection = choose_epochs(
        model,
        rows,
        splits,
        config.train,
        *common,
        validation_figures=validation_figures,
    )
    result = train_chosen(
        model,
        rows,
        selection,
        config.train,
        *common,
        checkpoints=prepared.checkpoints,
        resume=config.resume,
        show_progress=show_progress,
    )
    result.selection = selection.as_dict()
    result.train_seconds += selection.seconds
    result.out_of_fold = out_of_fold(prepared, data, baselines, selection)
    return result


def out_of_fold(
    prepared: Prepared, data: RunData, baselines: BaselineScores, selection: Any
) -> OutOfFold | None:
    """Every training row's out-of-fold probabilities: the model's at the chosen epoch (from
    the inner folds), and each baseline's, refitted on the same folds' training parts (the
    frozen vectors are the ones computed once). None where the folds kept no probabilities."""
    model_oof = selection.oof_proba()
    if model_oof is None:
        return None
    y = data.y_fit
    folds = np.zeros(len(y), dtype=int)
    for k, (_, held) in enumerate(selection.splits):
        folds[held] = k
    scores = {MODEL_NAME: model_oof}
    shared = baselines.inputs
    if len(baseline_sample(len(y), prepared.config)) < len(y):
        return OutOfFold(scores, y, folds)  # baselines fitted on a sample: not comparable
    vectors = shared.train_vectors
    for name in baselines.fitters:
        scores[name] = np.zeros_like(model_oof)
    for train_part, held in selection.splits:
        rows = [data.fit_rows[i] for i in train_part]
        held_rows = [data.fit_rows[i] for i in held]
        fold = BaselineInputs(
            train_texts=to_list(take(data.train.texts, rows)),
            train_labels=y[train_part],
            eval_texts=to_list(take(data.train.texts, held_rows)),
            n_classes=len(data.labels),
            seed=prepared.config.train.seed,
            train_vectors=None if vectors is None else vectors[train_part],
            eval_vectors=None if vectors is None else vectors[held],
            train_features=None if data.train.features is None else data.train.features.iloc[rows],
            eval_features=None
            if data.train.features is None
            else data.train.features.iloc[held_rows],
        )
        for name, baseline in baselines.fitters.items():
            scores[name][held] = baseline(fold)
    return OutOfFold(scores, y, folds)


def _inner_fold_count(config: Config, y: np.ndarray, labels: list[str]) -> int:
    """train.select_folds, lowered to the rarest class's count (each fold needs every class)."""
    folds = _inner_folds(config, len(y))
    counts = np.bincount(y, minlength=len(labels))
    rarest = int(counts.argmin())
    if counts[rarest] < 2:
        raise UserError(
            f"train.select_folds: class {labels[rarest]!r} has {counts[rarest]} training row(s); "
            "inner folds need at least 2 of every class. Add examples or set "
            "train.select_folds=0."
        )
    return min(folds, int(counts[rarest]))


def _start_from_wide(
    prepared: Prepared, data: RunData, encoded: Encoded, positions: Sequence[int] | None = None
) -> None:
    """model.head_init=wide: the wide part as the logistic regression on the side features of
    the training rows (`positions` of them: an inner fold's), the text head silent; epoch 0 is
    that regression."""
    from finetune.modeling.features import wide_start

    config = prepared.config
    chosen = data.fit_rows if positions is None else [data.fit_rows[i] for i in positions]
    y = data.y_fit if positions is None else data.y_fit[list(positions)]
    rows = data.train.features.iloc[chosen]
    weight, bias = wide_start(encoded.inputs.encoder, rows, y, len(data.labels), config.train.seed)
    encoded.model.start_from_wide(weight, bias, frozen=config.model.wide_frozen)


@dataclass
class Evaluated:
    """Every method's figures and evaluation probabilities, what the run delivers, and the
    recipe's extra report."""

    metrics: dict[str, Any]  # metrics.json: the delivered model's figures at the top level
    scores: dict[str, np.ndarray]  # by method: the model under MODEL_NAME, then the baselines
    context: EvalContext  # what the recipe's hooks saw (its plots are drawn when writing)
    sections: list[str]  # the recipe's report sections
    notes: list[str]  # report notes about the inputs (the model's and the baselines')
    delivery: Delivery  # the delivered method and its calibration, chosen on validation rows
    delivered_proba: np.ndarray  # the delivered model's evaluation probabilities (calibrated)


def evaluate(
    recipe: RecipeHooks,
    prepared: Prepared,
    data: RunData,
    encoded: Encoded,
    baselines: BaselineScores,
    result: TrainResult,
) -> Evaluated:
    """Score every method on the validation rows (or, with inner folds, take every training
    row's out-of-fold predictions), which choose the delivered model, its calibration and
    decision thresholds (`finetune.evaluation.selection`), then on the evaluation rows, which
    only report; the recipe's extra report."""
    config, labels = prepared.config, data.labels
    scores = {
        MODEL_NAME: _predict_rows(prepared, encoded, "evaluation"),
        **baselines.scores,
    }
    val_scores, y_val, folds = _deciding_scores(prepared, data, encoded, baselines, result)
    scores = add_blends(scores, config.eval.blend)
    val_scores = add_blends(val_scores, config.eval.blend)
    primary = recipe.primary_metric_for(len(labels))
    delivery = deliver(
        val_scores,
        y_val,
        labels,
        primary,
        config.eval,
        baselines.inputs.predictors,
        config.train.seed,
        folds,
    )
    figures = {name: classification_metrics(data.y_eval, p, labels) for name, p in scores.items()}
    delivered_val = delivery.served.calibrate(val_scores[delivery.method])
    delivered_proba = delivery.served.calibrate(scores[delivery.method])
    delivered = classification_metrics(data.y_eval, delivered_proba, labels)
    if data.thresholds:
        target = config.eval.target_recall
        pairs = {n: (val_scores[n], p) for n, p in scores.items()}
        pairs[""] = (delivered_val, delivered_proba)  # "": the delivered model, calibrated
        for name, (val, test) in pairs.items():
            point = operating_point(y_val, val[:, 1], data.y_eval, test[:, 1], target)
            if point is not None and folds is not None:
                point["chosen_on"] = delivery.decided["chosen_on"]
            (figures[name] if name else delivered)["operating_point"] = point
    context = _eval_context(prepared, data, encoded, baselines, scores)
    extra_metrics, sections = recipe.extra_report(context)
    for name, extra in context.method_metrics.items():
        if name in figures:
            figures[name].update(extra)
    delivered.update(context.method_metrics.get(delivery.method, {}))
    # A baseline's entry: the headline four, binary extras, its threshold and recipe figures.
    for name, own in figures.items():
        if name != MODEL_NAME:
            kept = {"operating_point", *context.method_metrics.get(name, {})}
            figures[name] = {**summary(own), **{k: v for k, v in own.items() if k in kept}}
    metrics = {**delivered}
    if extra_metrics:
        metrics[recipe.extra_key] = extra_metrics
    # What ranks the methods (the summary's best baseline); summaries read it from here.
    metrics["primary_metric"] = primary
    metrics["delivered"] = delivery.decided
    if delivery.calibration is not None:
        before = scores[delivery.method]
        metrics["calibration"] = calibration_figures(
            delivery.calibration, data.y_eval, before, delivered_proba
        )
    metrics.update(_run_figures(data, result, figures))
    notes = encoded.notes + baselines.notes
    return Evaluated(metrics, scores, context, sections, notes, delivery, delivered_proba)


def _deciding_scores(
    prepared: Prepared,
    data: RunData,
    encoded: Encoded,
    baselines: BaselineScores,
    result: TrainResult,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None]:
    """(every method's probabilities on the rows that decide, their labels, each row's inner
    fold or None): the out-of-fold predictions of the training rows when inner folds made them
    for every method, else the validation rows."""
    oof = result.out_of_fold
    if oof is not None and set(baselines.scores) <= set(oof.scores):
        return oof.scores, oof.y, oof.folds
    val_model = (
        _predict_rows(prepared, encoded, "validation")
        if data.val_rows
        else np.zeros((0, len(data.labels)))
    )
    return {MODEL_NAME: val_model, **baselines.val_scores}, data.y_val, None


def _eval_context(
    prepared: Prepared,
    data: RunData,
    encoded: Encoded,
    baselines: BaselineScores,
    scores: dict[str, np.ndarray],
) -> EvalContext:
    """What the recipe's extra report sees: the data, every method's evaluation scores, the
    fine-tuned model as a function of texts and what the baselines fitted."""
    config = prepared.config
    return EvalContext(
        config=config,
        train=data.train,
        evaluation=data.evaluation,
        labels=data.labels,
        y_eval=data.y_eval,
        scores=scores,
        predict_proba=lambda texts: _predict(prepared, encoded, _encode(encoded, texts, config)),
        fitted=baselines.inputs.fitted,
        model=encoded.model,
        model_inputs=encoded.inputs,
    )


def _run_figures(
    data: RunData, result: TrainResult, figures: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """metrics.json beyond the delivered model's figures: the fine-tuned model's own figures
    (`finetuned`), the run's sizes and training, and each baseline's figures."""
    metrics: dict[str, Any] = {
        "finetuned": figures[MODEL_NAME],
        "n_train": len(data.fit_rows),
        "n_val": len(data.val_rows),
        "n_eval": len(data.evaluation),
        "train_seconds": round(result.train_seconds, 2),
        "samples_per_second": round(result.samples_per_second, 2),
        "tokens_per_second": round(result.tokens_per_second, 1),
        "best_epoch": result.best_epoch,
        "best_epoch_metric": result.select_metric,
        "train_source": data.train.source,
        "eval_source": data.evaluation.source,
        "baselines": {
            name: f for name, f in figures.items() if name != MODEL_NAME and not is_blend(name)
        },
    }
    blends = {name: f for name, f in figures.items() if is_blend(name)}
    if blends:
        metrics["blends"] = blends
    if data.overlap:
        metrics["overlap"] = data.overlap
    if result.selection:
        metrics["selection"] = result.selection
    if data.skipped:
        metrics["skipped_inputs"] = {"count": len(data.skipped), "first": data.skipped[:5]}
    return metrics


def _encode(encoded: Encoded, texts: Sequence[str] | Examples, config: Config) -> list[Any]:
    """New texts, or examples (with their table columns), as the model's inputs."""
    if isinstance(texts, Examples):
        prepared = replace(texts, texts=prepare_texts(texts.texts, config))
        return encoded.inputs.encode_examples(prepared)
    return encoded.inputs.encode(prepare_texts(texts, config))


def _predict(
    prepared: Prepared, encoded: Encoded, ids: Sequence[Any], label: str | None = None
) -> np.ndarray:
    """The fine-tuned model's probabilities for `ids` of `encoded.inputs`; `label`: a progress
    bar's, shown when the run shows them."""
    from finetune.modeling.inference import predict_proba

    batch, shown = prepared.config.train.eval_batch_size, prepared.progress(label)
    model, inputs = encoded.model, encoded.inputs
    return predict_proba(model, ids, inputs, batch, prepared.device, encoded.bf16, shown)


def _predict_rows(prepared: Prepared, encoded: Encoded, which: str) -> np.ndarray:
    """The fine-tuned model's probabilities for the run's `which` rows ("evaluation" or
    "validation"), from the cached lower layers' states when there are some."""
    rows = encoded.rows
    ids = rows.eval_ids if which == "evaluation" else rows.val_ids
    return _predict(prepared, rows, ids, f"fine-tuned model, {which} rows")


def write(
    recipe: RecipeHooks,
    prepared: Prepared,
    data: RunData,
    encoded: Encoded,
    result: TrainResult,
    evaluated: Evaluated,
) -> Run:
    """Write the run folder (atomically: `staged`) and clear the resume checkpoints."""
    from finetune.modeling.classifiers import save_classifier

    config, folder, metrics = prepared.config, prepared.folder, evaluated.metrics
    wall = time.perf_counter() - prepared.started
    env = environment(prepared.device, config.train.seed)
    env.update(wall_seconds=round(wall, 2), peak_rss_mb=round(peak_memory_mb(), 1))
    served = evaluated.delivery.served
    run = Run(
        folder, config, data.labels, encoded.model, encoded.inputs, encoded.bf16, metrics, served
    )
    if not is_main_process():
        # Data-parallel workers trained in step with process 0; only it writes the folder.
        return run
    proba = evaluated.delivered_proba  # what the run serves: predictions.csv and the report
    with staged(folder) as tmp:
        saved = replace(config, output=str(folder), overwrite=False, resume=False)
        save_yaml(saved, tmp / "config.yaml")
        (tmp / "labels.json").write_text(
            json.dumps({"labels": data.labels}, indent=2), encoding="utf-8"
        )
        save_classifier(encoded.model, encoded.inputs, encoded.info, tmp / "adapter")
        save_served(tmp, served, metrics["delivered"])
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        # Every method's evaluation probabilities, so reports can be rebuilt without the model,
        # and the delivered model's (calibrated) under DELIVERED.
        np.savez_compressed(
            tmp / "scores.npz", y_true=data.y_eval, **evaluated.scores, **{DELIVERED: proba}
        )
        (tmp / "history.json").write_text(
            json.dumps({"epochs": result.history, "losses": result.losses}, indent=2),
            encoding="utf-8",
        )
        predictions = tmp / "predictions.csv"
        _write_predictions(predictions, data.evaluation, proba, data.labels, recipe.inputs)
        recipe.save_files(tmp, evaluated.context)
        write_report(
            tmp,
            f"{recipe.title}: fine-tuning report",
            metrics,
            result.history,
            result.losses,
            confusion(data.y_eval, proba, len(data.labels)),
            data.labels,
            _facts(recipe, prepared, data, encoded, result, env),
            _notes(config, data, result, evaluated.notes),
            y_true=data.y_eval,
            scores=evaluated.scores,
            sections=evaluated.sections,
        )
        for name, draw in evaluated.context.plots.items():
            draw(tmp / "plots" / name)
        env["pii_redacted"] = {part: c.as_dict() for part, c in data.redaction.items()}
        (tmp / "environment.json").write_text(json.dumps(env, indent=2), encoding="utf-8")
    prepared.checkpoints.clear()  # the run folder is complete: nothing left to resume
    return run


def _facts(
    recipe: RecipeHooks,
    prepared: Prepared,
    data: RunData,
    encoded: Encoded,
    result: TrainResult,
    env: dict[str, Any],
) -> dict[str, Any]:
    """The report's table of what was run, on what and how long it took."""
    config, info = prepared.config, encoded.info
    return {
        "recipe": recipe.title,
        "training data": f"{data.train.source}: {len(data.fit_rows)} rows for training, "
        + (
            f"{len(data.val_rows)} for picking the best epoch"
            if data.val_rows or not result.selection
            else "epochs chosen by inner folds of them"
        ),
        "evaluation data": f"{data.evaluation.source}: {len(data.evaluation)} rows",
        "classes": len(data.labels),
        "model": f"{config.model.name} ({info.pooling} pooling), LoRA "
        f"r={config.model.lora_r} on {info.lora_targets}, quantization {config.model.quant}"
        + (
            f", plus a wide linear part over {info.n_features} side-feature values"
            + (
                f" (numeric columns also as cubic splines, {config.model.spline_knots} knots)"
                if config.model.spline_knots
                else ""
            )
            if getattr(info, "n_features", 0)
            else ""
        ),
        "head initialisation": config.model.head_init,
        "precision": "bf16 autocast" if encoded.bf16 else "fp32",
        "optimizer": f"{config.train.optim}, gradient checkpointing "
        + ("on" if encoded.checkpointing else "off"),
        "steps": f"{result.steps} (best epoch {result.best_epoch}"
        + (f", by validation {result.select_metric})" if result.select_metric else ")"),
        "train time": f"{result.train_seconds:.1f} s ({result.samples_per_second:.1f} samples/s"
        + (f", {result.tokens_per_second:.0f} tokens/s)" if result.tokens_per_second else ")"),
        "wall time": f"{env['wall_seconds']:.1f} s",
        "peak memory": f"{env['peak_rss_mb']:.0f} MB RSS",
        "device": f"{prepared.device} ({env['processor']})",
        "seed": config.train.seed,
    }


def _notes(config: Config, data: RunData, result: TrainResult, input_notes: list[str]) -> list[str]:
    """The report's notes: redaction, a kept starting point, overlap, inputs, skips."""
    notes = []
    if config.data.redact_pii:
        notes.append(
            "PII redacted before training and prediction: "
            + "; ".join(
                f"{part}: {c.email} emails, {c.phone} phone numbers, {c.card} card numbers, "
                f"{c.national_id} ID numbers"
                for part, c in data.redaction.items()
            )
        )
    if result.selection:
        notes.append(selection_line(result.selection))
    elif result.best_epoch == 0:
        notes.append(
            "The validation rows preferred the starting point (epoch 0) to every fine-tuned "
            "epoch, so the saved model is the starting point: fine-tuning did not help here."
        )
    if data.overlap:
        notes.append(overlap_line(data.overlap))
    notes += input_notes
    skipped = data.skipped
    if skipped:
        notes.append(
            f"{len(skipped)} unreadable inputs skipped: {', '.join(skipped[:5])}"
            + (" ..." if len(skipped) > 5 else "")
        )
    return notes


def selection_line(selection: dict[str, Any]) -> str:
    """The report's sentence on how inner folds chose the number of epochs."""
    means = ", ".join(
        f"{row['epoch']:g}: {row['mean']:.3f} ± {row['std']:.3f}"
        for row in selection["per_epoch"]
        if row["mean"] is not None
    )
    chosen = selection["chosen_epoch"]
    outcome = (
        "the starting point (epoch 0) won, so the delivered model is the starting point"
        if chosen == 0
        else f"the model was then trained on every training row for {chosen:g} epochs"
    )
    return (
        f"Number of epochs chosen by {selection['method']}: mean validation "
        f"{selection['metric']} per epoch (± std over folds) {means}; {outcome}. "
        f"{selection['agreement']:.0%} of the folds alone would have chosen the same epoch."
    )


def is_main_process() -> bool:
    # torchrun and accelerate launch set RANK; a plain process is rank 0.
    return int(os.environ.get("RANK", "0")) == 0


# Beyond the four headline numbers, what a baseline's entry in metrics.json keeps.
BASELINE_EXTRAS = ("precision", "specificity", "brier")


def summary(metrics: dict[str, Any]) -> dict[str, Any]:
    """A baseline's entry in metrics.json: the headline four plus binary extras."""
    kept = headline(metrics)
    kept.update({k: metrics[k] for k in BASELINE_EXTRAS if k in metrics})
    return kept


def overlap_line(overlap: dict[str, Any]) -> str:
    """The report's and the console's sentence about evaluation texts seen in training."""
    shown = "; ".join(repr(text[:80]) for text in overlap["examples"])
    return (
        f"{overlap['count']:,} evaluation texts ({overlap['share']:.1%}) also occur in the "
        f"training data (same text up to case and spacing), e.g. {shown}. Templated or "
        "duplicated texts make the evaluation figures optimistic: de-duplicate before "
        "trusting them."
    )


def _stacked_features(first: Examples | None, second: Examples) -> Any:
    """The side data of `first`'s rows followed by `second`'s (None when there is none)."""
    if first is None or second.features is None:
        return second.features
    import pandas as pd

    return pd.concat([first.features, second.features], ignore_index=True)


def label_ids(values: Sequence[str], labels: list[str]) -> np.ndarray:
    """Each value's position in `labels` (values come from Examples.labels: a list or Column)."""
    index = {label: i for i, label in enumerate(labels)}
    return np.fromiter((index[value] for value in values), dtype=np.int64, count=len(values))


def baseline_sample(n_rows: int, config: Config) -> np.ndarray:
    """Positions (sorted) of the training rows the baselines fit on: all, or a seeded sample."""
    cap = config.eval.baseline_max_rows
    if cap is None and config.data.memory_map:
        cap = BASELINE_ROWS_MEMORY_MAPPED
    if cap is None or n_rows <= cap:
        return np.arange(n_rows)
    rng = np.random.default_rng(config.train.seed)
    return np.sort(rng.choice(n_rows, size=cap, replace=False))


def _redact(texts: Sequence[str]) -> tuple[Sequence[str], Any]:
    if not isinstance(texts, Column):
        return redact_all(texts)
    import pyarrow as pa

    total = RedactionCounts()

    def redact_chunk(chunk: list[str]) -> list[str]:
        redacted, counts = redact_all(chunk)
        total.add(counts)
        return redacted

    return texts.transform(redact_chunk, pa.string()), total


# Two-class labels whose meaning says which is positive: (negative, positive), compared in
# lower case. Numbers (0/1, -1/1, 0.0/1.0) and "not X"/"X" pairs are recognised separately.
OBVIOUS_PAIRS = (
    ("no", "yes"),
    ("n", "y"),
    ("false", "true"),
    ("f", "t"),
    ("negative", "positive"),
    ("neg", "pos"),
    ("benign", "malignant"),
    ("absent", "present"),
    ("healthy", "sick"),
    ("healthy", "diseased"),
    ("healthy", "disease"),
    ("normal", "abnormal"),
    ("control", "case"),
)
NEGATING_PREFIXES = ("not ", "not_", "not-", "non ", "non_", "non-")


def positive_label(labels: list[str], given: str | None, card: dict[str, Any] | None) -> str | None:
    """The positive class of a two-class task (None with more classes).

    In order: `data.positive_label` (--positive-label), else the data card's `positive_class`,
    else the second of an obvious pair (no/yes, 0/1, benign/malignant, ...). Never the
    alphabetical order: "disease"/"healthy" would make the healthy patients the positives and
    report their recall as the sensitivity. Every run and cross-validation resolve it here.
    """
    labels = sorted(labels)
    if given is not None:
        if len(labels) != 2:
            raise UserError(
                f"data.positive_label applies to two-class tasks; this data has {len(labels)} "
                "classes."
            )
        if given not in labels:
            raise UserError(
                f"data.positive_label {given!r} is not a label of the training data; its labels "
                f"are {labels[0]!r} and {labels[1]!r}."
            )
        return given
    if len(labels) != 2:
        return None
    declared = (card or {}).get("positive_class")
    if declared is not None:
        if str(declared) not in labels:
            where = card.get("_file") or f"data card {card.get('name', '')}".strip()
            raise UserError(
                f"{where}: positive_class {declared!r} is not a label of the training data "
                f"({labels[0]!r}, {labels[1]!r}); fix the card or pass --positive-label."
            )
        return str(declared)
    obvious = _obvious_positive(labels)
    if obvious is None:
        raise UserError(
            f"Two classes, {labels[0]!r} and {labels[1]!r}, and nothing says which is the "
            f"positive one (its recall, F1 and AUC are reported): pass --positive-label "
            f"{labels[1]} or --positive-label {labels[0]} (data.positive_label)."
        )
    return obvious


def _obvious_positive(labels: list[str]) -> str | None:
    a, b = labels
    try:
        numbers = {float(a): a, float(b): b}
    except ValueError:
        numbers = {}
    if set(numbers) in ({0.0, 1.0}, {-1.0, 1.0}):
        return numbers[1.0]
    lower = {a.strip().lower(): a, b.strip().lower(): b}
    for negative, positive in OBVIOUS_PAIRS:
        if set(lower) == {negative, positive}:
            return lower[positive]
    for one, other in ((a, b), (b, a)):
        if any(one.lower() == prefix + other.lower() for prefix in NEGATING_PREFIXES):
            return other
    return None


def label_order(
    labels: list[str], positive: str | None, card: dict[str, Any] | None = None
) -> list[str]:
    """Sorted labels, except that a two-class task's positive label (`positive_label`) goes
    second (id 1), where metrics, thresholds and reports look for it."""
    labels = sorted(labels)
    resolved = positive_label(labels, positive, card)
    if resolved is None:
        return labels
    return [label for label in labels if label != resolved] + [resolved]


def class_weights(y: np.ndarray, n_classes: int, mode: str) -> np.ndarray | None:
    """Inverse-frequency loss weights (scikit-learn's 'balanced'), 0 for a class the rows lack;
    None for mode 'none'."""
    if mode == "none":
        return None
    y = np.asarray(y)
    present = np.unique(y)
    weights = np.zeros(n_classes)
    # 'balanced' divides by the number of classes it is given; rescaled to all n_classes, the
    # weights stay len(y) / (n_classes * count), as runs have always used, when a class is absent.
    balanced = compute_class_weight("balanced", classes=present, y=y)
    weights[present] = balanced * len(present) / n_classes
    return weights


def _write_predictions(
    path: Path, examples: Examples, proba: np.ndarray, labels: list[str], kind: str = "text"
) -> None:
    import pandas as pd

    predicted = proba.argmax(axis=1)
    pd.DataFrame(
        {
            "path" if kind == "image" else "text": to_list(examples.texts),
            "label": to_list(examples.labels),
            "predicted_label": [labels[i] for i in predicted],
            "probability": proba[np.arange(len(predicted)), predicted].round(6),
        }
    ).to_csv(path, index=False)
