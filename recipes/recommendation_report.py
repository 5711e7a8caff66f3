"""The recommendation section of the run report: GAUC, the cold-start slice and the ranking view,
for the fine-tuned model and the baselines, computed from the engine's evaluation context."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from finetune.evaluation.metrics import MODEL_NAME, classification_metrics, headline
from finetune.recipe import EvalContext
from recipes.recommendation_data import example_text, load_log
from recipes.recommendation_models import gauc, rank_of_first, recall_ndcg_at_k


def _fmt(value: Any) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(row) + " |" for row in rows],
    ]


def recommender_report(context: EvalContext) -> tuple[dict[str, Any], list[str]]:
    options = context.config.options
    train, test = context.train.features, context.evaluation.features
    y = context.y_eval
    p_like = {name: proba[:, 1] for name, proba in context.scores.items()}

    users = test["user"].to_numpy()
    per_user = {name: gauc(users, y, p) for name, p in p_like.items()}

    counts = train["item"].value_counts()
    train_count = test["item"].map(counts).fillna(0).to_numpy()
    cold = train_count < options.cold_start_max
    cold_metrics = {}
    if cold.any() and 0 < y[cold].sum() < cold.sum():
        for name, proba in context.scores.items():
            cold_metrics[name] = headline(
                classification_metrics(y[cold], proba[cold], context.labels)
            )

    ranking = ranking_view(context)

    data = {
        "users": int(pd.concat([train["user"], test["user"]]).nunique()),
        "items_with_interactions": int(pd.concat([train["item"], test["item"]]).nunique()),
        "train_interactions": len(train),
        "test_interactions": len(test),
        "test_like_rate": float(y.mean()),
        "evaluated_on": options.evaluate_on,
    }
    extra = {
        "data": data,
        "gauc": {name: value for name, (value, _) in per_user.items()},
        "gauc_users": per_user[MODEL_NAME][1],
        "cold_start": {
            "max_train_interactions": options.cold_start_max,
            "n": int(cold.sum()),
            "likes": int(y[cold].sum()),
            "methods": cold_metrics,
        },
        "ranking": ranking,
    }

    k = options.ranking_k
    names = list(context.scores)
    rows = [
        [
            name,
            _fmt(headline_auc(context, name)),
            _fmt(per_user[name][0]),
            _fmt(cold_metrics.get(name, {}).get("auc")),
            _fmt(ranking["methods"].get(name, {}).get(f"recall_at_{k}")),
            _fmt(ranking["methods"].get(name, {}).get(f"ndcg_at_{k}")),
        ]
        for name in names
    ]
    notes = list(train.attrs.get("notes", []))
    lines = [
        "## Recommendation view",
        "",
        f"Data: {data['users']} users, {data['items_with_interactions']} items with interactions, "
        f"{data['train_interactions']} training and {data['test_interactions']} "
        f"{options.evaluate_on} interactions (like-rate {data['test_like_rate']:.3f}). Split by "
        f"time: each user's latest {options.test_fraction:.0%} of interactions are "
        f"{options.evaluate_on} rows. A history holds only the user's training-period "
        "interactions strictly earlier than the row.",
        *[f"- {note}" for note in notes],
        "",
        *_table(
            [
                "method",
                "AUC (all pairs)",
                f"GAUC ({extra['gauc_users']} users)",
                f"cold-start AUC ({int(cold.sum())} rows)",
                f"Recall@{k}",
                f"NDCG@{k}",
            ],
            rows,
        ),
        "",
        "- GAUC: AUC within each user (users with both a like and a non-like among their test "
        "rows), averaged over users without weights: it ignores differences in users' overall "
        "like-rates.",
        f"- Cold-start slice: test rows whose item has fewer than {options.cold_start_max} "
        f"training interactions ({int(cold.sum())} rows, {int(y[cold].sum())} likes). The "
        "baselines fall back to the global like-rate there (matrix factorisation: plus the "
        "user's bias).",
        f"- Ranking: {ranking['protocol']}",
        "",
    ]
    if cold_metrics:
        lines += [
            "Cold-start slice, all four headline figures:",
            "",
            *_table(
                ["method", "accuracy", "recall", "F1", "AUC"],
                [
                    [name, *[_fmt(m[key]) for key in ("accuracy", "recall", "f1", "auc")]]
                    for name, m in cold_metrics.items()
                ],
            ),
            "",
        ]
    return extra, lines


def headline_auc(context: EvalContext, name: str) -> float | None:
    figures = classification_metrics(context.y_eval, context.scores[name], context.labels)
    return figures["auc"]


def ranking_view(context: EvalContext) -> dict[str, Any]:
    """Recall@k and NDCG@k: each sampled test user's first held-out like against sampled items
    the user never interacted with, scored by the model and the baselines that can rank."""
    options = context.config.options
    train, test = context.train.features, context.evaluation.features
    rng = np.random.default_rng(options.sample_seed)
    log = pd.concat([train, test])
    pool = np.array(sorted(log["item"].unique()))
    seen = log.groupby("user")["item"].agg(set)
    firsts = test[test["label"] == 1].sort_values(["user", "timestamp"], kind="stable")
    firsts = firsts.groupby("user", sort=True).head(1).reset_index(drop=True)
    n_neg = options.ranking_negatives
    protocol = (
        f"for each of up to {options.ranking_users} test users (seeded draw among users with a "
        f"held-out like), their earliest held-out like is ranked against {n_neg} items drawn "
        "uniformly from the items with any interaction in this run that the user never "
        "interacted with; scores use the history at the like's time. Sampled metrics favour "
        "popular items (the candidates are mostly long-tail), so compare methods, not absolute "
        "values, and only with the same protocol."
    )
    if len(firsts) > options.ranking_users:
        chosen = rng.choice(len(firsts), options.ranking_users, replace=False)
        firsts = firsts.iloc[np.sort(chosen)].reset_index(drop=True)
    items = load_log(options).items
    text = dict(zip(items["item"], items["text"], strict=True))
    title = dict(zip(items["item"], items["title"], strict=True))
    lists: list[np.ndarray] = []
    for row in firsts.itertuples():
        unseen = pool[~np.isin(pool, list(seen[row.user]))]
        negatives = rng.choice(unseen, min(n_neg, len(unseen)), replace=False)
        lists.append(np.concatenate([[row.item], negatives]))
    if not lists:
        return {"protocol": protocol, "users": 0, "methods": {}}

    texts, users, candidates = [], [], []
    for row, candidate_items in zip(firsts.itertuples(), lists, strict=True):
        liked = [title[i] for i in row.liked]
        not_liked = [title[i] for i in row.not_liked]
        texts += [
            example_text(text[item], row.summary, liked, not_liked) for item in candidate_items
        ]
        users += [row.user] * len(candidate_items)
        candidates += list(candidate_items)
    scores = {MODEL_NAME: context.predict_proba(texts)[:, 1]}
    for name, model in context.fitted.items():
        if hasattr(model, "score"):
            scores[name] = model.score(np.array(users), np.array(candidates))

    methods = {}
    k = options.ranking_k
    for name, flat in scores.items():
        tie_rng = np.random.default_rng(options.sample_seed)
        ranks, start = [], 0
        for candidate_items in lists:
            ranks.append(rank_of_first(flat[start : start + len(candidate_items)], tie_rng))
            start += len(candidate_items)
        recall, ndcg = recall_ndcg_at_k(ranks, k)
        methods[name] = {f"recall_at_{k}": recall, f"ndcg_at_{k}": ndcg}
    return {"protocol": protocol, "users": len(lists), "negatives": n_neg, "methods": methods}
