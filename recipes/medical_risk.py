"""Medical risk: will this patient have the outcome? (two-class prediction from records)

Data: a table of patient records (numbers, categories, optional free-text notes) with a
two-valued outcome column; default the bundled MASS Pima diabetes data (finetune/cards/pima.md),
`--dataset biopsy` (finetune/cards/biopsy.md) or `--dataset heart` (four hospitals,
finetune/cards/heart.md). Each record becomes one line of text for the encoder (`plasma
glucose: 148 mg/dL; BMI: 33.6 kg/m2; ...`, see finetune.data.records); the baselines fit on
the raw columns of the same rows. The model is a hybrid: a wide linear part over the raw
columns (numbers also as cubic splines, so it can bend) that starts as the logistic regression
on them, and the text part, starting silent (model.head_init=wide). Splits by patient or
site: recipes.medical_data. Recall (sensitivity) leads the report, with specificity,
calibration and the threshold reaching `--target-recall`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    bundled_dataset,
)
from finetune.splits import concat
from recipes.medical_data import (
    DATASETS,
    Table,
    bundled_table,
    grouped_examples,
    medical_splits,
    site_count,
)
from recipes.medical_explain import explanation_report, predict_columns

if TYPE_CHECKING:
    import numpy as np


@dataclass
class MedicalOptions:
    # Bundled dataset used without --data: pima (diabetes, default), biopsy (breast tumours)
    # or heart (heart disease at four hospitals).
    dataset: str = "pima"
    # Data card of your own file (Markdown with a YAML header): column names, units, types.
    card: str | None = None
    # Columns never read (identifier-like columns are dropped without being listed here).
    drop_columns: list[str] = field(default_factory=list)
    # The column naming each row's patient (or site): no group on both sides of a split.
    # None: the data card's group_column (biopsy: ID), if any.
    group_column: str | None = None
    # Evaluate on one site (a value of the site column: --group-column, else the card's
    # site_column), training on the others; `each`: every site in turn, summarised.
    holdout_group: str | None = None


class MedicalRisk(Recipe):
    name = "medical-risk"
    title = "Medical risk prediction"
    description = "Two-class risk prediction from patient records (train, evaluate, predict)."
    # Chosen by 5-fold cross-validation on MASS Pima.tr only (Pima.te unseen;
    # docs/recipes/medical-risk.md): a head fitted on frozen embeddings starts with huge
    # weights on records that differ only in a few numbers, and LoRA then blows its loss up;
    # the text head starts silent beside a wide part that is the raw-column logistic
    # regression (head_init=wide), so epoch 0 is that baseline and the validation rows keep
    # it unless fine-tuning beats it. The decision threshold for --target-recall is chosen on
    # validation rows (20% of the training rows), never on the evaluation split.
    defaults = {
        # Records are generated text; redaction still catches contact details in free-text notes.
        "data": {"redact_pii": True, "max_length": 256, "val_fraction": 0.2},
        # LoRA on the top 2 of MiniLM's 6 layers: the frozen 4 run once per row (the layer
        # cache), which pays for the inner folds below.
        "model": {
            "name": "minilm",
            "lora_r": 16,
            "side_features": True,
            "head_init": "wide",
            "lora_layers": 2,
            # Numbers as splines too: a risk that rises only past a threshold. 3 knots were
            # best by repeated 5-fold cross-validation on the training rows of Pima, biopsy and
            # heart alone (docs/recipes/medical-risk.md); more knots overfit Pima's 200 rows.
            "spline_knots": 3,
        },
        "train": {
            "epochs": 10,
            # Under 2,000 training rows, 3 inner folds of them choose the epoch, and their
            # out-of-fold predictions the delivered model, its calibration and threshold (a
            # 40-row hold-out could not: docs/recipes/medical-risk.md); none is held out.
            "select_folds": "auto:3",
            # 10 epochs of Pima's 160 training rows are 100 steps; a table of 11,000 rows
            # would get 5,500 (hours on a laptop CPU): it gets 400, under an epoch.
            "step_budget": 400,
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
    unused_options = {
        "data.text_column": "the medical-risk recipe renders every column of a patient's row "
        "as the text: name the outcome with --label-column, and leave columns out with "
        "options.drop_columns.",
        "data.memory_map": "the medical-risk recipe reads its table into memory; only a plain "
        "text table (customer-service intents) can stay on disk.",
    }
    flags = (
        Flag("--dataset", "options.dataset", f"Bundled dataset: {', '.join(DATASETS)}."),
        Flag("--card", "options.card", "Data card of --data: column names, units, types."),
        POSITIVE_LABEL,
        CLASS_WEIGHT,
        TARGET_RECALL,
        FOLDS,
        Flag("--group-column", "options.group_column", "Column naming each row's patient or site."),
        Flag(
            "--holdout-group",
            "options.holdout_group",
            "Evaluate on this site (train on the others); `each`: every site in turn.",
        ),
    )

    def card(self, config: Config) -> dict[str, Any] | None:
        """The card describing the columns: --card, else the bundled dataset's for its runs."""
        if config.options.card:
            return table_card(config.options.card)
        if config.data.path is None:
            return table_card(CARDS_DIR / f"{self._dataset(config)}.md")
        return None

    def split(self, config: Config) -> Splits:
        """The user's table (--data), else the bundled dataset; split by group or site when
        asked (recipes.medical_data), else the engine's way: the table's own test rows,
        --eval-data, or a seeded hold-out (whole groups when rows have them)."""
        card = self.card(config)
        table = self._table(config)
        label = config.data.label_column if config.data.path else card["label_column"]
        known = (card or {}).get("label_column")
        if label not in table.frame.columns and known in table.frame.columns:
            label = known  # a file laid out like the card's (Pima's `type`)
        train, sites = grouped_examples(table.frame, table.source, config, card, label)
        test = None
        if table.test is not None:
            test, test_sites = grouped_examples(table.test, table.test_source, config, card, label)
            sites = None if sites is None else sites + (test_sites or [])
        grouped = bool(config.options.holdout_group or (config.eval.folds >= 2 and train.groups))
        if not grouped:
            return self.complete_split(config, train, test)  # --eval-data read there
        if config.data.eval_path is not None:
            if config.options.holdout_group:
                raise UserError(
                    "--holdout-group picks the evaluation rows itself; drop --eval-data."
                )
            test = self.read(config.data.eval_path, config)
        if test is not None:  # pooled: the folds are made over every labelled row
            train = concat(train, test, f"{train.source} + {test.source}")
        return medical_splits(config, train, sites) or self.complete_split(config, train)

    def train(self, config: Config | None = None, show_progress: bool = True) -> Any:
        """--holdout-group each: one fold per site (cross-validation's machinery)."""
        config = config or self.config()
        if config.options.holdout_group == "each" and config.eval.folds == 0:
            n_sites = site_count(config, self.card(config), self._table(config))
            config = replace(config, eval=replace(config.eval, folds=n_sites))
        return super().train(config, show_progress)

    def _table(self, config: Config) -> Table:
        if config.data.path is None:
            return bundled_table(config.options.dataset)
        return Table(read_table(config.data.path), str(config.data.path))

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
        """Which columns the records hold, how often each is missing, what was dropped; why
        the model scores what it scores (recipes.medical_explain)."""
        card = self.card(context.config)
        facts, lines = records_section(context.train.features, context.evaluation.features, card)
        explained, more = explanation_report(context)
        if explained:
            facts["explanations"] = explained
        return facts, lines + more

    def predict_columns(
        self, run: Any, examples: Examples, proba: np.ndarray
    ) -> dict[str, list[Any]]:
        """`risk` and `explanation` (the three fields that moved the score most)."""
        return predict_columns(run, examples, proba)

    def _dataset(self, config: Config) -> str:
        return bundled_dataset(config.options.dataset, DATASETS)


recipe = MedicalRisk()
