"""Recommendation: the top items of a whole catalogue for a user, judged on ranking.

A two-tower ranker on the engine's ranking task (finetune/modeling/ranking.py): the user's
history as text (their recent liked and not-liked items, most recent first) and each item's
text, encoded by the same LoRA-tuned encoder and scored by dot product, so the item vectors are
computed once and a user's scores for every item are one matrix product. It learns from each
liked interaction against in-batch and sampled catalogue negatives; text is what lets it rank
items no one has interacted with yet.

The log is split by time (recipes/recommendation_split.py: one global cutoff by default, the
validation slice just before it); the run (recipes/recommendation_ranking.py) judges the model
and the baselines (most popular, recently popular, item-kNN, implicit ALS) and the frozen
encoder on full-catalogue Recall/NDCG@10 and MRR with bootstrap intervals, a cold-item slice
and the classic sampled protocol; like/not-like accuracy, F1, AUC and GAUC come second.
Default data: MovieLens latest-small (finetune/cards/movielens_small.md), all users.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from finetune.config import Config
from finetune.errors import UserError
from finetune.recipe import Flag, Recipe, Splits
from recipes.recommendation_report import delivered_key

if TYPE_CHECKING:
    import pandas as pd

# `recommend` command options (module level: typer resolves the annotations here).
RunOpt = Annotated[Path, typer.Option("--run", help="A run folder written by train.")]
UserOpt = Annotated[str | None, typer.Option("--user", help="User id as in the interactions.")]
KOpt = Annotated[int, typer.Option("--k", min=1, help="How many items to list.")]
LikedOpt = Annotated[
    str | None, typer.Option("--liked", help="A new user: item ids they liked, ID,ID,...")
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
    # global: one cutoff time, everything at or after it is test (the latest test_fraction of
    # the log); user: each user's latest test_fraction. Validation is cut the same way from the
    # training period (its latest val_fraction).
    split: str = "global"
    test_fraction: float = 0.2
    val_fraction: float = 0.1
    # History in the query text: the last N liked and the last M not-liked item titles.
    history_items: int = 10
    history_not_liked: int = 3
    # Item text tokens (title and genres fit in 48 for MovieLens).
    item_max_length: int = 48
    # Interactions whose item is missing from the items table: error or drop.
    unknown_items: str = "error"
    # Training queries (liked interactions of the fit rows): a seeded sample of this many per
    # run, 0 for all; it bounds the run time on CPU.
    max_train_queries: int = 3000
    # Ranking loss: softmax (in-batch + sampled negatives, logQ-corrected) or bpr (pairwise).
    loss: str = "softmax"
    negatives: int = 64
    popularity_correction: float = 1.0
    # Add a learned multiple of log(1 + an item's training likes) to its score: what the log
    # knows about an item where it knows something; items nobody liked rank by text alone.
    popularity_prior: bool = True
    k: int = 10
    sampled_negatives: int = 99
    # Unused by the ranking run; kept so older configs still load.
    single_interaction: str = "train"
    max_users: int = 0
    max_user_interactions: int = 0
    sample_seed: int = 0
    evaluate_on: str = "test"


CHOICES = {
    "unknown_items": ("error", "drop"),
    "split": ("global", "user"),
    "loss": ("softmax", "bpr"),
}


BY_TIME = "the recommendation recipe splits an interaction log by time: pass --interactions"


def check_options(options: RecommendationOptions) -> None:
    for name, choices in CHOICES.items():
        value = getattr(options, name)
        if value not in choices:
            raise UserError(f"options.{name} must be one of {', '.join(choices)}; got {value!r}.")
    for name in ("test_fraction", "val_fraction"):
        if not 0 < getattr(options, name) < 1:
            raise UserError(f"options.{name} must be in (0, 1), got {getattr(options, name)}.")
    for name in ("history_items", "history_not_liked", "max_train_queries", "negatives"):
        if getattr(options, name) < 0:
            raise UserError(f"options.{name} must be 0 or more, got {getattr(options, name)}.")


class Recommendation(Recipe):
    name = "recommendation"
    title = "Recommendation (top items for a user)"
    description = "Rank the catalogue for a user from their history and the items' text."
    defaults = {
        # Queries: 10 liked + 3 not-liked titles fit in 128 tokens for 95% of MovieLens users.
        "data": {"max_length": 128},
        # LoRA on the top 2 of MiniLM's 6 layers: the lower 4 run once over the catalogue and
        # the queries (cached), so each epoch's catalogue encoding costs a third of a full one.
        "model": {"name": "minilm", "lora_r": 16, "lora_layers": 2},
        "train": {"epochs": 2, "batch_size": 32, "learning_rate": 5e-4, "eval_batch_size": 256},
    }
    baselines = ()
    datasets = ("movielens_small",)
    # CI's quick run (`train --quick`, checked against reports/floors.yaml): fewer training
    # queries, shorter histories and one short epoch; the whole catalogue is still ranked.
    quick = {
        "options": {"max_train_queries": 600, "history_items": 5, "history_not_liked": 2},
        "data": {"max_length": 64},
        "train": {"epochs": 1},
    }
    Options = RecommendationOptions
    unused_options = {
        "data.path": f"{BY_TIME} PATH (and --items PATH) instead.",
        "data.eval_path": f"{BY_TIME} PATH; the latest share of it (--test-fraction) is the test.",
        "data.text_column": "the recommendation recipe builds its texts from the items' columns: "
        "name them with --item-text-columns.",
        "data.label_column": "the recommendation recipe learns from ratings or likes: name "
        "their column with --rating-column or --like-column.",
        "data.positive_label": "a like is a rating at or above --rating-threshold, or a 1 in "
        "--like-column.",
        "data.eval_fraction": "the recommendation recipe's test period is the latest share of "
        "the log: --test-fraction.",
        "data.val_fraction": "the recommendation recipe's validation period is the latest "
        "share of the training period: options.val_fraction.",
        "data.memory_map": "the recommendation recipe reads its interaction log into memory.",
        "eval.calibrate": "the recommendation recipe ranks items; it serves no probabilities "
        "to calibrate.",
        "eval.folds": "the recommendation recipe splits by time; cross-validation would train "
        "on later interactions to predict earlier ones. Drop the folds.",
    }
    extra_key = "recommendation"
    primary_metric = "ndcg@10"
    built_texts = "interaction histories (the user's earlier liked and not-liked items)"
    # A run ranks the catalogue for a user (`recommend`); it has no labels to predict.
    run_commands = ()
    serve_command = "recommend"
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
        Flag("--split", "options.split", "global (one cutoff time, default) or user."),
        Flag("--test-fraction", "options.test_fraction", "Latest share of the log (0.2).", float),
        Flag("--history", "options.history_items", "Liked titles in the query text (10).", int),
        Flag("--loss", "options.loss", "softmax (default) or bpr."),
        Flag("--unknown-items", "options.unknown_items", "error or drop."),
    )

    def train(self, config: Config | None = None, show_progress: bool = True) -> Any:
        """The ranking run (recipes/recommendation_ranking.py); prints its ranking table (the
        command line then says which method is delivered, and shows the like view)."""
        from recipes.recommendation_data import load_log
        from recipes.recommendation_ranking import train_ranking
        from recipes.recommendation_report import ranking_table

        config = self.refuse_unused(config or self.config())
        check_options(config.options)
        run = train_ranking(config, load_log(config.options), show_progress)
        k = config.options.k
        typer.echo(ranking_table(run.metrics["ranking"], k, delivered_key(run.metrics)))
        return run

    def split(self, config: Config) -> Splits:
        """Not used by the ranking run (`train`); see recipes/recommendation_split.py."""
        raise UserError(
            "The recommendation recipe trains a ranker with its own split by time: use "
            "`finetune recommendation train`, then `recommend`."
        )

    def read(self, path: str | Path, config: Config, labelled: bool = True) -> Any:
        raise UserError(
            "A recommendation run ranks items for users; `evaluate` and `predict` of single "
            "texts do not apply. Use `finetune recommendation recommend --run RUN --user U`."
        )

    def load(self, folder: str | Path) -> Any:
        import numpy as np

        from finetune.config import load_yaml, merge
        from finetune.modeling.ranking import load_two_tower
        from recipes.recommendation_ranking import RankingRun

        folder = self.own_run(folder)
        if not (folder / "adapter" / "ranker.json").is_file():
            raise UserError(
                f"{folder} is not a finished recommendation run (no adapter/ranker.json)."
            )
        saved = load_yaml(folder / "config.yaml")
        options = saved.pop("options", {})
        config = merge(Config(options=RecommendationOptions()), saved, source=str(folder))
        config = merge(config, {"options": options, "output": str(folder)}, source=str(folder))
        model, tokenizer, info = load_two_tower(folder / "adapter")
        metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
        vectors = np.load(folder / "adapter" / "item_vectors.npy")
        offsets = np.load(folder / "adapter" / "item_offsets.npy")
        return RankingRun(folder, config, metrics, model, tokenizer, info, vectors, offsets)

    def recommend(
        self,
        run: Any,
        user: str | None = None,
        k: int = 10,
        liked: list[str] | None = None,
        at: int | None = None,
    ) -> pd.DataFrame:
        """The k items `run` scores highest for `user` (their training-period history) or for
        a new user who liked `liked` (item ids), from the whole catalogue: item, title, score.
        Items the user already rated are left out. `at`: the query time (Unix seconds) the
        re-ranker measures item ages from; default the end of the run's training period."""
        import numpy as np
        import pandas as pd

        from finetune.modeling import models
        from finetune.modeling.ranking import Encoder
        from recipes.recommendation_models import RANKING_BASELINES
        from recipes.recommendation_ranking import RERANKED, TWO_TOWER, served_baseline_scores
        from recipes.recommendation_split import history_text

        tables = run.serving()
        items, log, titles = tables.items, tables.log, tables.titles
        if liked:
            unknown = [i for i in liked if i not in titles]
            if unknown:
                raise UserError(
                    f"--liked: item ids not in the catalogue: {', '.join(unknown[:5])}."
                )
            text, seen = history_text([titles[i] for i in liked][::-1], []), list(liked)
        else:
            user = str(user)
            if user not in tables.users:
                shown = ", ".join(sorted(tables.users, key=str)[:5])
                raise UserError(
                    f"User {user!r} is not in this run's training log ({len(tables.users)} "
                    f"users, e.g. {shown}). For a new user pass --liked ID,ID."
                )
            text, _, _ = tables.histories.before(user, np.iinfo(np.int64).max)
            seen = list(tables.histories.seen(user, np.iinfo(np.int64).max))
        delivered = delivered_key(run.metrics)
        if not liked and delivered != TWO_TOWER:  # the log's signals read the user's likes
            rows = log[(log["user"] == user) & (log["label"] == 1)]
            liked = list(rows["item"])
        if delivered in RANKING_BASELINES:  # the run's validation preferred a baseline
            seed = run.config.train.seed
            scores = served_baseline_scores(delivered, log, items, liked, seed)
        else:
            # One query at a time: fp32 on CPU (bf16 autocast recasts every weight per call).
            device = models.pick_device()
            encoder = Encoder(run.tokenizer, 1, device, run.info.bf16 and device != "cpu")
            query = encoder.tokens([text], run.info.max_length)
            scores = encoder.scores(run.model, query, run.item_vectors)[0] + run.item_offsets
            if delivered == RERANKED:
                scores = run.reranker().scores(scores, liked or [], at)
        scores[items["item"].isin(set(seen)).to_numpy()] = -np.inf
        top = np.argsort(-scores, kind="stable")[:k]
        return pd.DataFrame(
            {"item": items["item"].iloc[top].values, "title": items["title"].iloc[top].values,
             "score": scores[top]}
        )  # fmt: skip

    def add_commands(self, group: typer.Typer) -> None:
        from finetune.cli import friendly_errors

        @group.command("recommend")
        @friendly_errors
        def recommend(
            run: RunOpt, user: UserOpt = None, k: KOpt = 10, liked: LikedOpt = None
        ) -> None:
            """The top k items of the whole catalogue for a user (or a new user's --liked)."""
            if (user is None) == (liked is None):
                raise UserError("Give either --user ID or --liked ID,ID (a new user).")
            loaded = self.load(run)
            start = time.perf_counter()
            ids = [i.strip() for i in liked.split(",") if i.strip()] if liked else None
            top = self.recommend(loaded, user, k, ids)
            milliseconds = 1000 * (time.perf_counter() - start)
            for rank, row in enumerate(top.itertuples(), start=1):
                typer.echo(f"{rank:3d}. {row.score:6.2f}  {row.title}  [{row.item}]")
            method = delivered_key(loaded.metrics)
            typer.echo(
                f"({len(loaded.item_vectors):,} items scored in {milliseconds:.0f} ms by the "
                f"run's delivered method, {method})"
            )


recipe = Recommendation()
