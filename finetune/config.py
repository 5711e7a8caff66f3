"""One typed configuration tree for every recipe: YAML in, CLI overrides on top, YAML out.

The resolution order is: engine defaults < recipe defaults < YAML file < CLI flags.
Every option lives here once, with a comment that documents it; the saved `config.yaml`
of a run is the complete, resolved tree, so a run can be repeated from it alone.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.errors import UserError

QUANT_CHOICES = ("none", "8bit", "4bit")
POOLING_CHOICES = ("auto", "mean", "cls", "last")
HEAD_INIT_CHOICES = ("probe", "random", "wide")
PRECISION_CHOICES = ("auto", "bf16", "fp32")
OPTIM_CHOICES = ("adamw", "adamw_8bit", "paged_adamw_8bit")
CLASS_WEIGHT_CHOICES = ("none", "auto")
SELECT_METRIC_CHOICES = ("auto", "f1", "auc", "loss")
DELIVER_CHOICES = ("best", "finetuned")
CALIBRATE_CHOICES = ("auto", "none", "platt", "isotonic")


@dataclass
class DataConfig:
    # Training file (CSV, JSONL or Parquet). None: the recipe's bundled dataset.
    path: str | None = None
    # Evaluation file. None: a stratified, seeded hold-out of `path` (or the bundled test split).
    eval_path: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    # Share of the training file held out for evaluation when there is no eval file.
    eval_fraction: float = 0.2
    # Seed of that evaluation hold-out and of cross-validation folds. Fixed, not train.seed:
    # runs with different --seed are then scored on the same rows, so their spread measures
    # training variance, not a moving test set.
    split_seed: int = 42
    # Share of the training rows held out to pick the best epoch (never the evaluation split).
    val_fraction: float = 0.1
    # Tokens per text; longer texts are truncated (and counted in the report).
    max_length: int = 128
    # Replace emails, phone numbers and card numbers before training and prediction.
    redact_pii: bool = False
    # Binary tasks: the label counted as positive (recall, F1, AUC are its). None: the data
    # card's positive_class, else an obvious pair (no/yes, 0/1...), else the run stops and asks.
    positive_label: str | None = None
    # Keep texts, labels and token ids in memory-mapped Arrow files on disk instead of in
    # memory (recipes that read a text table): for training files larger than RAM.
    memory_map: bool = False


@dataclass
class ModelConfig:
    # A bundled short name (see `finetune models`), a local folder, or a Hugging Face model id.
    name: str = "minilm"
    # How token states become one vector: mean, cls, last (decoders), or auto (per model).
    pooling: str = "auto"
    # Quantize the frozen backbone with bitsandbytes: none, 8bit or 4bit.
    quant: str = "none"
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    # Dropout on the pooled vector before the head (training only).
    head_dropout: float = 0.1
    # LoRA on the top N transformer layers only (None: on every layer). The layers below are
    # frozen, so for text their output is computed once and cached instead of every step:
    # training then runs through the top N layers alone (faster, less memory).
    lora_layers: int | None = None
    # Module names to adapt. None: chosen per architecture.
    target_modules: list[str] | None = None
    # Start the classifier head from a logistic regression on frozen embeddings, or at random;
    # or (wide, with side_features) the text head silent (zero weights) and the wide part as
    # the logistic regression on the encoded side features: training starts at that baseline.
    head_init: str = "probe"
    # Feed a table's numeric and categorical columns to the classifier beside the text: a wide
    # linear part over them (encoded on the training rows) adds to the text head's logits.
    side_features: bool = False
    # With head_init=wide: keep the wide part's fitted weights fixed (the text part learns the
    # residual) instead of training them at the head's learning rate.
    wide_frozen: bool = False
    # Only for models whose code lives on the hub; off unless you trust the model's author.
    trust_remote_code: bool = False


@dataclass
class TrainConfig:
    epochs: float = 5.0
    # Stop after this many optimizer steps (overrides epochs when set).
    max_steps: int | None = None
    # At most this many optimizer steps whatever `epochs` asks (a large table then trains for
    # fewer epochs instead of for hours); max_steps overrides it. None: no cap.
    step_budget: int | None = None
    batch_size: int = 32
    eval_batch_size: int = 128
    # Learning rate of the LoRA weights.
    learning_rate: float = 1e-3
    # Learning rate of the classifier head (a fresh layer learns faster than the encoder).
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    # 0 by default: smoothing fights a head that starts from the (confident) linear probe
    # (docs/recipes/customer-service.md, "How the defaults were chosen").
    label_smoothing: float = 0.0
    max_grad_norm: float = 1.0
    # auto: bf16 autocast where the hardware does bf16 fast (CUDA, CPUs with AVX512-BF16/AMX).
    precision: str = "auto"
    # Batches drawn from length-sorted pools so padding is small.
    group_by_length: bool = True
    # Split a batch of texts whose rows x longest text exceed this many tokens into pieces
    # whose gradients add up to the batch's (same step, same loss): memory for activations is
    # bounded by the budget, not by the longest batch. None: never split.
    max_batch_tokens: int | None = None
    # Write a resumable checkpoint every N optimizer steps (and at each epoch end); 0: never.
    checkpoint_steps: int = 50
    # adamw (torch), adamw_8bit (bitsandbytes, 8-bit optimizer state) or paged_adamw_8bit
    # (8-bit state paged to CPU memory under GPU memory pressure; CUDA only).
    optim: str = "adamw"
    # Recompute activations in the backward pass: less memory, about a third slower.
    # None (auto): on for quantized runs on CUDA, where memory is the point; off elsewhere.
    gradient_checkpointing: bool | None = None
    # auto: weight the loss by inverse class frequency (rare positives count as much as the
    # common class); none: every example counts the same.
    class_weight: str = "none"
    # The validation figure that picks the best epoch (ties: the lower validation log-loss).
    # auto: AUC for two-class tasks (F1 at the 0.5 threshold moves with a threshold a risk
    # model is not used at), macro-F1 for multiclass; f1 (macro-F1 of the argmax), auc (the
    # positive class's, or macro one-vs-rest) or loss (validation log-loss) for any task.
    select_metric: str = "auto"
    # Choose the number of epochs (0: the starting point, e.g. the linear probe) by K inner
    # folds of the training rows, then train on all of them for that many epochs: for small
    # data, where a 10% validation hold-out is a few dozen rows. 0: off (the validation rows
    # pick the epoch); K >= 2: K folds; auto: 5 folds under 2,000 training rows, else off;
    # auto:K: K folds under 2,000 training rows. Their out-of-fold predictions then choose the
    # delivered model, its calibration and threshold too (finetune.evaluation.selection).
    select_folds: str = "0"
    seed: int = 42


@dataclass
class ImageConfig:
    # Side of the square model input in pixels. None: the backbone's own (224 for
    # EfficientNet-Lite0; the image processor's size for a Hugging Face model).
    size: int | None = None
    # Training-time augmentation (never at evaluation or prediction): random crops keeping at
    # least this share of the image area, resized back to `size` (1.0: no cropping).
    crop_scale: float = 0.8
    # Random horizontal flips in training; turn off where a mirror image is another class
    # (digits, text, left/right).
    hflip: bool = True
    # Stop at an unreadable image file instead of skipping it (skips are listed in the report).
    strict: bool = False
    # Training-time colour jitter: brightness, contrast and saturation each scaled by a random
    # factor in [1 - x, 1 + x] (0: off).
    color_jitter: float = 0.0
    # Evaluation and prediction average the logits of each image and its mirror image.
    tta_flip: bool = False
    # EfficientNet-Lite: LoRA on the top N of its blocks (and the head convolution). None: 8.
    lora_blocks: int | None = None
    # EfficientNet-Lite: compute the frozen blocks below LoRA once per image instead of every
    # step, for this many views of each image: the image as evaluated, plus views - 1 random
    # crops/flips; each training step draws one of them. 0: no cache (fresh augmentation at
    # every step, every block runs every step).
    cache_views: int = 0


@dataclass
class EvalConfig:
    # Binary tasks: also report the decision threshold that reaches this recall (sensitivity)
    # on the validation rows (data.val_fraction), and the recall, specificity and precision it
    # then gives on the evaluation split. None: the 0.5 threshold only.
    target_recall: float | None = None
    # Stratified K-fold cross-validation over the training data (0: one train/eval split).
    folds: int = 0
    # Fit the baselines (and the probe that starts the head) on a seeded sample of at most this
    # many training rows: they hold their data in memory. None: every row, or 20,000 with
    # data.memory_map.
    baseline_max_rows: int | None = None
    # What the run serves (predict, evaluate --run, Run.predict_proba): best = the fine-tuned
    # model, unless a baseline beats it on the validation rows by more than a small margin
    # (docs/evaluation.md); finetuned = always the fine-tuned model (the report still says
    # when a baseline led).
    deliver: str = "best"
    # Two-class tasks: map the delivered model's probabilities through a calibration fitted on
    # the validation rows: platt (logistic on the logit), isotonic, none, or auto (the one of
    # the three with the lowest cross-fitted log-loss on the validation rows).
    calibrate: str = "auto"


@dataclass
class Config:
    recipe: str = ""
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Image recipes only: input size, augmentation, unreadable files.
    image: ImageConfig = field(default_factory=ImageConfig)
    # The recipe's own options (a dataclass the recipe declares as `Recipe.Options`).
    options: Any = None
    # Run folder. None: runs/<recipe>-<timestamp>.
    output: str | None = None
    # Replace an existing output folder.
    overwrite: bool = False
    # Continue a killed run from its last checkpoint (needs the same output folder).
    resume: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> Config:
        _check_choice("model.quant", self.model.quant, QUANT_CHOICES)
        _check_choice("model.pooling", self.model.pooling, POOLING_CHOICES)
        _check_choice("model.head_init", self.model.head_init, HEAD_INIT_CHOICES)
        if self.model.head_init == "wide" and not self.model.side_features:
            raise UserError(
                "model.head_init=wide starts the wide part of side features: set "
                "model.side_features=true, or choose head_init probe or random."
            )
        _check_choice("train.precision", self.train.precision, PRECISION_CHOICES)
        _check_choice("train.optim", self.train.optim, OPTIM_CHOICES)
        _check_choice("train.class_weight", self.train.class_weight, CLASS_WEIGHT_CHOICES)
        _check_choice("train.select_metric", self.train.select_metric, SELECT_METRIC_CHOICES)
        _check_choice("eval.deliver", self.eval.deliver, DELIVER_CHOICES)
        _check_choice("eval.calibrate", self.eval.calibrate, CALIBRATE_CHOICES)
        if self.eval.target_recall is not None and not 0 < self.eval.target_recall <= 1:
            raise UserError(f"eval.target_recall must be in (0, 1], got {self.eval.target_recall}.")
        if self.eval.folds == 1 or self.eval.folds < 0:
            raise UserError(
                f"eval.folds must be 0 (no cross-validation) or >= 2, got {self.eval.folds}."
            )
        if self.eval.baseline_max_rows is not None and self.eval.baseline_max_rows < 2:
            raise UserError(
                f"eval.baseline_max_rows must be at least 2, got {self.eval.baseline_max_rows}."
            )
        if self.data.memory_map and self.eval.folds:
            raise UserError(
                "data.memory_map does not combine with eval.folds: cross-validation pools the "
                "data in memory. Drop one of them."
            )
        if self.train.epochs <= 0:
            raise UserError(f"train.epochs must be positive, got {self.train.epochs}.")
        if self.train.max_steps is not None and self.train.max_steps <= 0:
            raise UserError(f"train.max_steps must be positive, got {self.train.max_steps}.")
        if self.train.step_budget is not None and self.train.step_budget <= 0:
            raise UserError(f"train.step_budget must be positive, got {self.train.step_budget}.")
        if self.train.max_batch_tokens is not None and self.train.max_batch_tokens < 1:
            raise UserError(
                f"train.max_batch_tokens must be positive, got {self.train.max_batch_tokens}."
            )
        for name in ("batch_size", "eval_batch_size"):
            if getattr(self.train, name) <= 0:
                raise UserError(f"train.{name} must be positive.")
        for name in ("eval_fraction", "val_fraction"):
            value = getattr(self.data, name)
            if not 0 <= value < 1:
                raise UserError(f"data.{name} must be in [0, 1), got {value}.")
        if not 0 <= self.model.head_dropout < 1:
            raise UserError(f"model.head_dropout must be in [0, 1), got {self.model.head_dropout}.")
        if self.image.size is not None and self.image.size < 32:
            raise UserError(f"image.size must be at least 32 pixels, got {self.image.size}.")
        if not 0 < self.image.crop_scale <= 1:
            raise UserError(f"image.crop_scale must be in (0, 1], got {self.image.crop_scale}.")
        if not 0 <= self.image.color_jitter < 1:
            raise UserError(f"image.color_jitter must be in [0, 1), got {self.image.color_jitter}.")
        if self.image.cache_views < 0:
            raise UserError(f"image.cache_views must be 0 or more, got {self.image.cache_views}.")
        if self.image.lora_blocks is not None and self.image.lora_blocks < 1:
            raise UserError(f"image.lora_blocks must be positive, got {self.image.lora_blocks}.")
        select_folds(self.train.select_folds, 0)  # checks the value
        if self.model.lora_r <= 0:
            raise UserError(f"model.lora_r must be positive, got {self.model.lora_r}.")
        if self.model.lora_layers is not None and self.model.lora_layers <= 0:
            raise UserError(
                f"model.lora_layers must be positive (or null for every layer), "
                f"got {self.model.lora_layers}."
            )
        return self


# train.select_folds=auto: inner folds below this many training rows, and how many.
AUTO_FOLDS_BELOW, AUTO_FOLDS = 2_000, 5


def select_folds(value: str, n_rows: int) -> int:
    """train.select_folds resolved for `n_rows` training rows: the number of inner folds, 0
    for none."""
    if value == "auto":
        return AUTO_FOLDS if n_rows < AUTO_FOLDS_BELOW else 0
    if value.startswith("auto:"):  # auto:K: K inner folds below AUTO_FOLDS_BELOW rows
        folds = select_folds(value[len("auto:") :], n_rows)
        return folds if n_rows < AUTO_FOLDS_BELOW else 0
    try:
        folds = int(value)
    except ValueError:
        folds = -1
    if folds == 1 or folds < 0:
        raise UserError(
            f"train.select_folds must be auto, 0 (off) or a number of folds >= 2, got {value!r}."
        )
    return folds


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"{name} must be one of {', '.join(choices)}; got {value!r}.")


def merge(config: Config, updates: dict[str, Any], source: str) -> Config:
    """Return a copy of `config` with nested `updates` applied; unknown keys are errors."""
    return _merge_dataclass(config, updates, source, prefix="")


def _merge_dataclass(obj: Any, updates: dict[str, Any], source: str, prefix: str) -> Any:
    if obj is None and prefix == "options.":
        if updates:
            raise UserError(f"{source}: this recipe has no options; got {sorted(updates)}.")
        return None
    if not isinstance(updates, dict):
        raise UserError(f"{source}: '{prefix.rstrip('.') or 'top level'}' must be a mapping.")
    fields = {f.name: f for f in dataclasses.fields(obj)}
    hints = typing.get_type_hints(type(obj))
    changes: dict[str, Any] = {}
    for key, value in updates.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f" Did you mean '{prefix}{close[0]}'?" if close else ""
            raise UserError(
                f"{source}: unknown option '{prefix}{key}'.{hint} "
                f"Known options here: {', '.join(prefix + name for name in fields)}."
            )
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current) or (key == "options" and not prefix):
            changes[key] = _merge_dataclass(current, value, source, prefix=f"{prefix}{key}.")
        else:
            changes[key] = _coerce(value, hints[key], f"{source}: {prefix}{key}")
    return dataclasses.replace(obj, **changes)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Check (and, for strings from the command line, convert) a value to its field's type."""
    allowed = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if value is None:
        if type(None) in allowed:
            return None
        raise UserError(f"{where} cannot be empty.")
    for kind in allowed:
        origin = typing.get_origin(kind) or kind
        if origin is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.lower() in ("true", "yes", "1")
        elif origin in (int, float):
            if isinstance(value, bool):
                continue
            if isinstance(value, int | float) and (origin is float or float(value).is_integer()):
                return origin(value)
            if isinstance(value, str):
                try:
                    return origin(value)
                except ValueError:
                    continue
        elif origin is str:
            if isinstance(value, str | int | float) and not isinstance(value, bool):
                return str(value)
        elif origin is list:
            if isinstance(value, str):
                value = [part.strip() for part in value.split(",") if part.strip()]
            if isinstance(value, list | tuple):
                return [str(item) for item in value]
    expected = " or ".join(getattr(k, "__name__", str(k)) for k in allowed if k is not type(None))
    raise UserError(f"{where} must be {expected}; got {value!r}.")


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"Config file not found: {path}.")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML: {error}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; save it as UTF-8.") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UserError(f"{path} must hold a mapping of options (sections data, model, train).")
    return loaded


def deep_update(base: dict[str, Any], updates: dict[str, Any]) -> dict[str, Any]:
    """A copy of nested mapping `base` with `updates` applied (sections merged, not replaced)."""
    merged = dict(base)
    for key, value in updates.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_update(merged[key], value)
        else:
            merged[key] = value
    return merged


def dotted_to_nested(pairs: dict[str, Any], skip_none: bool = True) -> dict[str, Any]:
    """{'train.seed': 3} -> {'train': {'seed': 3}}; None values (flags not given) are skipped."""
    nested: dict[str, Any] = {}
    for dotted, value in pairs.items():
        if value is None and skip_none:
            continue
        node = nested
        *parents, leaf = dotted.split(".")
        for parent in parents:
            node = node.setdefault(parent, {})
        node[leaf] = value
    return nested


def parse_set_options(items: list[str]) -> dict[str, Any]:
    """Parse repeated `--set key.path=value` flags into a nested mapping ('null' clears)."""
    pairs: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(
                f"--set expects KEY=VALUE (e.g. train.learning_rate=5e-4); got {item!r}."
            )
        pairs[key.strip()] = None if value.strip().lower() in ("null", "none") else value.strip()
    return dotted_to_nested(pairs, skip_none=False)


def resolve(
    recipe_name: str,
    recipe_defaults: dict[str, Any],
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    options: Any = None,
) -> Config:
    """Engine defaults < recipe defaults < YAML file < explicit overrides.

    `options` is the recipe's own options dataclass instance (None: the recipe has none).
    """
    config = Config(recipe=recipe_name, options=options)
    config = merge(config, recipe_defaults, source=f"recipe {recipe_name} defaults")
    if yaml_path is not None:
        from_file = load_yaml(yaml_path)
        from_file.pop("recipe", None)
        config = merge(config, from_file, source=str(yaml_path))
    if overrides:
        config = merge(config, overrides, source="command line")
    return config.validate()


def save_yaml(config: Config, path: Path) -> None:
    import yaml

    path.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False), encoding="utf-8")
