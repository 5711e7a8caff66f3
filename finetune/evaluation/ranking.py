"""Ranking metrics over a whole catalogue: what a recommender (or any retriever) is used for.

Every method hands in one score matrix (queries x items: higher ranks first) and is judged the
same way:

- **Full catalogue** (`full_catalogue`): each query's relevant items are ranked against every
  item except its `exclude`d ones (a user's training items), giving Recall@k (hits / relevant
  items), NDCG@k (binary gains, ideal DCG over min(relevant, k) items) and MRR (1 / rank of the
  first relevant item, over the whole list). Queries without a relevant item are left out.
- **Sampled** (`sampled_protocol`): the classic leave-one-out protocol, one held-out item per
  query against `n` sampled negatives, HR@k and NDCG@k, to compare with published figures.
- **Intervals** (`bootstrap`, `paired_ratio`): 95% percentile bootstrap intervals over queries,
  and the interval of one method's mean over another's with the same queries resampled.

Ties are broken by a fixed seeded order of the items, never by item position (which would
favour whatever the catalogue lists first). Recipe-agnostic: nothing here knows about users.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Resamples for the bootstrap intervals: the interval ends move by under 0.002 between seeds.
BOOTSTRAP_SAMPLES = 1000


@dataclass
class PerQuery:
    """Each evaluated query's figures (rows of the score matrix in `rows`)."""

    rows: np.ndarray
    recall: np.ndarray
    ndcg: np.ndarray
    reciprocal_rank: np.ndarray


def tie_breaker(n_items: int, seed: int = 0) -> np.ndarray:
    """A seeded tiny offset per item (below any real score gap) that breaks ties reproducibly."""
    return np.random.default_rng(seed).permutation(n_items).astype(np.float64) / (4 * n_items)


def _ranks(row: np.ndarray, order_key: np.ndarray, relevant: np.ndarray) -> np.ndarray:
    """0-based rank of each relevant item in `row` (excluded items hold -inf)."""
    scores = row[relevant]
    keys = order_key[relevant]
    higher = (row[None, :] > scores[:, None]).sum(1)
    tied = (row[None, :] == scores[:, None]) & (order_key[None, :] > keys[:, None])
    return higher + tied.sum(1)


def full_catalogue(
    scores: np.ndarray,
    relevant: list[np.ndarray],
    exclude: list[np.ndarray],
    k: int = 10,
    seed: int = 0,
) -> PerQuery:
    """Recall@k, NDCG@k and reciprocal rank for every query (row) with a relevant item.

    `relevant[q]` and `exclude[q]` are item positions (columns); an excluded item is never a
    candidate, so a relevant item that is also excluded does not count."""
    order_key = tie_breaker(scores.shape[1], seed)
    discounts = 1 / np.log2(np.arange(2, k + 2))
    rows, recall, ndcg, rr = [], [], [], []
    for q, (rel, out) in enumerate(zip(relevant, exclude, strict=True)):
        rel = np.setdiff1d(np.asarray(rel, dtype=np.int64), np.asarray(out, dtype=np.int64))
        if len(rel) == 0:
            continue
        row = scores[q].astype(np.float64, copy=True)
        row[np.asarray(out, dtype=np.int64)] = -np.inf
        ranks = _ranks(row, order_key, rel)
        hits = ranks[ranks < k]
        rows.append(q)
        recall.append(len(hits) / len(rel))
        ndcg.append(discounts[hits].sum() / discounts[: min(len(rel), k)].sum())
        rr.append(1 / (ranks.min() + 1))
    return PerQuery(np.array(rows, dtype=np.int64), *(np.array(v) for v in (recall, ndcg, rr)))


def best_shared_list(relevant: list[np.ndarray], n_items: int, k: int = 10) -> np.ndarray:
    """Item scores whose order is the one list, shared by every query, with the highest mean
    NDCG@k over `relevant` (queries with nothing excluded). Each query adds 1 / its ideal DCG
    to each of its relevant items: mean NDCG@k is then the sum over the top k places of the
    place's discount times its item's weight, which the items in order of weight maximise.
    A diagnostic ceiling: built from the answers, it bounds what any method that gives these
    queries one and the same list can reach; it never chooses anything."""
    discounts = 1 / np.log2(np.arange(2, k + 2))
    weights = np.zeros(n_items)
    for rel in relevant:
        rel = np.unique(np.asarray(rel, dtype=np.int64))
        if len(rel):
            weights[rel] += 1 / discounts[: min(len(rel), k)].sum()
    return weights


def sample_negatives(
    n_items: int, positive: np.ndarray, seen: list[np.ndarray], n: int = 99, seed: int = 0
) -> np.ndarray:
    """For each query, `n` distinct items drawn uniformly from those it never interacted with
    (`seen[q]`, which should hold its positive too): the classic protocol's candidates."""
    rng = np.random.default_rng(seed)
    out = np.empty((len(positive), n), dtype=np.int64)
    for q, (pos, items) in enumerate(zip(positive, seen, strict=True)):
        banned = np.union1d(np.asarray(items, dtype=np.int64), [pos])
        pool = np.setdiff1d(np.arange(n_items), banned)
        if len(pool) < n:
            raise ValueError(f"query {q}: only {len(pool)} unseen items, {n} negatives asked")
        out[q] = rng.choice(pool, n, replace=False)
    return out


def sampled_protocol(
    scores: np.ndarray, positive: np.ndarray, negatives: np.ndarray, k: int = 10, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Per query: hit@k and NDCG@k of its one positive among its sampled negatives."""
    order_key = tie_breaker(scores.shape[1], seed)
    rows = np.arange(len(positive))
    pos_score = scores[rows, positive][:, None]
    neg_score = scores[rows[:, None], negatives]
    pos_key, neg_key = order_key[positive][:, None], order_key[negatives]
    rank = (neg_score > pos_score).sum(1) + ((neg_score == pos_score) & (neg_key > pos_key)).sum(1)
    hit = (rank < k).astype(float)
    return hit, np.where(rank < k, 1 / np.log2(rank + 2), 0.0)


def bootstrap(values: np.ndarray, seed: int = 0, samples: int = BOOTSTRAP_SAMPLES) -> dict:
    """Mean and 95% percentile bootstrap interval of `values` (one per query)."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return {"mean": None, "low": None, "high": None, "n": 0}
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), (samples, len(values)))].mean(1)
    low, high = np.percentile(means, [2.5, 97.5])
    return {"mean": float(values.mean()), "low": float(low), "high": float(high), "n": len(values)}


def paired_ratio(
    first: np.ndarray, second: np.ndarray, seed: int = 0, samples: int = BOOTSTRAP_SAMPLES
) -> dict:
    """mean(first) / mean(second) over the same queries, with a paired 95% bootstrap interval
    (the same resampled queries for both: their shared difficulty cancels)."""
    first, second = np.asarray(first, dtype=float), np.asarray(second, dtype=float)
    if len(first) == 0 or second.mean() == 0:
        return {"ratio": None, "low": None, "high": None}
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(first), (samples, len(first)))
    top, bottom = first[picks].mean(1), second[picks].mean(1)
    ratios = top[bottom > 0] / bottom[bottom > 0]
    low, high = np.percentile(ratios, [2.5, 97.5])
    return {"ratio": float(first.mean() / second.mean()), "low": float(low), "high": float(high)}


@dataclass
class Protocol:
    """What every method is judged on: per query (row), its relevant items, the items it may
    not be recommended, the relevant items that are cold (no training interaction), and the
    sampled protocol's held-out item and negatives for the rows `sampled_rows`."""

    relevant: list[np.ndarray]
    exclude: list[np.ndarray]
    cold: list[np.ndarray]
    sampled_rows: np.ndarray
    positive: np.ndarray
    negatives: np.ndarray
    k: int = 10


# metrics.json's names for a method's ranking figures.
FIGURES = ("recall@10", "ndcg@10", "mrr", "cold_recall@10", "hr@10_sampled", "ndcg@10_sampled")


def figure_names(k: int) -> tuple[str, ...]:
    return tuple(name.replace("10", str(k)) for name in FIGURES)


def method_figures(scores: np.ndarray, protocol: Protocol, seed: int = 0) -> dict:
    """One method's figures: `{name: mean}`, `intervals` `{name: [low, high]}`, `n` (queries
    counted per figure) and `per_query` (the arrays behind them, for paired comparisons)."""
    k = protocol.k
    full = full_catalogue(scores, protocol.relevant, protocol.exclude, k, seed)
    cold = full_catalogue(scores, protocol.cold, protocol.exclude, k, seed)
    hit, ndcg = sampled_protocol(
        scores[protocol.sampled_rows], protocol.positive, protocol.negatives, k, seed
    )
    arrays = dict(
        zip(
            figure_names(k),
            (full.recall, full.ndcg, full.reciprocal_rank, cold.recall, hit, ndcg),
            strict=True,
        )
    )
    out: dict = {"intervals": {}, "n": {}, "per_query": arrays}
    for name, values in arrays.items():
        summary = bootstrap(values, seed)
        out[name] = summary["mean"]
        out["intervals"][name] = [summary["low"], summary["high"]]
        out["n"][name] = summary["n"]
    return out


def validation_measure(relevant: list[np.ndarray], exclude: list[np.ndarray], k: int = 10):
    """What scores a ranking model's epoch on validation queries (the ranking task's
    `Validation.measure`): NDCG@k and Recall@k over the whole catalogue, and `val_loss`, the
    mean full-catalogue softmax loss of the relevant items (scores are logits)."""

    def measure(scores: np.ndarray) -> dict[str, float]:
        out = full_catalogue(scores, relevant, exclude, k)
        top = scores.max(1, keepdims=True)
        log_norm = (top + np.log(np.exp(scores - top).sum(1, keepdims=True)))[:, 0]
        losses = [
            np.mean(log_norm[q] - scores[q, rel]) for q, rel in enumerate(relevant) if len(rel)
        ]
        return {
            "val_loss": float(np.mean(losses)) if losses else 0.0,
            f"val_ndcg@{k}": float(out.ndcg.mean()) if len(out.ndcg) else 0.0,
            f"val_recall@{k}": float(out.recall.mean()) if len(out.recall) else 0.0,
        }

    return measure
