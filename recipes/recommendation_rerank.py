"""The recommendation run's second stage: a learned re-ranker over the whole catalogue.

The two-tower ranker reads text, the collaborative baselines read the log; neither alone knows
when to trust which. The re-ranker scores every (user, item) pair from cheap features:

- the fine-tuned two-tower's score (raw and standardised within the user);
- the item-kNN and ALS scores, set to 0 for an item with no interaction before the query time,
  with a "no collaborative signal" flag (`cold`): warm items use what the log knows, cold items
  their text and their age;
- the item's log likes, log ratings and smoothed like-rate over the history rows, and its log
  likes over their latest 10% (what is popular now);
- the item's age at the query time: query year minus the release year parsed from the title
  ("Heat (1995)"; unknown where the title has none) and years since its first interaction
  (unknown for a cold item);
- the user's number of earlier likes (new users lean on popularity, long histories on taste).

`ItemStats` holds the per-item part, computed from history rows strictly before `as_of` only;
the per-pair part comes from score matrices of models fitted on those same rows. The run fits
the re-ranker (gradient-boosted trees, log-loss on the validation users' liked items, each
user's likes weighing as one user, against uniformly sampled negatives) on validation-period
queries with features from fit-period models; its validation figure is cross-fitted by user (5
folds), and for test the features come from the whole training period's models, exactly the
rows the baselines' test figures use.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from recipes.recommendation_models import recent_rows

YEAR_SECONDS = 365.25 * 24 * 3600
TITLE_YEAR = re.compile(r"\((\d{4})\)\s*$")
FEATURES = (
    "two_tower",
    "two_tower_z",
    "item_knn",
    "implicit_als",
    "cold",
    "log_likes",
    "log_recent_likes",
    "log_ratings",
    "like_rate",
    "age_years",
    "years_since_first_seen",
    "log_user_likes",
)
COLLABORATIVE = ("item_knn", "implicit_als")
FOLDS = 5
TREES = 100  # boosting iterations (learning rate 0.1)
UNKNOWN = -100.0  # an age (years) that is not known
NEGATIVES = 1000  # per validation user, drawn uniformly from the catalogue


def release_years(titles: pd.Series) -> np.ndarray:
    """The year at the end of a title ("Heat (1995)"); NaN where there is none."""
    found = titles.astype(str).str.extract(TITLE_YEAR, expand=False)
    years = pd.to_numeric(found, errors="coerce").to_numpy(np.float64, copy=True)
    years[(years < 1800) | (years > 2200)] = np.nan
    return years


@dataclass
class ItemStats:
    """Per catalogue item, from history rows strictly before `as_of`."""

    as_of: int
    log_likes: np.ndarray
    log_recent_likes: np.ndarray
    log_ratings: np.ndarray
    like_rate: np.ndarray
    first_seen: np.ndarray  # timestamp of the first interaction; NaN: none (cold)
    release_year: np.ndarray  # NaN: unknown

    @property
    def cold(self) -> np.ndarray:
        return self.log_ratings == 0

    def arrays(self) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self.__dict__.items()}


def item_stats(rows: pd.DataFrame, items: pd.DataFrame, as_of: int) -> ItemStats:
    """`rows` (user, item, label, timestamp) before `as_of`, summarised per item of `items`."""
    rows = rows[rows["timestamp"] < as_of]
    position = pd.Series(np.arange(len(items)), index=items["item"].to_numpy())
    n = len(items)

    def like_counts(part: pd.DataFrame) -> np.ndarray:
        where = part.loc[part["label"] == 1, "item"].map(position).to_numpy(np.int64)
        return np.bincount(where, minlength=n).astype(np.float64)

    where = rows["item"].map(position).to_numpy(np.int64)
    liked = rows["label"].to_numpy() == 1
    times = rows["timestamp"].to_numpy(np.int64)
    ratings = np.bincount(where, minlength=n).astype(np.float64)
    likes, recent = like_counts(rows), like_counts(recent_rows(rows))
    first = np.full(n, np.nan)
    if len(times):
        earliest = pd.Series(times).groupby(where).min()
        first[earliest.index.to_numpy()] = earliest.to_numpy(np.float64)
    rate = float(liked.mean()) if len(liked) else 0.5
    return ItemStats(
        as_of=int(as_of),
        log_likes=np.log1p(likes),
        log_recent_likes=np.log1p(recent),
        log_ratings=np.log1p(ratings),
        like_rate=(likes + 5 * rate) / (ratings + 5),  # shrunk towards the overall rate
        first_seen=first,
        release_year=release_years(items["title"]),
    )


def history_end(rows: pd.DataFrame, cutoff: int | None) -> int:
    """The time the history rows end: the global cutoff, else just after their last row."""
    return int(cutoff) if cutoff is not None else int(rows["timestamp"].max()) + 1


def pair_features(
    stats: ItemStats, scores: dict[str, np.ndarray], times: np.ndarray, user_likes: np.ndarray
) -> np.ndarray:
    """users x items x FEATURES (float32). `scores`: two_tower, item_knn and implicit_als
    matrices (users x items) from models fitted on the rows `stats` summarises; `times`: each
    user's query time; `user_likes`: their likes before it."""
    two_tower = np.asarray(scores["two_tower"], dtype=np.float64)
    mean = two_tower.mean(1, keepdims=True)
    spread = two_tower.std(1, keepdims=True) + 1e-9
    cold = np.broadcast_to(stats.cold, two_tower.shape)
    collaborative = {
        name: np.where(cold, 0.0, np.asarray(scores[name], dtype=np.float64))
        for name in COLLABORATIVE
    }
    top = collaborative["item_knn"].max(1, keepdims=True)
    collaborative["item_knn"] /= np.where(top > 0, top, 1.0)  # its scale grows with history
    query_year = 1970 + np.asarray(times, dtype=np.float64)[:, None] / YEAR_SECONDS
    since = (np.asarray(times, dtype=np.float64)[:, None] - stats.first_seen) / YEAR_SECONDS
    shape = two_tower.shape
    columns = [
        two_tower,
        (two_tower - mean) / spread,
        collaborative["item_knn"],
        collaborative["implicit_als"],
        cold.astype(np.float64),
        np.broadcast_to(stats.log_likes, shape),
        np.broadcast_to(stats.log_recent_likes, shape),
        np.broadcast_to(stats.log_ratings, shape),
        np.broadcast_to(stats.like_rate, shape),
        query_year - stats.release_year,
        since,
        np.broadcast_to(np.log1p(np.asarray(user_likes, dtype=np.float64))[:, None], shape),
    ]
    features = np.stack(columns, axis=-1).astype(np.float32)
    # Unknown age (no year in the title, no interaction yet): a value no real age takes, which
    # trees split off as its own case (sklearn's trees fail on a feature that is all NaN).
    return np.nan_to_num(features, nan=UNKNOWN)


def training_pairs(
    features: np.ndarray, relevant: list[np.ndarray], exclude: list[np.ndarray], seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flat row indices into users x items, label, weight) for fitting: each user's relevant
    items against items drawn uniformly from the catalogue. Uniform, not hard, negatives: the
    fitted log-odds then differ from the whole catalogue's by a constant, so the ranking it
    gives the whole catalogue is unbiased (hard negatives drawn from the popular items taught
    it that popularity predicts a miss). Each user's liked items share one user's weight, as
    NDCG averages over users: unweighted, the few users with hundreds of likes decide what
    every new user is shown."""
    rng = np.random.default_rng(seed)
    n_users, n_items, _ = features.shape
    rows, labels, weights = [], [], []
    for u in range(n_users):
        positives = np.setdiff1d(relevant[u], exclude[u])
        if not len(positives):
            continue
        drawn = rng.choice(n_items, min(NEGATIVES, n_items), replace=False)
        negatives = np.setdiff1d(drawn, np.concatenate([positives, exclude[u]]))
        rows.append(u * n_items + np.concatenate([positives, negatives]))
        labels.append(np.r_[np.ones(len(positives)), np.zeros(len(negatives))])
        weights.append(np.r_[np.full(len(positives), 1 / len(positives)), np.ones(len(negatives))])
    if not rows:
        return np.empty(0, np.int64), np.empty(0), np.empty(0)
    labels_, weights_ = np.concatenate(labels), np.concatenate(weights)
    positive = labels_ == 1
    weights_[positive] *= positive.sum() / weights_[positive].sum()  # as many as unweighted
    return np.concatenate(rows), labels_, weights_


@dataclass
class Reranker:
    """The fitted trees (None when the fitting users had no positive: the two-tower score)."""

    model: Any

    def scores(self, features: np.ndarray) -> np.ndarray:
        flat = features.reshape(-1, features.shape[-1])
        if self.model is None:
            return features[..., 0].astype(np.float64)
        return self.model.decision_function(flat).reshape(features.shape[:2])


def fit_reranker(
    features: np.ndarray, relevant: list[np.ndarray], exclude: list[np.ndarray], seed: int
) -> Reranker:
    """Gradient-boosted trees (log-loss) on `training_pairs`."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rows, labels, weights = training_pairs(features, relevant, exclude, seed)
    if len(set(labels.tolist())) < 2:
        return Reranker(None)
    model = HistGradientBoostingClassifier(
        learning_rate=0.1,
        max_iter=TREES,
        max_leaf_nodes=15,
        min_samples_leaf=20,
        l2_regularization=1.0,
        early_stopping=False,
        random_state=seed,
    )
    flat = features.reshape(-1, features.shape[-1])
    return Reranker(model.fit(flat[rows], labels, sample_weight=weights))


def cross_fitted_scores(
    features: np.ndarray, relevant: list[np.ndarray], exclude: list[np.ndarray], seed: int
) -> np.ndarray:
    """Each validation user's scores from a re-ranker fitted on the other folds of users (5
    folds, seeded): an out-of-sample validation figure for the delivery decision."""
    n_users = features.shape[0]
    folds = np.random.default_rng(seed).permutation(n_users) % min(FOLDS, max(n_users, 1))
    out = np.zeros(features.shape[:2])
    for fold in np.unique(folds):
        held = np.flatnonzero(folds == fold)
        kept = np.flatnonzero(folds != fold)
        if not len(kept):  # a single user: no other fold to learn from
            out[held] = features[held, :, 0]
            continue
        model = fit_reranker(
            features[kept], [relevant[u] for u in kept], [exclude[u] for u in kept], seed
        )
        out[held] = model.scores(features[held])
    return out
