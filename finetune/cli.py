"""The `finetune` command: one sub-command group per recipe, a thin layer over the Python API.

Nothing heavy is imported at module level: `finetune --help` must answer without torch.
"""

from __future__ import annotations

import copy
import functools
import inspect
import os
import sys
import typing
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from finetune.errors import UserError, first_line
from finetune.files import atomic, refuse_folder
from finetune.registry import load_entry, recipe_entries

if TYPE_CHECKING:
    from finetune.recipe import Flag, Recipe

# The commands every installation has; `make_app` adds one group per registered recipe.
commands = typer.Typer()


def friendly_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Show a UserError as one line and exit 2; FINETUNE_DEBUG=1 keeps the traceback."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except UserError as error:
            if os.environ.get("FINETUNE_DEBUG"):
                raise
            typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            typer.secho("interrupted; no run folder was written.", err=True)
            raise typer.Exit(130) from None

    return wrapper


ConfigOpt = Annotated[Path | None, typer.Option("--config", help="YAML file with any options.")]
DataOpt = Annotated[
    str | None,
    typer.Option("--data", help="CSV, JSONL or Parquet file. Default: bundled data."),
]
EvalDataOpt = Annotated[
    str | None,
    typer.Option("--eval-data", help="Evaluation file. Default: a stratified, seeded hold-out."),
]
TextColOpt = Annotated[str | None, typer.Option("--text-column", help="Default: text.")]
# evaluate and predict read a run's files by the column names it was trained on.
RunTextColOpt = Annotated[
    str | None, typer.Option("--text-column", help="Default: the run's (as it was trained).")
]
RunLabelColOpt = Annotated[
    str | None, typer.Option("--label-column", help="Default: the run's (as it was trained).")
]
LabelColOpt = Annotated[str | None, typer.Option("--label-column", help="Default: label.")]
# The recipe's default joins this help in its `train` (_common_help).
ModelOpt = Annotated[
    str | None,
    typer.Option(
        "--model", help="A name from `finetune models`, a local folder or a Hugging Face id."
    ),
]
QuantOpt = Annotated[str | None, typer.Option("--quant", help="none, 8bit or 4bit (bitsandbytes).")]
OptimOpt = Annotated[
    str | None,
    typer.Option("--optim", help="adamw, adamw_8bit or paged_adamw_8bit (CUDA only)."),
]
EpochsOpt = Annotated[float | None, typer.Option("--epochs", help="Training epochs.")]
MaxStepsOpt = Annotated[int | None, typer.Option("--max-steps", help="Stop after N steps.")]
SeedOpt = Annotated[int | None, typer.Option("--seed", help="Random seed.")]
OutputOpt = Annotated[str | None, typer.Option("--output", help="Run folder to write.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace an existing --output.")]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", help="Any option as KEY=VALUE, e.g. train.learning_rate=5e-4. Repeatable."
    ),
]
RunOpt = Annotated[Path, typer.Option("--run", help="A run folder written by train.")]
# `train`'s common options (parameter name -> the config key each sets). A recipe's `train`
# offers those its runs read (Recipe.unused_options names the others).
COMMON_KEYS = {
    "data": "data.path",
    "eval_data": "data.eval_path",
    "text_column": "data.text_column",
    "label_column": "data.label_column",
    "model": "model.name",
    "quant": "model.quant",
    "optim": "train.optim",
    "epochs": "train.epochs",
    "max_steps": "train.max_steps",
    "seed": "train.seed",
    "output": "output",
    "overwrite": "overwrite",
    "resume": "resume",
    "memory_map": "data.memory_map",
}


def print_results(metrics: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from finetune.evaluation.metrics import HEADLINE
    from finetune.reporting.report import metrics_table

    table = Table(title=title)
    for column in ("method", *HEADLINE):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in metrics_table(metrics):
        table.add_row(*row)
    Console().print(table)


def recipe_app(recipe: Recipe) -> typer.Typer:
    """A recipe's group: train, the engine's run commands it offers (evaluate, predict), chat
    for generation, and its own."""
    group = typer.Typer(help=recipe.description, no_args_is_help=True)
    train = _train_command(recipe)
    group.command("train")(_with_flags(friendly_errors(train), train, recipe))
    if "evaluate" in recipe.run_commands:
        group.command("evaluate")(friendly_errors(_evaluate_command(recipe)))
    if "predict" in recipe.run_commands:
        group.command("predict")(friendly_errors(_predict_command(recipe)))
    if recipe.generation:
        group.command("chat")(friendly_errors(_chat_command(recipe)))
    recipe.add_commands(group)
    return group


def _train_command(recipe: Recipe) -> Callable[..., None]:
    """`train`: the common options; `_with_flags` adds the recipe's own to its signature."""

    def train(
        config: ConfigOpt = None,
        data: DataOpt = None,
        eval_data: EvalDataOpt = None,
        text_column: TextColOpt = None,
        label_column: LabelColOpt = None,
        model: ModelOpt = None,
        quant: QuantOpt = None,
        optim: OptimOpt = None,
        epochs: EpochsOpt = None,
        max_steps: MaxStepsOpt = None,
        seed: SeedOpt = None,
        output: OutputOpt = None,
        overwrite: OverwriteOpt = False,
        set_: SetOpt = None,
        quick: Annotated[
            bool, typer.Option("--quick", help="Small smoke-run budget (CI evaluations).")
        ] = False,
        resume: Annotated[
            bool, typer.Option("--resume", help="Continue a killed run (same --output).")
        ] = False,
        memory_map: Annotated[
            bool,
            typer.Option(
                "--memory-map",
                help="Keep texts and token ids in memory-mapped Arrow files (data > RAM).",
            ),
        ] = False,
        **recipe_flags: Any,
    ) -> None:
        """Fine-tune with LoRA, evaluate against baselines and write a run folder."""
        from finetune.config import deep_update, dotted_to_nested, parse_set_options

        given = locals()  # the common options by parameter name (COMMON_KEYS)
        flags = dotted_to_nested(
            {
                **{key: _given(given[name]) for name, key in COMMON_KEYS.items()},
                **{flag.key: _flag_value(recipe_flags, flag) for flag in _train_flags(recipe)},
            }
        )
        # --set goes in with the flags (last, so it wins): an option that changes the
        # recipe's defaults, such as options.task, must be seen while they are resolved.
        flags = deep_update(flags, parse_set_options(set_ or []))
        _echo_run(recipe, recipe.train(recipe.config(config, quick=quick, **flags)))

    return train


def _train_flags(recipe: Recipe) -> tuple[Flag, ...]:
    """The engine's flags every recipe offers (--deliver, --calibrate), --preset where the
    recipe has presets, then the recipe's own."""
    from finetune.recipe import ENGINE_FLAGS, preset_flags

    return (*ENGINE_FLAGS, *preset_flags(recipe), *recipe.flags)


def _echo_run(recipe: Recipe, run: Any) -> None:
    """The results table and where the run folder and its report are (process 0 only)."""
    from finetune.run import is_main_process

    if not is_main_process():
        return  # data-parallel workers: process 0 reports
    if run.metrics.get("task") == "generation":
        _echo_generation(recipe, run.metrics)
        typer.echo(f"Run folder: {run.folder}")
        typer.echo(f"Report:     {run.folder / 'report.md'}")
        return
    n_eval, folds = run.metrics["n_eval"], run.metrics.get("n_folds")
    scope = (
        f"{folds}-fold cross-validation on {n_eval} examples (mean ± std)"
        if folds
        else f"evaluation on {n_eval} examples"
    )
    from finetune.reporting.report import delivery_lines

    for line in delivery_lines(run.metrics):
        typer.echo(line)
    print_results(run.metrics, f"{recipe.title}: {scope}")
    typer.echo(f"Run folder: {run.folder}")
    typer.echo(f"Report:     {run.folder / 'report.md'}")


def _evaluate_command(recipe: Recipe) -> Callable[..., None]:
    def evaluate(
        run: RunOpt,
        data: Annotated[str, typer.Option("--data", help="Labelled CSV, JSONL or Parquet file.")],
        text_column: RunTextColOpt = None,
        label_column: RunLabelColOpt = None,
        output: Annotated[
            Path | None, typer.Option("--output", help="Metrics JSON. Default: RUN/evaluations/.")
        ] = None,
    ) -> None:
        """Score a trained run on new labelled data and write its metrics."""
        import json

        target = output or run / "evaluations" / f"{Path(data).stem}.json"
        refuse_folder(target)
        loaded = recipe.load(run)
        if _is_generation(run):
            metrics = loaded.evaluate(_read_pairs(loaded, data, text_column, label_column))
        else:
            config = _with_columns(loaded.config, text_column, label_column)
            metrics = loaded.evaluate(recipe.read(data, config, labelled=True))
        with atomic(target) as tmp:
            tmp.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        title = f"{recipe.title}: {Path(data).name} ({metrics['n']} examples)"
        if _is_generation(run):
            _echo_generation(recipe, metrics, title)
        else:
            print_results(metrics, title)
        typer.echo(f"Metrics: {target}")

    return evaluate


def _predict_command(recipe: Recipe) -> Callable[..., None]:
    def predict(
        run: RunOpt,
        data: Annotated[
            str | None, typer.Option("--data", help="File with a text column, or image folder.")
        ] = None,
        text: Annotated[
            str | None, typer.Option("--text", help="One message (or image path) to classify.")
        ] = None,
        text_column: RunTextColOpt = None,
        output: Annotated[
            Path | None, typer.Option("--output", help="CSV to write (with --data).")
        ] = None,
    ) -> None:
        """Predict the label and its probability for each row (or one --text)."""
        if (data is None) == (text is None):
            raise UserError("Give either --data FILE or --text MESSAGE.")
        if data is not None and output is None:
            raise UserError("--data needs --output FILE.csv for the predictions.")
        if text is not None and (output is not None or text_column is not None):
            raise UserError("--output and --text-column go with --data; --text prints its answer.")
        if output is not None:
            refuse_folder(output)
        loaded = recipe.load(run)
        if _is_generation(run):
            _predict_replies(loaded, data, text, text_column, output)
            return
        if text is not None:
            proba = loaded.predict_proba([text])[0]
            best = int(proba.argmax())
            typer.echo(f"{loaded.labels[best]}\t{proba[best]:.3f}")
            return
        config = _with_columns(loaded.config, text_column, None)
        examples = recipe.read(data, config, labelled=False)
        proba = loaded.predict_proba(examples)
        extra = recipe.predict_columns(loaded, examples, proba)
        write_predictions(data, examples, proba, loaded.labels, output, extra)
        typer.echo(f"Wrote {len(examples)} predictions to {output}")
        if examples.skipped:
            typer.echo(
                f"Skipped {len(examples.skipped)} unreadable: {', '.join(examples.skipped[:5])}"
            )

    return predict


def _is_generation(run: Path) -> bool:
    from finetune.generation import is_generation_run

    return is_generation_run(run)


def _echo_generation(recipe: Recipe, metrics: dict[str, Any], title: str | None = None) -> None:
    """A generation run's table (one row per method) and its verdict on validation rows."""
    from rich.console import Console
    from rich.table import Table

    from finetune.reporting.generation import COLUMNS, judge_note, methods_table, verdict_lines

    # The recipe's title names its default task (e.g. intent classification), not replies.
    table = Table(title=title or f"{recipe.name}: replies to {metrics['n_eval']} messages")
    for column in ("method", *COLUMNS.values()):
        method = column == "method"  # a served method's name stays on one line
        table.add_column(column, justify="left" if method else "right", no_wrap=method)
    for row in methods_table(metrics):
        table.add_row(*row)
    Console(width=160).print(table)
    for line in [*verdict_lines(metrics), judge_note(metrics)]:
        if line:
            typer.echo(line.replace("**", ""))


def _read_pairs(loaded: Any, data: str, prompt: str | None, label: str | None) -> Any:
    """Labelled pairs for `evaluate`: the run's column names unless given."""
    from finetune.data.pairs import read_pairs

    options = loaded.config.get("options") or {}
    return read_pairs(
        data,
        prompt or options.get("prompt_column", "prompt"),
        options.get("response_column", "response"),
        label or options.get("intent_column"),
    )


def _predict_replies(
    loaded: Any, data: str | None, text: str | None, column: str | None, output: Path | None
) -> None:
    """`predict` for a generation run: print the reply to --text, or write a `reply` column."""
    if loaded.note:
        typer.echo(loaded.note, err=True)
    if text is not None:
        typer.echo(loaded.reply([text])[0])
        return
    from finetune.data.tables import read_table

    frame = read_table(data)
    column = column or (loaded.config.get("options") or {}).get("prompt_column", "prompt")
    if column not in frame.columns:
        raise UserError(f"{data}: no column '{column}'. Name the messages with --text-column.")
    frame["reply"] = loaded.reply(frame[column].astype(str).tolist())
    with atomic(output) as tmp:
        frame.to_csv(tmp, index=False)
    typer.echo(f"Wrote {len(frame)} replies to {output}")


def _chat_command(recipe: Recipe) -> Callable[..., None]:
    def chat(
        run: RunOpt,
        max_new_tokens: Annotated[
            int | None, typer.Option("--max-new-tokens", help="Cap per reply (default: the run's).")
        ] = None,
    ) -> None:
        """Talk to a reply run: each message is answered in the context of the conversation
        so far. An empty line or Ctrl-D ends it."""
        from finetune.generation import load_generation_run

        loaded = load_generation_run(recipe.own_run(run), max_new_tokens)
        if loaded.note:
            typer.echo(loaded.note)
        typer.echo("Type a message (empty line to stop).")
        turns: list[dict[str, str]] = []
        while True:
            try:
                message = input("you> ").strip()
            except EOFError:  # Ctrl-D, or the end of piped input: end the prompt's line
                typer.echo()
                break
            if not message:
                break
            turns.append({"role": "user", "content": message})
            reply = loaded.reply([list(turns)])[0]
            turns.append({"role": "assistant", "content": reply})
            typer.echo(f"assistant> {reply}")

    return chat


def _param_name(flag: Flag) -> str:
    return flag.name.lstrip("-").replace("-", "_")


def _flag_value(given: dict[str, Any], flag: Flag) -> Any:
    return _given(given.get(_param_name(flag)))


def _given(value: Any) -> Any:
    """None for an option not given (an unset switch too), so 0 and 0.0 still count as given."""
    return None if value is False else value


def _with_flags(command: Callable[..., Any], original: Callable[..., Any], recipe: Recipe) -> Any:
    """`command` with the signature `recipe`'s `train --help` shows: the common options its
    runs read, their help in its terms, then its own flags."""
    signature = inspect.signature(original, eval_str=True)
    helps = _common_help(recipe)
    params = []
    for param in signature.parameters.values():
        if param.kind is param.VAR_KEYWORD:
            continue
        # An option the recipe's runs never read is left out of the help, but still taken:
        # given, it gets the recipe's one line on what to use instead.
        hidden = COMMON_KEYS.get(param.name) in recipe.unused_options
        if hidden or param.name in helps:
            kind, option = typing.get_args(param.annotation)
            option = copy.copy(option)
            option.help, option.hidden = helps.get(param.name, option.help), hidden
            param = param.replace(annotation=Annotated[kind, option])
        params.append(param)
    for flag in _train_flags(recipe):
        option = typer.Option(flag.name, help=flag.help, hidden=flag.key in recipe.unused_options)
        if flag.type is bool:
            hint, default = Annotated[bool, option], False
        else:
            hint, default = Annotated[flag.type | None, option], None
        params.append(
            inspect.Parameter(
                _param_name(flag), inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hint
            )
        )
    command.__signature__ = signature.replace(parameters=params)
    return command


def _common_help(recipe: Recipe) -> dict[str, str]:
    """Help of the common options that depends on the recipe: its defaults, and what --data
    is for images."""
    text = recipe.defaults.get("data", {}).get("text_column", "text")
    helps = {
        "model": f"Default: {recipe.default_model()}. A name from `finetune models`, a local "
        "folder or a Hugging Face id.",
        "text_column": f"Default: {text}.",
    }
    if recipe.inputs == "image":
        helps["data"] = (
            "Image folder (a sub-folder per class, or train/ and test/ holding them), or a "
            "CSV, JSONL or Parquet table of image paths. Default: bundled data."
        )
        helps["text_column"] = f"A table's column of image paths. Default: {text}."
    return helps


def _with_columns(config: Any, text_column: str | None, label_column: str | None) -> Any:
    from finetune.config import dotted_to_nested, merge

    updates = dotted_to_nested({"data.text_column": text_column, "data.label_column": label_column})
    return merge(config, updates, source="command line")


def write_predictions(
    source: str,
    examples: Any,
    proba: Any,
    labels: list[str],
    path: Path,
    extra: dict[str, list[Any]] | None = None,
):
    """The input rows with predicted_label and probability (and the recipe's `extra`
    columns, `Recipe.predict_columns`) appended, written atomically.

    A folder of images gives one row per image path; a table whose reader left rows out
    (unreadable images) keeps the rows it read (`examples.features`)."""
    import numpy as np
    import pandas as pd

    from finetune.data.tables import read_table

    if Path(source).is_dir():
        frame = pd.DataFrame({"path": examples.texts})
    else:
        frame = read_table(source)
        if len(frame) != len(examples) and examples.features is not None:
            frame = examples.features.copy()
    best = proba.argmax(axis=1)
    frame["predicted_label"] = [labels[i] for i in best]
    frame["probability"] = proba[np.arange(len(best)), best].round(6)
    for name, values in (extra or {}).items():
        frame[name] = values
    with atomic(path) as tmp:
        frame.to_csv(tmp, index=False)


models_app = typer.Typer(
    help="Known models: the bundled defaults and the model packs (fetched once, verified).",
    invoke_without_command=True,
)


@models_app.callback()
def list_models(ctx: typer.Context) -> None:
    """List every known model: what it is, size, licence, source, pinned sha256, installed."""
    if ctx.invoked_subcommand is not None:
        return
    import importlib.util

    from rich.console import Console
    from rich.table import Table

    from finetune.modeling import packs
    from finetune.modeling.models import BUNDLED
    from finetune.modeling.vision import BUNDLED as BUNDLED_VISION

    table = Table(title="Known models (--model NAME)", show_lines=True)
    for column in ("name", "what", "size", "licence", "source", "sha256", "installed"):
        table.add_column(column, overflow="fold")
    for name, bundled in {**BUNDLED, **BUNDLED_VISION}.items():
        package = getattr(bundled, "package", None) or bundled.weights_package
        found = "yes" if importlib.util.find_spec(package) is not None else "no"
        table.add_row(name, bundled.description, "bundled", "", bundled.pip, "by pip", found)
    for row in packs.catalogue_rows(packs.cache_dir()):
        table.add_row(*row.values())
    Console(width=200).print(table)
    typer.echo("Fetch a pack once with: finetune models fetch NAME")


@models_app.command("fetch")
@friendly_errors
def fetch_model(
    name: Annotated[str, typer.Argument(help="A pack's short name (see `finetune models`).")],
) -> None:
    """Download a model pack with pip, verify its pinned sha256, install it into the cache."""
    from finetune.modeling import packs

    folder = packs.fetch(name, packs.cache_dir(), say=typer.echo)
    kind = packs.PACKS[name].kind
    if kind == "gguf":  # converted once here, not at the first training run
        from finetune.modeling.models import resolve_model_path

        typer.echo("converting the GGUF file to a Hugging Face folder (once)...")
        folder = Path(resolve_model_path(name))
    if kind != "file":
        typer.echo(f"--model {name} loads {folder}")


@commands.command("export")
@friendly_errors
def export(
    run: RunOpt,
    output: Annotated[Path, typer.Option("--output", help="Folder for the merged model.")],
    overwrite: OverwriteOpt = False,
) -> None:
    """Merge a run's LoRA into its backbone: a standalone folder for plain transformers."""
    from finetune.modeling.export import export_merged, export_merged_generator

    if _is_generation(run):
        from finetune.generation import run_metrics
        from finetune.modeling.retrieval import SERVABLE
        from finetune.reporting.generation import served, serving_note

        metrics = run_metrics(run)  # what the run serves, and what reply.py says first
        note = serving_note(metrics, served(metrics)) if metrics else None
        serve = served(metrics)
        checks = export_merged_generator(run, output, overwrite=overwrite, note=note, serve=serve)
        typer.echo(
            f"Merged causal LM: {output} (reply.py's greedy text equal to the run's on "
            f"{checks['same_text']}/{checks['prompts']} messages; see its README.md)"
        )
        if serve in SERVABLE:
            typer.echo(
                f"reply.py serves {serve}, as the run does (equal to the run's on "
                f"{checks['same_served']}/{checks['prompts']} messages)."
            )
        return
    from finetune.evaluation.selection import load_served, portable

    served = portable(load_served(run))
    checks = export_merged(
        run, output, overwrite=overwrite, served=served, reference=_served_reference(run)
    )
    if "merged_vs_trained_run" in checks:
        agreement = checks["merged_vs_trained_run"]
        typer.echo(
            f"Merged model: {output} (max probability difference to the run "
            f"{agreement['max_abs_diff']:.1e} on {checks['texts']} texts; see its README.md)"
        )
    else:  # the run serves its frozen probe: the backbone without its adapter, and the probe
        typer.echo(f"Frozen backbone and the run's linear probe: {output} (see its README.md)")
    if "served_vs_run" in checks:
        typer.echo(
            f"predict.py serves {checks['serves']}, as the run does (max probability "
            f"difference to the run {checks['served_vs_run']['max_abs_diff']:.1e})."
        )
    if "serves" not in checks:  # an image run's pixel baseline, a blend with the probe
        _warn_if_not_delivered(run)


def _served_reference(run: Path) -> Callable[[list[str]], Any]:
    """The run's served probabilities of texts, loaded when first asked for."""

    def reference(texts: list[str]) -> Any:
        from finetune.run import Run

        return Run.load(run).predict_proba(texts)

    return reference


def _warn_if_not_delivered(run: Path) -> None:
    """export writes the fine-tuned model; say so when the run serves something else."""
    import json

    metrics_file = run / "metrics.json"
    metrics = json.loads(metrics_file.read_text(encoding="utf-8")) if metrics_file.is_file() else {}
    delivered = (metrics.get("delivered") or {}).get("name", "model")
    calibrated = (metrics.get("calibration") or {}).get("method", "none") != "none"
    if delivered != "model" or calibrated:
        served = delivered if delivered != "model" else "the calibrated fine-tuned model"
        typer.secho(
            f"Note: the run serves {served} (chosen on validation rows); the export holds the "
            "fine-tuned model's own, uncalibrated probabilities.",
            fg=typer.colors.YELLOW,
        )


@commands.command("report")
@friendly_errors
def report(
    runs: Annotated[list[Path], typer.Argument(help="Run folders written by train.")],
    output: Annotated[Path, typer.Option("--output", help="Folder for report.md/.html.")],
    floors: Annotated[
        Path | None,
        typer.Option("--floors", help="YAML of minimum metrics per recipe; below one: exit 1."),
    ] = None,
) -> None:
    """One Markdown + HTML report from several run folders (summary table, ROC, plots)."""
    from rich.console import Console
    from rich.table import Table

    from finetune.reporting.summary import SUMMARY_COLUMNS, load_floors, write_summary

    limits = load_floors(floors) if floors is not None else None
    folder, failures, rows = write_summary(runs, output, limits)
    table = Table(title="Evaluation summary")
    for column in SUMMARY_COLUMNS:
        table.add_column(column)
    for row in rows:
        table.add_row(*row)
    Console(width=200).print(table)
    typer.echo(f"Report: {folder / 'report.md'} and {folder / 'report.html'}")
    for failure in failures:
        typer.secho(f"below floor: {failure}", fg=typer.colors.RED, err=True)
    if failures:
        raise typer.Exit(1)


data_app = typer.Typer(help="Datasets: statistics and data cards.", no_args_is_help=True)


@data_app.command("card")
@friendly_errors
def data_card(
    name_or_path: Annotated[str, typer.Argument(help="Bundled dataset name or a CSV/JSONL file.")],
    label_column: Annotated[
        str | None, typer.Option("--label-column", help="Default: label, if the file has one.")
    ] = None,
    text_column: Annotated[
        str | None,
        typer.Option("--text-column", help="With --write: the text column (not a feature)."),
    ] = None,
    write: Annotated[
        bool, typer.Option("--write", help="Draft a card for this file (to --output).")
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", help="Where --write puts the card.")
    ] = None,
) -> None:
    """Print a dataset's statistics (rows, labels, missing values, lengths, duplicates,
    train/test overlap); with --write, draft a data card for your own file."""
    from finetune.data.cards import dataset_stats, draft_card

    if write:
        if not Path(name_or_path).is_file():
            raise UserError(f"--write drafts a card for a file; {name_or_path} is not one.")
        target = output or Path("data_cards") / f"{Path(name_or_path).stem}.md"
        if target.exists():
            raise UserError(f"{target} exists; pass another --output.")
        with atomic(target) as tmp:
            tmp.write_text(draft_card(name_or_path, label_column, text_column), encoding="utf-8")
        typer.echo(f"Drafted {target}: fill in the TODOs.")
        return
    for stats in dataset_stats(name_or_path, label_column):
        typer.echo(stats.as_markdown())


def add_recipes(target: typer.Typer) -> None:
    """One command group per registered recipe (finetune.registry: entry points). A recipe
    whose package fails to import is left out with a one-line warning, not a traceback."""
    for command, entry in recipe_entries().items():
        try:
            recipe = load_entry(entry)
        except (ImportError, AttributeError) as error:
            typer.secho(
                f"warning: recipe {command} ({entry}) is left out: {first_line(error)}",
                fg=typer.colors.YELLOW,
                err=True,
            )
            continue
        target.add_typer(recipe_app(recipe), name=command, help=recipe.description)


def make_app() -> typer.Typer:
    """The `finetune` command with the recipes registered now (one made per process)."""
    made = typer.Typer(
        help="Fine-tune pretrained models with LoRA / QLoRA and get an honest evaluation report.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    made.add_typer(commands)
    made.add_typer(data_app, name="data")
    made.add_typer(models_app, name="models")
    add_recipes(made)
    return made


app = make_app()


def main() -> None:
    from finetune import runtime

    runtime.configure()  # before anything imports torch
    app(prog_name="finetune")


if __name__ == "__main__":
    sys.exit(main())
