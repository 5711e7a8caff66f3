"""The recommendation baselines (item popularity, logistic matrix factorisation) and the
recommender metrics the engine does not have: per-user AUC (GAUC) and Recall/NDCG@k.

Both baselines score any (user, item) pair, so the ranking view can score sampled candidates
with them exactly as with the fine-tuned model. Items (and users) without training
interactions fall back to the global like-rate (for the factorisation: plus the user's bias).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score


@dataclass
class Popularity:
    """Each item's like-rate, shrunk towards the global rate by `prior` pseudo-interactions."""

    rates: dict[str, float]
    global_rate: float

    @classmethod
    def fit(cls, items: np.ndarray, labels: np.ndarray, prior: float = 5.0) -> Popularity:
        global_rate = float(labels.mean())
        unique, inverse = np.unique(items, return_inverse=True)
        likes = np.bincount(inverse, weights=labels)
        counts = np.bincount(inverse)
        rates = (likes + prior * global_rate) / (counts + prior)
        return cls(dict(zip(unique.tolist(), rates.tolist(), strict=True)), global_rate)

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return np.array([self.rates.get(item, self.global_rate) for item in items])


@dataclass
class LogisticMF:
    """P(like) = sigmoid(b + b_user + b_item + <p_user, q_item>), L2-regularised, fitted by
    full-batch Adam on the log-loss. Unknown users or items get zero bias and factors."""

    users: dict[str, int]
    items: dict[str, int]
    bias: float
    user_bias: np.ndarray
    item_bias: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray

    @classmethod
    def fit(
        cls,
        users: np.ndarray,
        items: np.ndarray,
        labels: np.ndarray,
        dim: int = 16,
        # Chosen on the validation split of the default data (docs/recipes/recommendation.md):
        # stronger penalties flatten the factors, weaker ones overfit the sparse log.
        l2: float = 0.1,
        bias_l2: float = 0.05,
        steps: int = 300,
        learning_rate: float = 0.05,
        seed: int = 0,
    ) -> LogisticMF:
        user_ids, u = np.unique(users, return_inverse=True)
        item_ids, i = np.unique(items, return_inverse=True)
        y = labels.astype(float)
        n = len(y)
        rng = np.random.default_rng(seed)
        rate = np.clip(y.mean(), 1e-3, 1 - 1e-3)
        params = {
            "b": np.array([np.log(rate / (1 - rate))]),
            "bu": np.zeros(len(user_ids)),
            "bi": np.zeros(len(item_ids)),
            "P": rng.normal(0, 0.1, (len(user_ids), dim)),
            "Q": rng.normal(0, 0.1, (len(item_ids), dim)),
        }
        moments = {k: (np.zeros_like(v), np.zeros_like(v)) for k, v in params.items()}
        for step in range(1, steps + 1):
            P, Q = params["P"], params["Q"]
            logit = params["b"][0] + params["bu"][u] + params["bi"][i] + (P[u] * Q[i]).sum(1)
            error = (1 / (1 + np.exp(-logit)) - y) / n  # d(mean log-loss)/d(logit)
            # The penalty is per interaction (l2 * |x|^2 for each row a parameter appears in),
            # so rarely seen users and items are pulled harder towards the global rate.
            grads = {
                "b": np.array([error.sum()]),
                "bu": np.bincount(u, error, len(user_ids))
                + bias_l2 * np.bincount(u, minlength=len(user_ids)) * params["bu"] / n,
                "bi": np.bincount(i, error, len(item_ids))
                + bias_l2 * np.bincount(i, minlength=len(item_ids)) * params["bi"] / n,
                "P": _scatter(u, error[:, None] * Q[i] + l2 * P[u] / n, P.shape),
                "Q": _scatter(i, error[:, None] * P[u] + l2 * Q[i] / n, Q.shape),
            }
            for key, grad in grads.items():
                m, v = moments[key]
                m[:] = 0.9 * m + 0.1 * grad
                v[:] = 0.999 * v + 0.001 * grad**2
                m_hat, v_hat = m / (1 - 0.9**step), v / (1 - 0.999**step)
                params[key] -= learning_rate * m_hat / (np.sqrt(v_hat) + 1e-8)
        return cls(
            users={user: k for k, user in enumerate(user_ids.tolist())},
            items={item: k for k, item in enumerate(item_ids.tolist())},
            bias=float(params["b"][0]),
            user_bias=params["bu"],
            item_bias=params["bi"],
            user_factors=params["P"],
            item_factors=params["Q"],
        )

    def score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        u = np.array([self.users.get(user, -1) for user in users])
        i = np.array([self.items.get(item, -1) for item in items])
        known_u, known_i = u >= 0, i >= 0
        logit = np.full(len(u), self.bias)
        logit[known_u] += self.user_bias[u[known_u]]
        logit[known_i] += self.item_bias[i[known_i]]
        both = known_u & known_i
        logit[both] += (self.user_factors[u[both]] * self.item_factors[i[both]]).sum(1)
        return 1 / (1 + np.exp(-logit))


def _scatter(index: np.ndarray, rows: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros(shape)
    np.add.at(out, index, rows)
    return out


def as_proba(p_like: np.ndarray) -> np.ndarray:
    """Two-column class probabilities (not like, like), the engine's format."""
    return np.column_stack([1 - p_like, p_like])


# ---------------------------------------------------------------------------------------------
# Metrics


def gauc(users: np.ndarray, y: np.ndarray, scores: np.ndarray) -> tuple[float | None, int]:
    """AUC within each user, averaged over users with both a like and a non-like (unweighted).

    Unlike the global AUC, it ignores how users differ in their overall like-rate: it asks
    whether the method orders each user's own items well. Returns (GAUC, users counted).
    """
    aucs = []
    for user in np.unique(users):
        mask = users == user
        if 0 < y[mask].sum() < mask.sum():
            aucs.append(roc_auc_score(y[mask], scores[mask]))
    return (float(np.mean(aucs)) if aucs else None), len(aucs)


def rank_of_first(scores: np.ndarray, rng: np.random.Generator) -> int:
    """0-based rank of candidate 0 (the held-out positive) among all; ties broken at random."""
    higher = int((scores[1:] > scores[0]).sum())
    ties = int((scores[1:] == scores[0]).sum())
    return higher + int(rng.integers(0, ties + 1))


def recall_ndcg_at_k(ranks: list[int], k: int) -> tuple[float, float]:
    """One relevant item per list: Recall@k is the hit rate, NDCG@k is 1/log2(rank + 2)."""
    ranks_array = np.asarray(ranks)
    hits = ranks_array < k
    ndcg = np.where(hits, 1 / np.log2(ranks_array + 2), 0.0)
    return float(hits.mean()), float(ndcg.mean())


# ---------------------------------------------------------------------------------------------
# Ranking baselines: each scores every catalogue item for each query user (higher first),
# fitted on one set of training rows (user, item, label). Collaborative ones add a popularity
# term a thousand times smaller than any real score gap, so users they know nothing about get
# the popular items rather than a random order (a stronger, not a weaker, baseline).

POPULARITY_TIEBREAK = 1e-6
RECENT_FRACTION = 0.1  # "recent" popularity: the latest 10% of the history rows


def like_matrix(rows: Any, users: list[str], position: dict[str, int], n_items: int) -> Any:
    """users x items, 1 where the user liked the item in `rows` (scipy CSR, float32)."""
    from scipy.sparse import csr_matrix

    index = {user: k for k, user in enumerate(users)}
    likes = rows[(rows["label"] == 1) & rows["user"].isin(index)]
    r = likes["user"].map(index).to_numpy()
    c = likes["item"].map(position).to_numpy()
    data = np.ones(len(r), dtype=np.float32)
    matrix = csr_matrix((data, (r, c)), shape=(len(users), n_items), dtype=np.float32)
    matrix.data[:] = 1  # repeated likes of one item count once
    return matrix


def recent_rows(rows: Any) -> Any:
    """The latest RECENT_FRACTION of `rows` (a log with a timestamp column) by time: what is
    popular now."""
    if not len(rows):
        return rows
    start = np.quantile(rows["timestamp"].to_numpy(), 1 - RECENT_FRACTION)
    return rows[rows["timestamp"] >= start]


@dataclass
class LikeLog:
    """What a ranking baseline is fitted on: the users x items like matrix of the history rows,
    the same over their latest RECENT_FRACTION (`recent_rows`), and the seed (ALS)."""

    likes: Any
    recent: Any
    seed: int = 0


def like_log(rows: Any, users: list[str], position: dict[str, int], seed: int = 0) -> LikeLog:
    """`rows`' likes as a LikeLog over the catalogue `position` maps (item -> column)."""
    n_items = len(position)
    recent = like_matrix(recent_rows(rows), users, position, n_items)
    return LikeLog(like_matrix(rows, users, position, n_items), recent, seed)


def most_popular(likes: Any, queries: Any) -> np.ndarray:
    """Every user gets the items with the most training likes."""
    counts = np.asarray(likes.sum(0)).ravel()
    return np.tile(counts, (queries.shape[0], 1)).astype(np.float32)


def recently_popular(log: LikeLog, queries: Any) -> np.ndarray:
    """Every user gets the items with the most likes over the latest share of the training
    rows (ties: all-time likes). Under a split by time most test users are new, and what is
    liked now is what they pick."""
    return most_popular(log.recent, queries) + POPULARITY_TIEBREAK * most_popular(
        log.likes, queries
    )


def item_knn(likes: Any, queries: Any) -> np.ndarray:
    """Item-item cosine similarity on the training like matrix; a user's score for an item is
    the summed similarity to the items they liked (`queries`: their like rows)."""
    norms = np.sqrt(np.asarray(likes.multiply(likes).sum(0)).ravel())
    normalised = likes.multiply(1 / np.maximum(norms, 1e-12)).tocsr()
    user_profiles = queries.multiply(1 / np.maximum(norms, 1e-12)).tocsr()
    scores = ((user_profiles @ normalised.T) @ normalised).toarray()
    return scores.astype(np.float32) + POPULARITY_TIEBREAK * most_popular(likes, queries)


ALS_REGULARIZATION = 0.05


def als_item_factors(likes: Any, seed: int = 0, factors: int = 64, iterations: int = 15) -> Any:
    """Implicit-feedback matrix factorisation (ALS, the `implicit` library, on CPU, one BLAS
    thread) fitted on the like matrix: the item factors (an item nobody liked gets zeros)."""
    import torch
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):
        model = AlternatingLeastSquares(
            factors=factors,
            regularization=ALS_REGULARIZATION,
            iterations=iterations,
            random_state=seed,
            num_threads=torch.get_num_threads(),
        )
        model.fit(likes.tocsr(), show_progress=False)
    return np.asarray(model.item_factors, dtype=np.float64)


def als_user_scores(item_factors: np.ndarray, queries: Any) -> np.ndarray:
    """Each query user's factors solved from their like rows against fixed item factors (what
    implicit's `recalculate_user` computes for 0/1 likes: (Y'Y + lambda I) x = Y' p), dot the
    item factors."""
    gram = item_factors.T @ item_factors + ALS_REGULARIZATION * np.eye(item_factors.shape[1])
    users = np.linalg.solve(gram, np.asarray(queries.tocsr() @ item_factors).T).T
    return (users @ item_factors.T).astype(np.float32)


def implicit_als(
    likes: Any, queries: Any, seed: int = 0, factors: int = 64, iterations: int = 15
) -> np.ndarray:
    """ALS (`als_item_factors`) fitted on the training likes, each query user's factors
    recomputed from their like rows (`als_user_scores`)."""
    scores = als_user_scores(als_item_factors(likes, seed, factors, iterations), queries)
    return scores + POPULARITY_TIEBREAK * most_popular(likes, queries)


# name -> scores (query users x items) from a LikeLog of the history rows and the query users'
# like rows (scipy CSR).
RANKING_BASELINES = {
    "most_popular": lambda log, queries: most_popular(log.likes, queries),
    "recently_popular": recently_popular,
    "item_knn": lambda log, queries: item_knn(log.likes, queries),
    "implicit_als": lambda log, queries: implicit_als(log.likes, queries, seed=log.seed),
}
