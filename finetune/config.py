"""One typed configuration tree for every recipe: YAML in, CLI overrides on top, YAML out.

The resolution order is: engine defaults < recipe defaults < the recipe's preset (`--preset`)
< YAML file < CLI flags (`--set` last).
Every option lives here once, with a comment that documents it; the saved `config.yaml`
of a run is the complete, resolved tree, so a run can be repeated from it alone.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Interval, Le

from finetune.errors import UserError

# Field types carry their own limits: pydantic checks every value against them (`_coerce`),
# so a bad option gets one line naming it, and `validate` only holds rules across fields.
Positive = Annotated[int, Gt(0)]
NonNegative = Annotated[int, Ge(0)]
Fraction = Annotated[float, Interval(ge=0, lt=1)]  # [0, 1)
Share = Annotated[float, Interval(gt=0, le=1)]  # (0, 1]
Quant = Literal["none", "8bit", "4bit"]
Pooling = Literal["auto", "mean", "cls", "last"]
HeadInit = Literal["probe", "random", "wide"]
Precision = Literal["auto", "bf16", "fp32"]
Optim = Literal["adamw", "adamw_8bit", "paged_adamw_8bit"]
ClassWeight = Literal["none", "auto"]
SelectMetric = Literal["auto", "f1", "auc", "loss"]
Deliver = Literal["best", "finetuned"]
Calibrate = Literal["auto", "none", "platt", "isotonic"]


@dataclass
class DataConfig:
    # Training file (CSV, JSONL or Parquet). None: the recipe's bundled dataset.
    path: str | None = None
    # Evaluation file. None: a stratified, seeded hold-out of `path` (or the bundled test split).
    eval_path: str | None = None
    text_column: str = "text"
    label_column: str = "label"
    # Share of the training file held out for evaluation when there is no eval file.
    eval_fraction: Fraction = 0.2
    # Seed of that evaluation hold-out and of cross-validation folds. Fixed, not train.seed:
    # runs with different --seed are then scored on the same rows, so their spread measures
    # training variance, not a moving test set.
    split_seed: int = 42
    # Share of the training rows held out to pick the best epoch (never the evaluation split).
    val_fraction: Fraction = 0.1
    # Tokens per text; longer texts are truncated (and counted in the report).
    max_length: Positive = 128
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
    pooling: Pooling = "auto"
    # Quantize the frozen backbone with bitsandbytes: none, 8bit or 4bit.
    quant: Quant = "none"
    lora_r: Positive = 16
    lora_alpha: Positive = 32
    lora_dropout: Fraction = 0.1
    # Dropout on the pooled vector before the head (training only).
    head_dropout: Fraction = 0.1
    # LoRA on the top N transformer layers only (None: on every layer). The layers below are
    # frozen, so for text their output is computed once and cached instead of every step:
    # training then runs through the top N layers alone (faster, less memory).
    lora_layers: Positive | None = None
    # Module names to adapt. None: chosen per architecture.
    target_modules: list[str] | None = None
    # Start the classifier head from a logistic regression on frozen embeddings, or at random;
    # or (wide, with side_features) the text head silent (zero weights) and the wide part as
    # the logistic regression on the encoded side features: training starts at that baseline.
    head_init: HeadInit = "probe"
    # Feed a table's numeric and categorical columns to the classifier beside the text: a wide
    # linear part over them (encoded on the training rows) adds to the text head's logits.
    side_features: bool = False
    # With side_features: each numeric column (5 or more distinct training values) also enters
    # the wide part as a cubic B-spline over this many quantile knots, so the wide part can
    # bend (a risk that rises only past a threshold). 0: linear only.
    spline_knots: NonNegative = 0
    # With head_init=wide: keep the wide part's fitted weights fixed (the text part learns the
    # residual) instead of training them at the head's learning rate.
    wide_frozen: bool = False
    # Only for models whose code lives on the hub; off unless you trust the model's author.
    trust_remote_code: bool = False
    # Text classifiers: put before every text. auto: the model's own sentence-transformers
    # "Classification" prompt where it ships one (EmbeddingGemma: "task: classification |
    # query: "), none otherwise; or a string of your own; "" for none.
    prompt: str = "auto"


@dataclass
class TrainConfig:
    epochs: Annotated[float, Gt(0)] = 5.0
    # Stop after this many optimizer steps (overrides epochs when set).
    max_steps: Positive | None = None
    # At most this many optimizer steps whatever `epochs` asks (a large table then trains for
    # fewer epochs instead of for hours); max_steps overrides it. None: no cap.
    step_budget: Positive | None = None
    batch_size: Positive = 32
    eval_batch_size: Positive = 128
    # Learning rate of the LoRA weights.
    learning_rate: float = 1e-3
    # Learning rate of the classifier head (a fresh layer learns faster than the encoder).
    head_learning_rate: float = 1e-3
    weight_decay: float = 0.01
    warmup_ratio: float = 0.06
    # 0 by default: smoothing fights a head that starts from the (confident) linear probe
    # (docs/recipes/customer-service.md, "How the defaults were chosen").
    label_smoothing: float = 0.0
    # Keep an exponential moving average of the LoRA and head weights and use it for
    # validation, the kept epoch and the delivered model (0: off). Its decay ramps up as
    # min(ema_decay, (1 + step) / (10 + step)), so a short run is not stuck near its start.
    ema_decay: Fraction = 0.0
    # Mixup for images: each training batch is blended with a shuffled copy of itself, by a
    # share drawn from Beta(mixup, mixup), and the loss is blended the same way (0: off).
    # With cached views (image.cache_views) the frozen blocks' output is blended.
    mixup: Annotated[float, Ge(0)] = 0.0
    # Cutmix for images: each training batch gets a rectangle pasted from a shuffled copy of
    # itself, its area share drawn from Beta(cutmix, cutmix), and the loss is blended by the
    # area each image keeps (0: off). With cached views, the rectangle is cut from the frozen
    # blocks' feature maps. With mixup also on, each batch takes one of the two at random.
    cutmix: Annotated[float, Ge(0)] = 0.0
    max_grad_norm: float = 1.0
    # auto: bf16 autocast where the hardware does bf16 fast (CUDA, CPUs with AVX512-BF16/AMX).
    precision: Precision = "auto"
    # Batches drawn from length-sorted pools so padding is small.
    group_by_length: bool = True
    # Split a batch of texts (or of reply pairs) whose rows x longest row exceed this many
    # tokens into pieces whose gradients add up to the batch's (same step, same loss): memory
    # for activations is bounded by the budget, not by the longest batch. None: never split.
    max_batch_tokens: Positive | None = None
    # Write a resumable checkpoint every N optimizer steps (and at each epoch end); 0: never.
    checkpoint_steps: NonNegative = 50
    # adamw (torch), adamw_8bit (bitsandbytes, 8-bit optimizer state) or paged_adamw_8bit
    # (8-bit state paged to CPU memory under GPU memory pressure; CUDA only).
    optim: Optim = "adamw"
    # Recompute activations in the backward pass: less memory, about a third slower.
    # None (auto): on for quantized runs on CUDA, where memory is the point; off elsewhere.
    gradient_checkpointing: bool | None = None
    # auto: weight the loss by inverse class frequency (rare positives count as much as the
    # common class); none: every example counts the same.
    class_weight: ClassWeight = "none"
    # The validation figure that picks the best epoch (ties: the lower validation log-loss).
    # auto: AUC for two-class tasks (F1 at the 0.5 threshold moves with a threshold a risk
    # model is not used at), macro-F1 for multiclass; f1 (macro-F1 of the argmax), auc (the
    # positive class's, or macro one-vs-rest) or loss (validation log-loss) for any task.
    select_metric: SelectMetric = "auto"
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
    size: Annotated[int, Ge(32)] | None = None
    # Training-time augmentation (never at evaluation or prediction): random crops keeping at
    # least this share of the image area, resized back to `size` (1.0: no cropping).
    crop_scale: Share = 0.8
    # Random horizontal flips in training; turn off where a mirror image is another class
    # (digits, text, left/right).
    hflip: bool = True
    # Stop at an unreadable image file instead of skipping it (skips are listed in the report).
    strict: bool = False
    # Training-time colour jitter: brightness, contrast and saturation each scaled by a random
    # factor in [1 - x, 1 + x] (0: off).
    color_jitter: Fraction = 0.0
    # Training-time RandAugment-style operations (rotate, shear, translate, solarize,
    # posterize, equalize, contrast, ...): this many per image, drawn at random (0: off), each
    # at randaugment_magnitude on RandAugment's 0-30 scale.
    randaugment: NonNegative = 0
    randaugment_magnitude: Annotated[int, Ge(0), Le(30)] = 9
    # Evaluation and prediction average the logits of each image and its mirror image.
    tta_flip: bool = False
    # EfficientNet-Lite: LoRA on the top N of its blocks (and the head convolution). None: 8.
    lora_blocks: Positive | None = None
    # EfficientNet-Lite: compute the frozen blocks below LoRA once per image instead of every
    # step, for this many views of each image: the image as evaluated, plus views - 1 random
    # crops/flips; each training step draws one of them. 0: no cache (fresh augmentation at
    # every step, every block runs every step).
    cache_views: NonNegative = 0


@dataclass
class EvalConfig:
    # Binary tasks: also report the decision threshold that reaches this recall (sensitivity)
    # on the validation rows (data.val_fraction), and the recall, specificity and precision it
    # then gives on the evaluation split. None: the 0.5 threshold only.
    target_recall: Share | None = None
    # Stratified K-fold cross-validation over the training data (0: one train/eval split).
    folds: NonNegative = 0
    # Folds trained at once (cross-validation, --holdout-group each), each in its own process
    # with its share of the CPU threads. 0: auto (one per core, at most 4, on a CPU-only
    # machine; 1 with a GPU or a data-parallel launch).
    fold_workers: NonNegative = 0
    # Fit the baselines (and the probe that starts the head) on a seeded sample of at most this
    # many training rows: they hold their data in memory. None: every row, or 20,000 with
    # data.memory_map.
    baseline_max_rows: Annotated[int, Ge(2)] | None = None
    # What the run serves (predict, evaluate --run, Run.predict_proba): best = the fine-tuned
    # model, unless a baseline beats it on the validation rows by more than a small margin
    # (docs/evaluation.md); finetuned = always the fine-tuned model (the report still says
    # when a baseline led).
    deliver: Deliver = "best"
    # Two-class tasks: map the delivered model's probabilities through a calibration fitted on
    # the validation rows: platt (logistic on the logit), isotonic, none, or auto (the one of
    # the three with the lowest cross-fitted log-loss on the validation rows).
    calibrate: Calibrate = "auto"
    # Baselines whose class probabilities are averaged, in equal shares, with the fine-tuned
    # model's: a form of the fine-tuned model the validation rows choose as they choose the
    # kept epoch (the higher figure; a baseline must then beat it by the usual margin). E.g.
    # [tfidf_logreg]: its word features make mistakes an encoder does not.
    blend: list[str] = field(default_factory=list)


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
    # The recipe's named set of defaults this config was built on (`--preset`); its values
    # are already resolved into the sections above. None: no preset.
    preset: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> Config:
        """Every field against its type (values set in code too), then the rules that
        involve more than one field."""
        _check_fields(self, "")
        if self.model.head_init == "wide" and not self.model.side_features:
            raise UserError(
                "model.head_init=wide starts the wide part of side features: set "
                "model.side_features=true, or choose head_init probe or random."
            )
        if self.model.spline_knots == 1:
            raise UserError(
                "model.spline_knots: a spline needs at least 2 knots; set 0 (linear) or 2 or more."
            )
        if self.eval.folds == 1:
            raise UserError("eval.folds must be 0 (no cross-validation) or >= 2, got 1.")
        if self.data.memory_map and self.eval.folds:
            raise UserError(
                "data.memory_map does not combine with eval.folds: cross-validation pools the "
                "data in memory. Drop one of them."
            )
        select_folds(self.train.select_folds, 0)  # checks the value
        return self


def _check_fields(obj: Any, prefix: str) -> None:
    hints = typing.get_type_hints(type(obj), include_extras=True)
    for item in dataclasses.fields(obj):
        value = getattr(obj, item.name)
        if dataclasses.is_dataclass(value):
            _check_fields(value, f"{prefix}{item.name}.")
        elif item.name != "options":
            _coerce(value, hints[item.name], f"{prefix}{item.name}")


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
    hints = typing.get_type_hints(type(obj), include_extras=True)
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
    """Check (and, for strings from the command line, convert) a value to its field's type and
    limits: pydantic's lax mode ("3" -> 3, "yes" -> True), a comma-separated string for a list."""
    import pydantic

    if value is None and not _optional(hint):
        raise UserError(f"{where} cannot be empty.")
    if isinstance(value, str) and any(typing.get_origin(kind) is list for kind in _kinds(hint)):
        value = [part.strip() for part in value.split(",") if part.strip()]
    try:
        return _adapter(hint).validate_python(value)
    except pydantic.ValidationError as error:
        problems = [e for e in error.errors() if e["type"] != "none_required"]
        wanted = _wanted(problems[0] if problems else error.errors()[0], hint)
        raise UserError(f"{where} must be {wanted}; got {value!r}.") from None


# pydantic's error types, in the words of the rest of the command line's messages.
_LIMITS = {
    "greater_than": lambda c: "positive" if c["gt"] == 0 else f"greater than {c['gt']}",
    "greater_than_equal": lambda c: "0 or more" if c["ge"] == 0 else f"at least {c['ge']}",
    "less_than": lambda c: f"less than {c['lt']}",
    "less_than_equal": lambda c: f"at most {c['le']}",
}


def _wanted(problem: dict[str, Any], hint: Any) -> str:
    kind = problem["type"]
    if kind in _LIMITS:
        return _LIMITS[kind](problem["ctx"])
    if kind == "literal_error":
        choices = [c for k in _kinds(hint) for c in typing.get_args(k) if isinstance(c, str)]
        return "one of " + ", ".join(choices)
    return " or ".join(_name(k) for k in _kinds(hint) if k is not type(None))


def _name(kind: Any) -> str:
    while typing.get_origin(kind) is Annotated:
        kind = typing.get_args(kind)[0]
    return getattr(kind, "__name__", str(kind))


def _kinds(hint: Any) -> tuple[Any, ...]:
    union = typing.get_origin(hint) in (typing.Union, types.UnionType)
    return typing.get_args(hint) if union else (hint,)


def _optional(hint: Any) -> bool:
    return type(None) in _kinds(hint)


@functools.cache
def _adapter(hint: Any) -> Any:
    import pydantic

    # A YAML number given for a text field (a label such as 1) is read as its text.
    return pydantic.TypeAdapter(hint, config=pydantic.ConfigDict(coerce_numbers_to_str=True))


def yaml_problem(error: Exception, offset: int = 0) -> str:
    """A YAML parser's error in one line: where (its line + `offset`: the lines before the
    parsed text in its file), and what it expected."""
    mark, problem = getattr(error, "problem_mark", None), getattr(error, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(error).split())
    return f"line {mark.line + 1 + offset}, column {mark.column + 1}: {problem}."


def load_yaml(
    path: str | Path, holds: str = "options (sections data, model, train)"
) -> dict[str, Any]:
    """A YAML file's mapping (of `holds`, as the error says); one line for anything else."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise UserError(f"Config file not found: {path}.")
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise UserError(f"{path} is not valid YAML: {yaml_problem(error)}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text; save it as UTF-8.") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise UserError(f"{path} must hold a mapping of {holds}.")
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


def config_value(config: Config, dotted: str) -> Any:
    """The value at a dotted key (`data.text_column`), or a whole section (`image`)."""
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


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


@dataclass(frozen=True)
class Preset:
    """A named set of defaults a recipe offers (`train --preset NAME`): config overrides above
    the recipe's defaults and below a `--config` file and flags."""

    description: str  # one line for `train --help`
    values: dict[str, Any]  # nested config overrides (sections data, model, train)


def preset_layer(recipe_name: str, presets: dict[str, Preset], name: str | None) -> dict[str, Any]:
    """The overrides of preset `name` (with the name itself, recorded in config.yaml); {} for
    None. An unknown name stops with one line listing the recipe's presets."""
    if name is None:
        return {}
    if name not in presets:
        offered = ", ".join(presets) if presets else "none"
        raise UserError(f"The {recipe_name} recipe has no preset {name!r}; its presets: {offered}.")
    return deep_update(presets[name].values, {"preset": name})


def yaml_preset(yaml_path: str | Path | None) -> str | None:
    """The `preset:` a YAML config file names, if any."""
    if yaml_path is None:
        return None
    preset = load_yaml(yaml_path).get("preset")
    return None if preset is None else str(preset)


def resolve(
    recipe_name: str,
    recipe_defaults: dict[str, Any],
    yaml_path: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    options: Any = None,
) -> Config:
    """Engine defaults < recipe defaults (with a preset's values on top) < YAML file <
    explicit overrides.

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
