"""Recommendation: will this user like this item? (two-class: like / not_like)

Each interaction (user, item, rating or like, timestamp) becomes one text: the candidate
item's text first, then the titles of the items the user liked (and did not like) before it,
most recent first. The encoder reads it and LoRA fine-tunes it to output P(like), which is
what lets it score items too new to have any history. Split by time: each user's latest
interactions are the test set. Baselines on the same split: item popularity and logistic
matrix factorisation (collaborative filtering). Beyond the engine's accuracy/recall/F1/AUC,
the report adds per-user AUC (GAUC), a cold-start slice and Recall/NDCG@10 on sampled
candidates. Default data: MovieLens latest-small (finetune/cards/movielens_small.md), subsampled.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from finetune.config import Config
from finetune.errors import UserError
from finetune.recipe import EvalContext, Flag, Recipe, Splits

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from finetune.data.tables import Examples
    from finetune.evaluation.baselines import BaselineInputs
    from finetune.run import Run

# `recommend` command options (module level: typer resolves the annotations here).
RunOpt = Annotated[Path, typer.Option("--run", help="A run folder written by train.")]
UserOpt = Annotated[str, typer.Option("--user", help="User id as in the interactions.")]
KOpt = Annotated[int, typer.Option("--k", help="How many items to list.")]
CandidatesOpt = Annotated[
    int, typer.Option("--candidates", help="Score only the N most-rated unseen items (faster).")
]
TABLES = "recommendation"  # sub-folder of a run: the items and the interaction log it used


@dataclass
class RecommendationOptions:
    # Interactions: a CSV/Parquet file, or a MovieLens folder (u.data + u.item, or ratings.csv +
    # movies.csv). None: the bundled MovieLens latest-small.
    interactions: str | None = None
    # Items file (CSV/Parquet: item id + text columns). Needed with an interactions file.
    items: str | None = None
    user_column: str = "user"
    item_column: str = "item"
    rating_column: str = "rating"
    # A 0/1 (true/false, yes/no) like column to use instead of the rating threshold.
    like_column: str | None = None
    timestamp_column: str = "timestamp"
    # Items-file columns joined into the item text; the first one is the title.
    item_text_columns: list[str] = field(default_factory=lambda: ["title", "genres"])
    # like = rating >= this.
    rating_threshold: float = 4.0
    # Each user's latest share of interactions held out for testing.
    test_fraction: float = 0.2
    # History in the model text: the last N liked and the last M not-liked item titles. 3 and 2
    # (not 5 and 3) for run time: texts are a quarter shorter (median 66 tokens, not 86).
    history_items: int = 3
    history_not_liked: int = 2
    # Interactions whose item is missing from the items table: error or drop.
    unknown_items: str = "error"
    # Users with one interaction: train (training only), drop, or error.
    single_interaction: str = "train"
    # Seeded user subsample and per-user cap (latest N) to keep CPU runs short; 0: no limit.
    max_users: int = 150
    max_user_interactions: int = 40
    sample_seed: int = 0
    # Cold-start slice: test items with fewer than this many training interactions.
    cold_start_max: int = 5
    # Ranking view: this many test users, each with one held-out like vs N sampled unseen items.
    ranking_users: int = 50
    ranking_negatives: int = 99
    ranking_k: int = 10
    # test, or validation: set the test period aside and split the training period again
    # (for choosing defaults without looking at the test set).
    evaluate_on: str = "test"


CHOICES = {
    "unknown_items": ("error", "drop"),
    "single_interaction": ("train", "drop", "error"),
    "evaluate_on": ("test", "validation"),
}


def check_options(options: RecommendationOptions) -> None:
    for name, choices in CHOICES.items():
        value = getattr(options, name)
        if value not in choices:
            raise UserError(f"options.{name} must be one of {', '.join(choices)}; got {value!r}.")
    if not 0 < options.test_fraction < 1:
        raise UserError(f"options.test_fraction must be in (0, 1), got {options.test_fraction}.")
    for name in ("history_items", "history_not_liked", "max_users", "max_user_interactions"):
        if getattr(options, name) < 0:
            raise UserError(f"options.{name} must be 0 or more, got {getattr(options, name)}.")


# Baselines: the engine calls them with the rows the model trains on (their user and item ids
# are in the features) and scores the same test rows. The fitted models are kept for ranking.


def item_popularity(inputs: BaselineInputs) -> np.ndarray:
    """Each item's like-rate in training (smoothed); unseen items get the global rate."""
    from recipes.recommendation_models import Popularity, as_proba

    train, test = inputs.train_features, inputs.eval_features
    model = Popularity.fit(train["item"].to_numpy(), inputs.train_labels)
    inputs.fitted["item_popularity"] = model
    return as_proba(model.score(test["user"].to_numpy(), test["item"].to_numpy()))


def collaborative_filtering(inputs: BaselineInputs) -> np.ndarray:
    """Logistic matrix factorisation with user and item biases on the training interactions."""
    from recipes.recommendation_models import LogisticMF, as_proba

    train, test = inputs.train_features, inputs.eval_features
    model = LogisticMF.fit(
        train["user"].to_numpy(), train["item"].to_numpy(), inputs.train_labels, seed=inputs.seed
    )
    inputs.fitted["collaborative_filtering"] = model
    return as_proba(model.score(test["user"].to_numpy(), test["item"].to_numpy()))


class Recommendation(Recipe):
    name = "recommendation"
    title = "Recommendation (will this user like this item)"
    description = "Predict whether a user likes an item from their history and the item's text."
    defaults = {
        # Checked on the validation split (options.evaluate_on=validation;
        # docs/recipes/recommendation.md). With 3 + 2 history titles, 95% of the texts fit in
        # 89 tokens; the candidate comes first, so truncation only ever cuts the oldest history.
        "data": {"positive_label": "like", "max_length": 96},
        "model": {"name": "minilm", "lora_r": 16, "head_init": "probe"},
        "train": {"epochs": 2, "batch_size": 32, "learning_rate": 1e-3},
    }
    baselines = ("embedding_logreg", item_popularity, collaborative_filtering)
    datasets = ("movielens_small",)
    # CI's quick run (`train --quick`, checked against reports/floors.yaml): fewer users, a
    # short step budget and a smaller ranking sample, so it takes about a minute or two on CPU.
    quick = {
        "options": {
            "max_users": 60,
            "max_user_interactions": 30,
            "ranking_users": 20,
            "ranking_negatives": 49,
        },
        "train": {"max_steps": 30},
    }
    Options = RecommendationOptions
    extra_key = "recommendation"
    # The ranking view's NDCG@k (options.ranking_k): what a recommender is used for.
    primary_metric = "ndcg_at_k"
    built_texts = "interaction histories (the candidate item and the user's earlier items)"
    flags = (
        Flag(
            "--interactions",
            "options.interactions",
            "Interactions CSV/Parquet or MovieLens folder.",
        ),
        Flag("--items", "options.items", "Items CSV/Parquet: item id + text columns."),
        Flag("--user-column", "options.user_column", "Default: user."),
        Flag("--item-column", "options.item_column", "Default: item."),
        Flag("--rating-column", "options.rating_column", "Default: rating."),
        Flag("--like-column", "options.like_column", "A 0/1 like column instead of ratings."),
        Flag("--timestamp-column", "options.timestamp_column", "Default: timestamp."),
        Flag("--item-text-columns", "options.item_text_columns", "Default: title,genres."),
        Flag("--rating-threshold", "options.rating_threshold", "like = rating >= this (4).", float),
        Flag("--test-fraction", "options.test_fraction", "Latest share per user (0.2).", float),
        Flag("--history", "options.history_items", "Liked titles in the model text (3).", int),
        Flag("--max-users", "options.max_users", "Seeded user subsample (0: all).", int),
        Flag("--unknown-items", "options.unknown_items", "error or drop."),
    )

    def config(
        self, yaml_path: str | Path | None = None, quick: bool = False, **overrides: Any
    ) -> Config:
        config = super().config(yaml_path, quick=quick, **overrides)
        if config.data.path is not None or config.data.eval_path is not None:
            raise UserError(
                "The recommendation recipe splits an interaction log by time: pass "
                "--interactions PATH (and --items PATH) instead of --data/--eval-data."
            )
        return config

    def train(self, config: Config | None = None, show_progress: bool = True) -> Run:
        config = config or self.config()
        if config.eval.folds:
            # Checked here, not in config(): --set eval.folds=K is applied after config().
            raise UserError(
                "eval.folds: the recommendation recipe tests on each user's latest "
                "interactions (a split by time); cross-validation would pool and reshuffle "
                "them, training on later interactions to predict earlier ones. Drop the folds; "
                "options.evaluate_on=validation gives a second split without the test period."
            )
        return super().train(config, show_progress=show_progress)

    def split(self, config: Config) -> Splits:
        """Train/test examples from the options' log (default: bundled MovieLens), by time."""
        from recipes.recommendation_data import load_log, split_examples, subsample

        options = config.options
        check_options(options)
        log = load_log(options)
        log = subsample(log, options.max_users, options.max_user_interactions, options.sample_seed)
        train, test = split_examples(log, options)
        train.features.attrs["notes"] = log.notes
        return Splits(train, test)

    def read(self, path: str | Path, config: Config, labelled: bool = True) -> Examples:
        """Interactions to evaluate or score with a trained run. Histories come from the run's
        saved log plus (when labelled) the file's own earlier rows, strictly before each row."""
        import pandas as pd

        from finetune.data.tables import read_table
        from recipes.recommendation_data import (
            Log,
            check_items,
            movielens_folder,
            standard_interactions,
            to_examples,
        )

        options = config.options
        check_options(options)
        items, pool = self.tables(config)
        path = Path(path)
        if path.is_dir():
            folder = movielens_folder(path, options)
            new = folder.interactions
            items = pd.concat([items, folder.items]).drop_duplicates("item", keep="first")
        else:
            new = standard_interactions(read_table(path), options, str(path), labelled)
        # Prediction keeps every row (its output lines up with the file), so it cannot drop.
        policy = options.unknown_items if labelled else "error"
        new = check_items(Log(new, items, str(path)), policy).interactions
        if labelled:
            pool = pd.concat([pool, new]).drop_duplicates(["user", "item", "timestamp"])
        return to_examples(
            new, pool[["user", "item", "label", "timestamp"]], items, options, str(path)
        )

    def tables(self, config: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(items, interaction log) of a trained run: from its folder, else from the options."""
        import pandas as pd

        from recipes.recommendation_data import load_log, subsample

        folder = Path(config.output or "") / TABLES
        if config.output and (folder / "items.parquet").is_file():
            return (
                pd.read_parquet(folder / "items.parquet"),
                pd.read_parquet(folder / "interactions.parquet"),
            )
        options = config.options
        log = load_log(options)
        log = subsample(log, options.max_users, options.max_user_interactions, options.sample_seed)
        return log.items, log.interactions

    def save_files(self, folder: Path, context: EvalContext) -> None:
        """The items table and the interaction log the run used: `recommend`, `evaluate` and
        `predict` build histories from them, so a run needs no access to the original files."""
        import pandas as pd

        from recipes.recommendation_data import load_log

        columns = ["user", "item", "label", "timestamp"]
        log = pd.concat(
            [
                context.train.features[columns].assign(split="train"),
                context.evaluation.features[columns].assign(
                    split=context.config.options.evaluate_on
                ),
            ],
            ignore_index=True,
        )
        (folder / TABLES).mkdir()
        load_log(context.config.options).items.to_parquet(folder / TABLES / "items.parquet")
        log.to_parquet(folder / TABLES / "interactions.parquet")

    def extra_report(self, context: EvalContext) -> tuple[dict[str, Any], list[str]]:
        from recipes.recommendation_report import recommender_report

        extra, sections = recommender_report(context)
        # The ranking figures join each method's entry in metrics.json (primary_metric).
        k = context.config.options.ranking_k
        for name, figures in extra["ranking"].get("methods", {}).items():
            context.method_metrics[name] = {
                "ndcg_at_k": figures[f"ndcg_at_{k}"],
                "recall_at_k": figures[f"recall_at_{k}"],
            }
        return extra, sections

    def recommend(self, run: Run, user: str, k: int = 10, candidates: int = 0) -> pd.DataFrame:
        """The k unseen items `run` scores highest for `user` (item, title, p_like).

        `candidates` > 0 scores only that many of the most-interacted unseen items (faster).
        """
        from recipes.recommendation_data import to_examples

        items, log = self.tables(run.config)
        user = str(user)
        if user not in set(log["user"]):
            shown = ", ".join(sorted(set(log["user"]), key=str)[:5])
            raise UserError(
                f"User {user!r} is not in this run's interaction log ({log['user'].nunique()} "
                f"users, e.g. {shown})."
            )
        seen = set(log.loc[log["user"] == user, "item"])
        unseen = items[~items["item"].isin(seen)]
        if candidates:
            counts = log["item"].value_counts()
            unseen = unseen.assign(n=unseen["item"].map(counts).fillna(0))
            unseen = unseen.sort_values("n", ascending=False, kind="stable").head(candidates)
        now = {"user": user, "timestamp": log["timestamp"].max() + 1}
        frame = unseen[["item"]].assign(**now)
        examples = to_examples(frame, log, items, run.config.options, "recommend")
        p_like = run.predict_proba(examples.texts)[:, run.labels.index("like")]
        ranked = unseen.assign(p_like=p_like).sort_values("p_like", ascending=False, kind="stable")
        return ranked[["item", "title", "p_like"]].head(k).reset_index(drop=True)

    def add_commands(self, group: typer.Typer) -> None:
        from finetune.cli import friendly_errors

        @group.command("recommend")
        @friendly_errors
        def recommend(
            run: RunOpt, user: UserOpt, k: KOpt = 10, candidates: CandidatesOpt = 0
        ) -> None:
            """Score the user's unseen items with a trained run and print the top k."""
            loaded = self.load(run)
            top = self.recommend(loaded, user, k, candidates)
            for rank, row in enumerate(top.itertuples(), start=1):
                typer.echo(f"{rank:3d}. {row.p_like:.3f}  {row.title}  [{row.item}]")


recipe = Recommendation()
