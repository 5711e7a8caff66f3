"""The recommendation run: a two-tower ranker on the engine's ranking task, judged on ranking.

Stages, each returning what the next reads: `ranking_data` (log -> time split -> queries and
the evaluation protocol) -> `baseline_scores` (most and recently popular, item-kNN, ALS;
fitted on the fit rows for validation and on the whole training period for test) ->
`fit_ranker` (LoRA on the shared encoder, kept epoch by validation NDCG@10; epoch 0 is the
frozen encoder) -> `judge` (every method's ranking figures with intervals; the like/not-like
view second) -> `write`.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from finetune.config import Config, save_yaml
from finetune.evaluation.ranking import Protocol, method_figures, sample_negatives
from finetune.files import output_folder, staged
from recipes.recommendation_split import (
    FIT,
    TEST,
    VALIDATION,
    LogSplit,
    Queries,
    evaluation_queries,
    split_log,
    training_queries,
)

MODEL = "model"  # the delivered method's key in metrics.json's `ranking`
TWO_TOWER = "two_tower"  # the fine-tuned ranker (the kept epoch)
FROZEN = "frozen_two_tower"  # epoch 0: the same towers without fine-tuning
RERANKED = "two_tower_reranked"  # the two-tower's score and the log's signals, re-ranked
FINETUNED = (TWO_TOWER, RERANKED)  # the fine-tuned methods (not baselines)
TABLES = "recommendation"
RERANKER = "reranker"  # run sub-folder: the re-ranker, the item stats and ALS factors it reads


@dataclass
class RankingData:
    items: pd.DataFrame  # the catalogue: position = column of every score matrix
    split: LogSplit
    train: Queries
    validation: Queries
    test: Queries
    protocol: Protocol  # test
    notes: list[str]


def protocol_for(queries: Queries, split: LogSplit, items: pd.DataFrame, options: Any) -> Protocol:
    """Full-catalogue relevance, the cold slice and the sampled protocol for test queries."""
    position = {item: k for k, item in enumerate(items["item"])}
    trained = set(split.rows(FIT, VALIDATION)["item"].map(position))
    cold = [
        np.array([i for i in rel if i not in trained], dtype=np.int64) for rel in queries.relevant
    ]
    test = split.rows(TEST)
    latest = test[test["label"] == 1].sort_values("timestamp", kind="stable")
    last_like = latest.groupby("user")["item"].last().map(position)
    everything = split.interactions.groupby("user")["item"].agg(
        lambda s: s.map(position).to_numpy()
    )
    rows = np.arange(len(queries.users))
    positive = np.array([last_like[u] for u in queries.users], dtype=np.int64)
    seen = [np.asarray(everything[u], dtype=np.int64) for u in queries.users]
    # A catalogue smaller than the classic 99 negatives plus a user's items samples fewer.
    room = min(len(items) - len(np.union1d(s, [p])) for s, p in zip(seen, positive, strict=True))
    n = min(options.sampled_negatives, room)
    negatives = sample_negatives(len(items), positive, seen, n, seed=0)
    return Protocol(queries.relevant, queries.exclude, cold, rows, positive, negatives, options.k)


def ranking_data(log: Any, options: Any, seed: int) -> RankingData:
    split = split_log(log.interactions, options)
    fit, val = split.rows(FIT), split.rows(VALIDATION)
    train = training_queries(fit, log.items, options, options.max_train_queries, seed)
    validation = evaluation_queries(fit, val, log.items, options)
    test = evaluation_queries(split.rows(FIT, VALIDATION), split.rows(TEST), log.items, options)
    if not train.users or not validation.users or not test.users:
        from finetune.errors import UserError

        raise UserError(
            f"{log.source}: the {split.describe()} leaves no liked interaction in "
            "training, validation or test; use a longer log or --set options.split=user."
        )
    protocol = protocol_for(test, split, log.items, options)
    return RankingData(log.items, split, train, validation, test, protocol, list(log.notes))


def query_likes(queries: Queries, rows: pd.DataFrame, items: pd.DataFrame) -> Any:
    """The query users' like rows from `rows` (their history, as a sparse matrix)."""
    from recipes.recommendation_models import like_matrix

    position = {item: k for k, item in enumerate(items["item"])}
    return like_matrix(rows, queries.users, position, len(items))


def baseline_scores(
    rows: pd.DataFrame, queries: Queries, items: pd.DataFrame, seed: int
) -> dict[str, np.ndarray]:
    """Each baseline fitted on `rows` and scored for `queries` (users) over the catalogue."""
    from recipes.recommendation_models import RANKING_BASELINES, like_log

    position = {item: k for k, item in enumerate(items["item"])}
    users = sorted(set(rows["user"]) | set(queries.users), key=str)
    log = like_log(rows, users, position, seed)
    asked = query_likes(queries, rows, items)
    return {name: baseline(log, asked) for name, baseline in RANKING_BASELINES.items()}


def served_baseline_scores(
    name: str, log: pd.DataFrame, items: pd.DataFrame, liked: list[str], seed: int
) -> np.ndarray:
    """A baseline's catalogue scores for one user who liked `liked`, fitted on `log` (the
    run's training period, as for its test figures): what `recommend` serves when the run
    delivered a baseline."""
    from scipy.sparse import csr_matrix

    from recipes.recommendation_models import RANKING_BASELINES, like_log

    position = {item: k for k, item in enumerate(items["item"])}
    history = like_log(log, sorted(set(log["user"]), key=str), position, seed)
    columns = sorted({position[i] for i in liked if i in position})
    asked = csr_matrix(
        (np.ones(len(columns), dtype=np.float32), ([0] * len(columns), columns)),
        shape=(1, len(items)),
    )
    scores = RANKING_BASELINES[name](history, asked)
    return np.asarray(scores[0], dtype=np.float64)


@dataclass
class Reranked:
    """The second stage: the re-ranker fitted on the validation period (features from the fit
    period's models), its cross-fitted validation scores and its test scores (features from the
    whole training period's models, the rows the baselines' test figures use)."""

    reranker: Any  # recommendation_rerank.Reranker
    stats: Any  # recommendation_rerank.ItemStats of the training period (serving)
    als_factors: np.ndarray  # ALS item factors of the training period (serving)
    val_scores: np.ndarray
    test_scores: np.ndarray


def collaborative_scores(
    rows: pd.DataFrame, queries: Queries, items: pd.DataFrame, seed: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """item-kNN and ALS scores for `queries` from models fitted on `rows` (the like matrix of
    `rows`' users only, as `recommend` rebuilds it from the saved log), and the ALS factors."""
    from recipes.recommendation_models import (
        als_item_factors,
        als_user_scores,
        item_knn,
        like_matrix,
    )

    position = {item: k for k, item in enumerate(items["item"])}
    likes = like_matrix(rows, sorted(set(rows["user"]), key=str), position, len(items))
    asked = query_likes(queries, rows, items)
    factors = als_item_factors(likes, seed)
    scores = {"item_knn": item_knn(likes, asked), "implicit_als": als_user_scores(factors, asked)}
    return scores, factors


def stage_features(
    rows: pd.DataFrame, queries: Queries, items: pd.DataFrame, two_tower: np.ndarray, **at: Any
) -> tuple[np.ndarray, Any, np.ndarray]:
    """The re-ranker's features for `queries` from `rows` (the history period) and models fitted
    on them: (users x items x features, the item stats, the ALS factors). `at`: cutoff, seed."""
    from recipes.recommendation_rerank import history_end, item_stats, pair_features

    stats = item_stats(rows, items, history_end(rows, at.get("cutoff")))
    scores, factors = collaborative_scores(rows, queries, items, at.get("seed", 0))
    user_likes = np.asarray(query_likes(queries, rows, items).sum(1)).ravel()
    features = pair_features(stats, {"two_tower": two_tower, **scores}, queries.times, user_likes)
    return features, stats, factors


def rerank_stage(data: RankingData, fitted: Fitted, seed: int) -> Reranked:
    """Fit the re-ranker on validation queries (fit-period models), cross-fit its validation
    figure by user, and score the test queries (training-period models)."""
    from recipes.recommendation_rerank import cross_fitted_scores, fit_reranker

    split, cutoffs = data.split, data.split.cutoffs
    val_features, _, _ = stage_features(
        split.rows(FIT), data.validation, data.items, fitted.val_scores,
        cutoff=cutoffs.get("validation"), seed=seed,
    )  # fmt: skip
    relevant, exclude = data.validation.relevant, data.validation.exclude
    val_scores = cross_fitted_scores(val_features, relevant, exclude, seed)
    reranker = fit_reranker(val_features, relevant, exclude, seed)
    del val_features
    test_features, stats, factors = stage_features(
        split.rows(FIT, VALIDATION), data.test, data.items, fitted.test_scores,
        cutoff=cutoffs.get("test"), seed=seed,
    )  # fmt: skip
    test_scores = reranker.scores(test_features)
    return Reranked(reranker, stats, factors, val_scores, test_scores)


@dataclass
class Fitted:
    """The trained ranker and its scores: the catalogue is encoded once per evaluated epoch,
    and the kept epoch's item vectors serve validation, test, the run folder and `recommend`."""

    model: Any
    tokenizer: Any
    info: Any
    result: Any  # the loop's TrainResult
    item_vectors: np.ndarray  # the kept epoch's
    val_scores: np.ndarray  # validation queries x catalogue, the kept epoch
    test_scores: np.ndarray  # test queries x catalogue, the kept epoch
    frozen_val: np.ndarray  # epoch 0's (the "no fine-tuning" baseline)
    frozen_test: np.ndarray
    item_offsets: np.ndarray  # the learned prior's share of each item's score (serving)


@dataclass
class Towers:
    """The ranker before training: model, encoder, every text's inputs (token ids, or rows
    of the lower layers' cache), and epoch 0 (the frozen towers) scored once."""

    model: Any
    tokenizer: Any
    info: Any
    encoder: Any
    items: list[Any]
    train: list[Any]
    validation: list[Any]
    test: list[Any]
    frozen: Any  # Scored: item vectors and validation scores (with the prior)
    frozen_test: np.ndarray  # without the prior: test adds the whole training period's
    frozen_prior_weight: float


def item_prior(rows: pd.DataFrame, items: pd.DataFrame) -> np.ndarray:
    """log(1 + training likes) per catalogue item (0 for an item nobody liked in `rows`)."""
    counts = rows.loc[rows["label"] == 1, "item"].value_counts()
    return np.log1p(items["item"].map(counts).fillna(0).to_numpy(np.float32))


def build_towers(data: RankingData, config: Config, device: str, bf16: bool) -> Towers:
    import torch

    from finetune.modeling import models
    from finetune.modeling.ranking import Encoder, Scored, build_two_tower, fit_prior_weight

    options, train_config = config.options, config.train
    checkpointing = models.use_gradient_checkpointing(
        train_config.gradient_checkpointing, config.model.quant, device
    )
    model, tokenizer, info = build_two_tower(
        config.model,
        config.data.max_length,
        options.item_max_length,
        bf16,
        device,
        train_config.seed,
        checkpointing,
    )
    encoder = Encoder(tokenizer, train_config.eval_batch_size, device, bf16)
    ids = [encoder.tokens(list(data.items["text"]), options.item_max_length)]
    ids += [
        encoder.tokens(queries.texts, config.data.max_length)
        for queries in (data.train, data.validation, data.test)
    ]
    # With LoRA on the top layers only, the lower layers run once over every text here.
    items, train, validation, test = encoder.cache(model, ids)
    # Epoch 0 (LoRA's B matrices start at zero): the frozen towers, scored once up front.
    vectors = encoder.vectors(model, items)
    if options.popularity_prior:  # training and validation see the fit rows' likes only
        prior = item_prior(data.split.rows(FIT), data.items)
        model.set_item_prior(prior)
        text_scores = encoder.scores(model, train, vectors)
        weight = fit_prior_weight(text_scores, prior, data.train.positive)
        with torch.no_grad():
            model.prior_weight.fill_(weight)
    val_scores = encoder.scores(model, validation, vectors) + model.catalogue_offsets()
    frozen = Scored(vectors, val_scores)
    frozen_test = encoder.scores(model, test, vectors)
    weight = float(model.prior_weight.detach())
    return Towers(
        model, tokenizer, info, encoder, items, train, validation, test, frozen, frozen_test, weight
    )


def fit_ranker(
    data: RankingData,
    config: Config,
    device: str,
    show_progress: bool,
    checkpoints: Any = None,
) -> Fitted:
    """LoRA on the shared encoder with the ranking task; the kept epoch is the best on the
    validation queries' NDCG@k (epoch 0, the frozen encoder, included)."""
    from finetune.evaluation.ranking import validation_measure
    from finetune.modeling import models
    from finetune.modeling.ranking import QueryInputs, RankingTask, Scored, Validation
    from finetune.training.loop import Rows, TrainingLoop

    options = config.options
    bf16 = models.use_bf16(config.train.precision, device)
    towers = build_towers(data, config, device, bf16)
    encoder, model = towers.encoder, towers.model
    measure = validation_measure(data.validation.relevant, data.validation.exclude, options.k)
    task = RankingTask(
        encoder,
        towers.train,
        data.train.positive,
        towers.items,
        Validation(towers.validation, measure),
        loss=options.loss,
        negatives=options.negatives,
        popularity_correction=options.popularity_correction,
        k=options.k,
    )
    task.start_from(model, towers.frozen)
    n_train, n_val = len(towers.train), len(towers.validation)
    loop = TrainingLoop(
        model,
        Rows(list(range(n_train)), np.zeros(n_train, dtype=np.int64)),
        Rows(list(range(n_val)), np.zeros(n_val, dtype=np.int64)),
        config.train,
        QueryInputs(encoder.lengths(towers.train)),
        device,
        bf16,
        checkpoints=checkpoints,
        show_progress=show_progress,
        task=task,
    )
    result = loop.run(resume=config.resume)
    kept = task.kept(result.history, result.best_epoch)
    if kept is None:  # the loop's history and the task's calls differ: encode the kept epoch
        vectors = encoder.vectors(model, towers.items)
        scores = encoder.scores(model, towers.validation, vectors) + model.catalogue_offsets()
        kept = Scored(vectors, scores)  # as RankingTask.figures scores an epoch
    test_scores = (
        towers.frozen_test
        if kept.item_vectors is towers.frozen.item_vectors
        else encoder.scores(model, towers.test, kept.item_vectors)
    )
    # Test (and serving) use the whole training period's likes, as the baselines do.
    prior = item_prior(data.split.rows(FIT, VALIDATION), data.items)
    model.set_item_prior(prior if options.popularity_prior else None)
    offsets = np.broadcast_to(model.catalogue_offsets(), (len(data.items),)).copy()
    frozen_offsets = towers.frozen_prior_weight * prior if options.popularity_prior else 0.0
    return Fitted(
        model,
        towers.tokenizer,
        towers.info,
        result,
        kept.item_vectors,
        kept.scores,
        test_scores + offsets,
        towers.frozen.scores,
        towers.frozen_test + frozen_offsets,
        offsets.astype(np.float32),
    )


def rated_rows(queries: Queries, rows: pd.DataFrame, items: pd.DataFrame) -> tuple:
    """(query row, catalogue position, label) of every rated interaction of the query users
    in `rows`: the like/not-like view scores these pairs."""
    position = {item: k for k, item in enumerate(items["item"])}
    index = {user: k for k, user in enumerate(queries.users)}
    rated = rows[rows["user"].isin(index)]
    return (
        rated["user"].map(index).to_numpy(),
        rated["item"].map(position).to_numpy(),
        rated["label"].to_numpy(),
        rated["user"].to_numpy(),
    )


def like_view(
    val_scores: np.ndarray, val_pairs: tuple, test_scores: np.ndarray, test_pairs: tuple
) -> dict[str, Any]:
    """The secondary view: does the user like a rated item? The method's score becomes
    P(like) by a logistic fit on the validation pairs (Platt scaling), then accuracy, recall,
    F1 and AUC on the test pairs, with the per-user AUC (GAUC)."""
    from sklearn.linear_model import LogisticRegression

    from finetune.evaluation.metrics import classification_metrics
    from recipes.recommendation_models import gauc

    q, i, y, _ = val_pairs
    x_val = val_scores[q, i][:, None]
    calibration = LogisticRegression().fit(x_val, y) if len(set(y)) == 2 else None
    q, i, y, users = test_pairs
    x = test_scores[q, i][:, None]
    p_like = calibration.predict_proba(x)[:, 1] if calibration else np.full(len(y), y.mean())
    metrics = classification_metrics(y, np.column_stack([1 - p_like, p_like]), ["not_like", "like"])
    metrics["gauc"], metrics["gauc_users"] = gauc(users, y, x[:, 0])
    return metrics


def delivered_method(validation_ndcg: dict[str, float], deliver: str = "best") -> str:
    """What the run serves, by the engine's rule (finetune.evaluation.selection): the method
    with the best validation NDCG when it leads the fine-tuned model (two-tower + re-ranker;
    its validation figure cross-fitted by user) by more than the engine's margin, else that
    model; always the model with eval.deliver `finetuned`. The test period plays no part."""
    from finetune.evaluation.selection import MARGIN

    best = max(validation_ndcg, key=lambda name: validation_ndcg[name])
    if deliver == "finetuned" or validation_ndcg[best] - validation_ndcg[RERANKED] <= MARGIN:
        return RERANKED
    return best


def delivered_entry(comparison: dict[str, Any], k: int) -> dict[str, Any]:
    """metrics.json `delivered`, in the engine's shape (`name`: "model" for the fine-tuned
    model, two-tower + re-ranker, else the method's name), with `method`: the delivered key
    of `ranking`."""
    from finetune.evaluation.selection import MARGIN
    from recipes.recommendation_report import delivered_line

    method = comparison["delivered"]
    return {
        "name": "model" if method == RERANKED else method,
        "method": method,
        "metric": f"ndcg@{k}",
        "margin": MARGIN,
        "chosen_on": "the validation period (by time)",
        "validation": comparison["validation_ndcg"],
        "note": delivered_line(comparison["validation_ndcg"], method, k),
    }


def judge(data: RankingData, fitted: Fitted, config: Config) -> dict[str, Any]:
    """Every method's test figures: ranking (the headline, with intervals) and the like view;
    the delivered method (best on validation) is also listed under `model`."""
    from finetune.evaluation.ranking import full_catalogue

    options, seed = config.options, config.train.seed
    split = data.split
    reranked = rerank_stage(data, fitted, seed)
    test = {RERANKED: reranked.test_scores, TWO_TOWER: fitted.test_scores}
    test[FROZEN] = fitted.frozen_test
    test.update(baseline_scores(split.rows(FIT, VALIDATION), data.test, data.items, seed))
    val_baselines = baseline_scores(split.rows(FIT), data.validation, data.items, seed)
    val = {RERANKED: reranked.val_scores, TWO_TOWER: fitted.val_scores}
    val.update({FROZEN: fitted.frozen_val, **val_baselines})
    ranking = {name: method_figures(scores, data.protocol, seed) for name, scores in test.items()}
    val_pairs = rated_rows(data.validation, split.rows(VALIDATION), data.items)
    test_pairs = rated_rows(data.test, split.rows(TEST), data.items)
    likes = {name: like_view(val[name], val_pairs, test[name], test_pairs) for name in test}
    relevant, exclude = data.validation.relevant, data.validation.exclude
    val_ndcg = {
        name: float(full_catalogue(scores, relevant, exclude, options.k).ndcg.mean())
        for name, scores in val.items()
    }
    delivered = delivered_method(val_ndcg, config.eval.deliver)
    ranking[MODEL], likes[MODEL] = ranking[delivered], likes[delivered]
    comparison = compare(ranking, options.k, seed)
    comparison.update(validation_ndcg=val_ndcg, delivered=delivered)
    where = diagnosis(data, {n: test[n] for n in (TWO_TOWER, RERANKED)})
    where["user_groups"] = user_groups(data, test, options.k)
    judged = {"ranking": ranking, "likes": likes, "comparison": comparison, "diagnosis": where}
    return judged | {"reranked": reranked, "delivered_scores": test[delivered]}


def diagnosis(data: RankingData, scores: dict[str, np.ndarray]) -> dict[str, Any]:
    """Where the test likes fall: warm or cold items, the cold ones' release year against the
    cutoff year, and the rank each method gives to cold and to warm liked items."""
    from recipes.recommendation_rerank import YEAR_SECONDS, release_years

    protocol, queries = data.protocol, data.test
    cold = np.concatenate(protocol.cold) if protocol.cold else np.empty(0, np.int64)
    total = sum(len(r) for r in queries.relevant)
    cutoff = data.split.cutoffs.get("test", int(data.split.rows(FIT, VALIDATION).timestamp.max()))
    years = release_years(data.items["title"])[cold]
    relative = years[~np.isnan(years)] - (1970 + cutoff / YEAR_SECONDS)
    ranks: dict[str, dict[str, float | None]] = {}
    for name, matrix in scores.items():
        found: dict[str, list[float]] = {"cold": [], "warm": []}
        for q, (rel, cold_q) in enumerate(zip(queries.relevant, protocol.cold, strict=True)):
            row = matrix[q].copy()
            row[queries.exclude[q]] = -np.inf
            for i in rel:
                found["cold" if i in set(cold_q.tolist()) else "warm"].append(
                    float((row > row[i]).sum() + 1)
                )
        ranks[name] = {k: float(np.median(v)) if v else None for k, v in found.items()}
    quantiles = np.percentile(relative, [10, 50, 90]).round(2).tolist() if len(relative) else []
    return {
        "test_likes": int(total),
        "cold_likes": int(len(cold)),
        "users_with_cold_like": int(sum(len(c) > 0 for c in protocol.cold)),
        "cold_with_year": int(len(relative)),
        "cold_year_minus_cutoff_p10_p50_p90": quantiles,
        "median_rank_of_liked": ranks,
    }


def user_groups(data: RankingData, scores: dict[str, np.ndarray], k: int) -> dict[str, Any]:
    """Test NDCG@k of each method for the users with no like before the test period and for
    those with one or more: a split by time brings many new users, and for them a ranking can
    only read the items, not the person."""
    from finetune.evaluation.ranking import full_catalogue

    queries = data.test
    earlier = np.asarray(query_likes(queries, data.split.rows(FIT, VALIDATION), data.items).sum(1))
    new = earlier.ravel() == 0
    figures: dict[str, dict[str, float | None]] = {}
    group = new[:0]  # the counted users (the same for every method: a liked test item)
    for name, matrix in scores.items():
        full = full_catalogue(matrix, queries.relevant, queries.exclude, k)
        group = new[full.rows]
        figures[name] = {
            label: float(full.ndcg[mask].mean()) if mask.any() else None
            for label, mask in (("without", group), ("with", ~group))
        }
    return {
        "users_without_earlier_likes": int(group.sum()),
        "users_with_earlier_likes": int((~group).sum()),
        f"ndcg@{k}": figures,
    }


def compare(ranking: dict[str, Any], k: int, seed: int) -> dict[str, Any]:
    """The fine-tuned model (two-tower + re-ranker; the two-tower alone too) against the best
    baseline on test NDCG@k (paired ratio) and against the best collaborative one on cold
    items."""
    from finetune.evaluation.ranking import paired_ratio

    ndcg, cold = f"ndcg@{k}", f"cold_recall@{k}"
    baselines = [n for n in ranking if n not in (MODEL, FROZEN, *FINETUNED)]
    best = max(baselines, key=lambda n: ranking[n][ndcg])
    best_cold = max(baselines, key=lambda n: ranking[n][cold] or 0.0)
    return {
        "best_baseline": best,
        "ndcg_ratio": paired_ratio(
            ranking[RERANKED]["per_query"][ndcg], ranking[best]["per_query"][ndcg], seed
        ),
        "two_tower_ndcg_ratio": paired_ratio(
            ranking[TWO_TOWER]["per_query"][ndcg], ranking[best]["per_query"][ndcg], seed
        ),
        "best_collaborative_cold": best_cold,
        "cold_recall_model": ranking[RERANKED][cold],
        "cold_recall_two_tower": ranking[TWO_TOWER][cold],
        "cold_recall_baseline": ranking[best_cold][cold],
    }


def metrics_json(data: RankingData, fitted: Fitted, judged: dict, config: Config) -> dict:
    """metrics.json: `ranking` first (every method, the delivered one also under `model`,
    named by `delivered`); the engine's headline keys (accuracy, recall, f1, auc, and the
    primary ndcg@k) are the fine-tuned model's (two-tower + re-ranker), as the engine labels
    them, and `baselines` every other method's (the two-tower alone included)."""
    from finetune.run import summary

    k = config.options.k
    ranking = {
        name: {key: value for key, value in figures.items() if key != "per_query"}
        for name, figures in judged["ranking"].items()
    }
    likes = judged["likes"]
    baselines = {}
    for name, figures in likes.items():
        if name in (MODEL, RERANKED):
            continue
        entry = summary(figures)
        entry.update(gauc=figures["gauc"], **{f"ndcg@{k}": ranking[name][f"ndcg@{k}"]})
        baselines[name] = entry
    result = fitted.result
    finetuned = {**likes[RERANKED], f"ndcg@{k}": ranking[RERANKED][f"ndcg@{k}"]}
    return {
        # The engine's shape: the top level holds the delivered method's figures, `finetuned`
        # the fine-tuned model's own (two-tower + re-ranker).
        **likes[MODEL],
        f"ndcg@{k}": ranking[MODEL][f"ndcg@{k}"],
        "finetuned": finetuned,
        "primary_metric": f"ndcg@{k}",
        "delivered": delivered_entry(judged["comparison"], k),
        "ranking": ranking,
        "ranking_comparison": judged["comparison"],
        "ranking_diagnosis": judged["diagnosis"],
        "baselines": baselines,
        "split": data.split.describe(),
        "split_cutoffs": data.split.cutoffs,
        "n_train": len(data.train.users),
        "n_val": len(data.validation.users),
        "n_eval": len(data.test.users),
        "n_items": len(data.items),
        "train_seconds": round(result.train_seconds, 2),
        "samples_per_second": round(result.samples_per_second, 2),
        "best_epoch": result.best_epoch,
        "best_epoch_metric": result.select_metric,
        "train_source": f"{data.split.describe()}",
        "eval_source": "test period (users with a liked test item)",
    }


def write_run(
    folder: Path, config: Config, data: RankingData, fitted: Fitted, judged: dict, env: dict
) -> None:
    """The run folder, atomically: config, adapter (LoRA, tokenizer, ranker.json), the item
    vectors, the items and training-period log, metrics, history, top-10 lists, report."""
    from finetune.modeling.ranking import save_two_tower
    from recipes.recommendation_report import ranking_report

    metrics = judged["metrics"]
    item_vectors = fitted.item_vectors
    with staged(folder) as tmp:
        save_yaml(
            replace(config, output=str(folder), overwrite=False, resume=False), tmp / "config.yaml"
        )
        save_two_tower(fitted.model, fitted.tokenizer, fitted.info, tmp / "adapter")
        save_reranker(judged["reranked"], tmp / RERANKER)
        np.save(tmp / "adapter" / "item_vectors.npy", item_vectors.astype(np.float32))
        np.save(tmp / "adapter" / "item_offsets.npy", fitted.item_offsets)
        (tmp / TABLES).mkdir()
        data.items.to_parquet(tmp / TABLES / "items.parquet")
        # Only the training period: `recommend` builds histories from it, never from the test.
        training = data.split.rows(FIT, VALIDATION)[["user", "item", "label", "timestamp"]]
        training.to_parquet(tmp / TABLES / "interactions.parquet")
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
        history = {"epochs": fitted.result.history, "losses": fitted.result.losses}
        (tmp / "history.json").write_text(json.dumps(history, indent=2), encoding="utf-8")
        top_lists(judged["delivered_scores"], data, config.options.k).to_csv(
            tmp / "predictions.csv", index=False
        )
        ranking_report(tmp, metrics, fitted.result, data, env)
        (tmp / "environment.json").write_text(json.dumps(env, indent=2), encoding="utf-8")


def save_reranker(reranked: Reranked, folder: Path) -> None:
    """The re-ranker (joblib), the training period's item stats and ALS item factors: with the
    saved log (item-kNN) and the two-tower, all `recommend` needs to score a user."""
    import joblib

    from recipes.recommendation_rerank import FEATURES

    folder.mkdir()
    joblib.dump(reranked.reranker, folder / "reranker.joblib")
    np.savez(folder / "item_stats.npz", **reranked.stats.arrays())
    np.save(folder / "als_item_factors.npy", reranked.als_factors)
    info = {"features": list(FEATURES), "as_of": reranked.stats.as_of}
    (folder / "reranker.json").write_text(json.dumps(info, indent=2), encoding="utf-8")


@dataclass
class ServedReranker:
    """A run folder's re-ranker with what its features read, loaded once per run."""

    reranker: Any
    stats: Any  # ItemStats of the training period
    als_factors: np.ndarray
    likes: Any  # the saved log's users x items like matrix (item-kNN)
    position: dict[str, int]

    @classmethod
    def load(cls, folder: Path, log: pd.DataFrame, items: pd.DataFrame) -> ServedReranker:
        import joblib

        from finetune.errors import UserError
        from recipes.recommendation_models import like_matrix
        from recipes.recommendation_rerank import FEATURES, ItemStats

        info = json.loads((folder / "reranker.json").read_text(encoding="utf-8"))
        if info["features"] != list(FEATURES):
            raise UserError(
                f"{folder}: the re-ranker was saved with other features ({info['features']}); "
                "train the run again with this version."
            )
        arrays = dict(np.load(folder / "item_stats.npz"))
        stats = ItemStats(**{**arrays, "as_of": int(arrays["as_of"])})
        position = {item: k for k, item in enumerate(items["item"])}
        likes = like_matrix(log, sorted(set(log["user"]), key=str), position, len(items))
        factors = np.load(folder / "als_item_factors.npy")
        return cls(joblib.load(folder / "reranker.joblib"), stats, factors, likes, position)

    def scores(self, two_tower: np.ndarray, liked: list[str], at: int | None) -> np.ndarray:
        """One user's catalogue scores: the two-tower's scores re-ranked with the log's
        signals for the items they `liked`, as of `at` (default: the training period's end)."""
        from scipy.sparse import csr_matrix
        from threadpoolctl import threadpool_limits

        from recipes.recommendation_models import als_user_scores, item_knn
        from recipes.recommendation_rerank import pair_features

        columns = sorted({self.position[i] for i in liked if i in self.position})
        n = len(self.position)
        asked = csr_matrix(
            (np.ones(len(columns), dtype=np.float32), ([0] * len(columns), columns)), shape=(1, n)
        )
        scores = {
            "two_tower": two_tower[None, :],
            "item_knn": item_knn(self.likes, asked),
            "implicit_als": als_user_scores(self.als_factors, asked),
        }
        when = np.array([self.stats.as_of if at is None else at], dtype=np.int64)
        features = pair_features(self.stats, scores, when, np.array([len(columns)]))
        # One user's few thousand rows: one thread beats waking an OpenMP pool next to torch's.
        with threadpool_limits(1, "openmp"):
            return self.reranker.scores(features)[0]


def top_lists(scores: np.ndarray, data: RankingData, k: int) -> pd.DataFrame:
    """Each test user's top k by the delivered method (training-period items excluded), marked
    hit or not, with the query time (the user's first test-period row)."""
    rows = []
    for q, (user, at) in enumerate(zip(data.test.users, data.test.times, strict=True)):
        row = scores[q].copy()
        row[data.test.exclude[q]] = -np.inf
        top = np.argsort(-row, kind="stable")[:k]
        relevant = set(data.test.relevant[q].tolist())
        for rank, i in enumerate(top, start=1):
            rows.append(
                (
                    user,
                    int(at),
                    rank,
                    data.items["item"].iat[i],
                    data.items["title"].iat[i],
                    float(row[i]),
                    int(i in relevant),
                )
            )
    return pd.DataFrame(
        rows, columns=["user", "query_time", "rank", "item", "title", "score", "liked_in_test"]
    )


@dataclass
class RankingRun:
    """A finished recommendation run: what `train` returns and `Recommendation.load` rebuilds."""

    folder: Path
    config: Config
    metrics: dict[str, Any]
    model: Any = None
    tokenizer: Any = None
    info: Any = None
    item_vectors: np.ndarray | None = None
    item_offsets: np.ndarray | float = 0.0  # the learned item prior, added to every score
    _serving: Any = None
    _reranker: Any = None

    def reranker(self) -> ServedReranker:
        """The run's re-ranker and its item features, read once per loaded run."""
        if self._reranker is None:
            tables = self.serving()
            folder = Path(self.folder) / RERANKER
            self._reranker = ServedReranker.load(folder, tables.log, tables.items)
        return self._reranker

    def serving(self) -> Serving:
        """The run's items, training-period log and histories, read once per loaded run."""
        if self._serving is None:
            from recipes.recommendation_split import Histories

            folder = Path(self.folder) / TABLES
            items = pd.read_parquet(folder / "items.parquet")
            log = pd.read_parquet(folder / "interactions.parquet")
            titles = dict(zip(items["item"], items["title"], strict=True))
            options = self.config.options
            past = Histories(log, titles, options.history_items, options.history_not_liked)
            self._serving = Serving(items, log, titles, past, set(log["user"]))
        return self._serving


@dataclass
class Serving:
    items: pd.DataFrame
    log: pd.DataFrame  # the training period only
    titles: dict[str, str]
    histories: Any  # recommendation_split.Histories over `log`
    users: set[str]


def train_ranking(config: Config, log: Any, show_progress: bool = True) -> RankingRun:
    """The run end to end (see the module docstring)."""
    from transformers import set_seed

    from finetune.modeling import models
    from finetune.runtime import environment, peak_memory_mb
    from finetune.training.checkpoint import open_checkpoints
    from finetune.training.loop import check_optimizer

    started = time.perf_counter()
    config = config.validate()
    device = models.pick_device()
    models.check_quantization(config.model.quant, device)
    check_optimizer(config.train.optim, device)
    folder = output_folder(config.output, config.recipe, config.overwrite)
    checkpoints = open_checkpoints(folder, config, device, main=True)
    set_seed(config.train.seed)
    data = ranking_data(log, config.options, config.train.seed)
    fitted = fit_ranker(data, config, device, show_progress, checkpoints)
    judged = judge(data, fitted, config)
    metrics = judged["metrics"] = metrics_json(data, fitted, judged, config)
    env = environment(device, config.train.seed)
    env.update(
        wall_seconds=round(time.perf_counter() - started, 2),
        peak_rss_mb=round(peak_memory_mb(), 1),
    )
    write_run(folder, config, data, fitted, judged, env)
    checkpoints.clear()  # the run folder is complete: nothing left to resume
    return RankingRun(folder, config, metrics, fitted.model, fitted.tokenizer, fitted.info)
