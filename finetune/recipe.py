"""What a recipe is: the *what* of a vertical (data, example format, defaults, baselines).

A recipe subclasses `Recipe`, names itself, points at its bundled data and sets the defaults
that differ from the engine's. Everything about *how* (models, LoRA, quantization, training,
metrics, reports) is the engine's, so `train`, `load` and the CLI are inherited, not written.
Importing this module stays cheap: torch is only imported when a method runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from finetune.config import Config, Preset, config_value, load_yaml, resolve
from finetune.data.tables import Examples, load_examples
from finetune.errors import UserError
from finetune.evaluation.context import EvalContext
from finetune.splits import Splits, hold_out

if TYPE_CHECKING:
    import numpy as np
    import typer

    from finetune.crossval import CrossValidation
    from finetune.evaluation.baselines import Baseline
    from finetune.run import Run


@dataclass(frozen=True)
class Flag:
    """A recipe's own `train` option: `--name VALUE` sets the dotted config `key`."""

    name: str  # e.g. "--interactions"
    key: str  # e.g. "options.interactions" or "eval.folds"
    help: str
    type: type = str  # str, int, float or bool (bool: a switch)


# Engine options that only some recipes expose as flags (two-class tasks, small data).
POSITIVE_LABEL = Flag(
    "--positive-label", "data.positive_label", "Two-class tasks: the label counted as positive."
)
CLASS_WEIGHT = Flag(
    "--class-weight", "train.class_weight", "none, or auto (inverse class frequency loss)."
)
TARGET_RECALL = Flag(
    "--target-recall",
    "eval.target_recall",
    "Also report the threshold reaching this recall (sensitivity).",
    float,
)
FOLDS = Flag("--folds", "eval.folds", "Stratified K-fold cross-validation (K >= 2).", int)
DELIVER = Flag(
    "--deliver",
    "eval.deliver",
    "best (default: serve a baseline that beats the model on validation rows) or finetuned.",
)
CALIBRATE = Flag(
    "--calibrate",
    "eval.calibrate",
    "Two-class tasks: auto (default), none, platt or isotonic, fitted on validation rows.",
)
# Engine options every recipe's `train` offers beside the common ones and its own flags.
ENGINE_FLAGS = (DELIVER, CALIBRATE)
# Options no text recipe reads (Recipe.unused).
IMAGE_ONLY = {"image": "image options are read by the image-classification recipe only."}


def preset_flags(recipe: Recipe) -> tuple[Flag, ...]:
    """`--preset NAME` for a recipe that offers presets (its help lists them); else none."""
    if not recipe.presets:
        return ()
    listed = "; ".join(f"{name}: {p.description}" for name, p in recipe.presets.items())
    return (Flag("--preset", "preset", f"Named defaults ({listed})."),)


def bundled_dataset(name: str, bundled: Iterable[str], task: str = "") -> str:
    """`name` (options.dataset) when the recipe (or its `task`) ships it; else one line
    listing what it ships."""
    bundled = list(bundled)
    if name not in bundled:
        where = f" for the {task} task" if task else ""
        raise UserError(
            f"options.dataset {name!r} is not bundled{where}; choose one of "
            f"{', '.join(bundled)}, or pass --data FILE."
        )
    return name


class Recipe:
    name: str = ""  # CLI sub-command, e.g. "customer-service"
    title: str = ""
    description: str = ""
    # What the examples' strings are: "text", or "image" (paths of image files).
    inputs: str = "text"
    # Engine options this recipe changes, as a nested mapping (sections data, model, train).
    defaults: dict[str, Any] = {}
    # Defaults that suit only the bundled dataset (used when no --data is given), e.g. no
    # mirrored digits; a YAML file and flags still override them.
    bundled_defaults: dict[str, Any] = {}
    # Fitted and scored next to the model: names from finetune.evaluation.baselines.BASELINES,
    # or the recipe's own functions (BaselineInputs -> class probabilities; the name is
    # __name__).
    baselines: tuple[str | Baseline, ...] = ("tfidf_logreg", "embedding_logreg")
    # The recipe's own options (a dataclass, under `options:` in YAML), or None.
    Options: type | None = None
    # Key of the recipe's extra metrics in metrics.json.
    extra_key: str = "extra"
    # The figure that ranks methods (the summary's best baseline), saved in metrics.json as
    # `primary_metric`: a key of every method's figures there (a headline metric, or one a
    # recipe adds through EvalContext.method_metrics). None: the task's default (`f1`, macro,
    # for multiclass tasks; `auc` of the positive class for two-class tasks).
    primary_metric: str | None = None
    # What the model's texts are built from when they are not the user's texts as given (e.g.
    # "patient records"); empty: texts as given. A standalone predictor of raw texts cannot
    # build them, so `finetune export` refuses such runs and says why.
    built_texts: str = ""
    # Names of the datasets the recipe ships or loads by name; each has finetune/cards/<name>.md.
    datasets: tuple[str, ...] = ()
    # Extra `train` flags beyond the engine's common ones.
    flags: tuple[Flag, ...] = ()
    # The recipe can train a generation task (finetune/generation.py): the CLI adds `chat`,
    # and evaluate/predict/export accept its run folders.
    generation: bool = False
    # Overrides for a quick smoke run on the bundled data (`train --quick`; CI evaluations):
    # small enough for minutes on 2 CPU cores, large enough to beat the floors in the repo.
    quick: dict[str, Any] = {"train": {"max_steps": 20}}
    # Named sets of defaults (`train --preset NAME`), e.g. a larger model for accuracy.
    presets: dict[str, Preset] = {}
    # The engine's commands beside `train` that this recipe's runs answer; a recipe whose runs
    # are used through a command of its own (`add_commands`) offers none and names that
    # command as `serve_command`.
    run_commands: tuple[str, ...] = ("evaluate", "predict")
    serve_command: str = "predict"
    # Engine options this recipe never reads, each with why and what to use instead. Set in
    # a YAML file, a flag or --set, they stop the run with one line rather than being ignored
    # without a word; `train --help` does not offer their flags.
    unused_options: dict[str, str] = {}

    def primary_metric_for(self, n_classes: int) -> str:
        """The metric that ranks methods on a task with `n_classes` classes."""
        from finetune.evaluation.metrics import default_primary_metric

        if self.primary_metric is not None:
            return self.primary_metric
        return default_primary_metric(n_classes)

    def config(
        self,
        yaml_path: str | Path | None = None,
        quick: bool = False,
        preset: str | None = None,
        **overrides: Any,
    ) -> Config:
        """The resolved config: engine < recipe defaults (< bundled-data defaults, without
        --data) < preset (< quick) < YAML file < overrides. A YAML file's `preset:` names the
        preset when `preset` is not given (a run's saved config.yaml then repeats it). An
        option the run would not read stops it (`refuse_unused`)."""
        return self.refuse_unused(self.layered(yaml_path, quick, preset, **overrides))

    def layered(
        self,
        yaml_path: str | Path | None = None,
        quick: bool = False,
        preset: str | None = None,
        **overrides: Any,
    ) -> Config:
        """`config` before the check of unread options (a recipe that resolves in two steps
        checks the second)."""
        from finetune.config import deep_update, preset_layer, yaml_preset

        options = self.Options() if self.Options is not None else None
        preset = preset or yaml_preset(yaml_path)
        chosen = preset_layer(self.name, self.presets, preset)

        def defaults(bundled: bool) -> dict[str, Any]:
            layered = (
                deep_update(self.defaults, self.bundled_defaults) if bundled else self.defaults
            )
            layered = deep_update(layered, chosen)
            return deep_update(layered, self.quick) if quick else layered

        config = resolve(self.name, defaults(False), yaml_path, overrides, options=options)
        if config.data.path is None and self.bundled_defaults:
            config = resolve(self.name, defaults(True), yaml_path, overrides, options=options)
        return config

    def default_model(self) -> str:
        """The model a run uses without --model, as `train --help` names it."""
        return self.defaults.get("model", {}).get("name", Config().model.name)

    def unused(self, config: Config) -> dict[str, str]:
        """The options a run of `config` would not read, each with why (a recipe with several
        tasks answers per task)."""
        shared = {} if self.inputs == "image" else IMAGE_ONLY
        return {**shared, **self.unused_options}

    def refuse_unused(self, config: Config) -> Config:
        """`config`; or, when it sets an option the run would not read (anything but the
        engine's default), one line naming it."""
        engine = Config(options=None if config.options is None else type(config.options)())
        for key, why in self.unused(config).items():
            value, default = config_value(config, key), config_value(engine, key)
            if value != default:
                if dataclasses.is_dataclass(value):  # a section: name the option set in it
                    key += "." + next(
                        f.name
                        for f in dataclasses.fields(value)
                        if getattr(value, f.name) != getattr(default, f.name)
                    )
                raise UserError(f"{key} is set, but {why}")
        return config

    def split(self, config: Config) -> Splits:
        """The run's data: training and evaluation rows (and, optionally, validation rows and
        cross-validation folds). Single runs and cross-validation both read their data here.

        The engine's: the user's `--data` (an image folder holding train/ and test/ is its own
        split), evaluated on `--eval-data`, else on a seeded, stratified hold-out. A recipe
        that ships data returns it when `config.data.path` is None (through `complete_split`
        for the engine's `--eval-data` and hold-out) and calls `super().split` otherwise; a
        recipe splitting by time or by group returns its own `Splits`."""
        data = config.data
        if data.path is None:
            raise UserError(f"The {self.name} recipe ships no dataset: pass --data PATH.")
        if self.inputs == "image":
            from finetune.data.images import read_image_split

            train, test = read_image_split(
                data.path, data.text_column, data.label_column, config.image.strict
            )
            return self.complete_split(config, train, test)
        return self.complete_split(config, self.read(data.path, config))

    def complete_split(
        self, config: Config, train: Examples, test: Examples | None = None
    ) -> Splits:
        """Splits evaluated on the user's `--eval-data` when given, else on the data's own
        `test` rows, else on a seeded, stratified hold-out of `train` (data.eval_fraction,
        data.split_seed: never the training seed, so the evaluation rows stay put)."""
        data = config.data
        if data.eval_path is not None:
            test = self.read(data.eval_path, config)
        if test is None:
            train, test = hold_out(train, data.eval_fraction, data.split_seed)
        return Splits(train, test)

    def card(self, config: Config) -> dict[str, Any] | None:
        """The YAML header of the data card describing the data in use (its `positive_class`
        decides a two-class task's positive label): the bundled dataset's, if the recipe has
        one, for runs on bundled data; recipes with a `--card` option override this."""
        if config.data.path is not None or len(self.datasets) != 1:
            return None
        from finetune.data.cards import find_card, read_card

        path = find_card(self.datasets[0])
        return None if path is None else {**read_card(path)[0], "_file": str(path)}

    def read(self, path: str | Path, config: Config, labelled: bool = True) -> Examples:
        """Turn a user's file into examples (text + label). Recipes with tables override this.

        Image recipes read an image folder (one sub-folder per class) or a table whose text
        column holds image paths."""
        label_column = config.data.label_column if labelled else None
        if self.inputs == "image":
            from finetune.data.images import read_images

            return read_images(path, config.data.text_column, label_column, config.image.strict)
        if config.data.memory_map:
            from finetune.data import memmap

            return memmap.load_examples(path, config.data.text_column, label_column)
        return load_examples(path, config.data.text_column, label_column)

    def extra_report(self, context: EvalContext) -> tuple[dict[str, Any], list[str]]:
        """Recipe-specific metrics (saved under `extra_key`) and Markdown report sections."""
        return {}, []

    def save_files(self, folder: Path, context: EvalContext) -> None:
        """Write recipe files into the run folder being assembled (e.g. lookup tables that a
        recipe command needs later); they land in the run folder with everything else."""

    def predict_columns(
        self, run: Run, examples: Examples, proba: np.ndarray
    ) -> dict[str, list[Any]]:
        """Extra columns for `predict`'s output file, one value per row of `examples` (e.g. a
        per-row explanation); `proba` is the run's class probabilities for them."""
        return {}

    def add_commands(self, group: typer.Typer) -> None:
        """Add recipe-only CLI commands to the recipe's typer group (train/evaluate/predict
        are the engine's)."""

    def train(
        self, config: Config | None = None, show_progress: bool = True
    ) -> Run | CrossValidation:
        """One run; with `eval.folds >= 2`, one run per fold and their summary."""
        config = self.refuse_unused(config or self.config())
        if config.eval.folds >= 2:
            from finetune.crossval import cross_validate

            return cross_validate(self, config, show_progress=show_progress)
        from finetune.run import train

        return train(self, config, show_progress=show_progress)

    def own_run(self, folder: str | Path) -> Path:
        """`folder`, or one line when its config.yaml says another recipe trained it (its
        options would not read here, nor its data)."""
        folder = Path(folder)
        if (folder / "config.yaml").is_file():
            name = (load_yaml(folder / "config.yaml") or {}).get("recipe")
            if name and name != self.name:
                raise UserError(
                    f"{folder} was trained by the {name} recipe, not by {self.name}: use it "
                    f"through `finetune {name}`."
                )
        return folder

    def load(self, folder: str | Path) -> Run:
        from finetune.run import Run

        folder = self.own_run(folder)
        if (folder / "fold-1").is_dir() and not (folder / "labels.json").exists():
            raise UserError(
                f"{folder} is a cross-validation summary with one model per fold; "
                f"load one of them, e.g. {folder / 'fold-1'}."
            )
        return Run.load(folder, options=self.Options() if self.Options is not None else None)
