"""The recommendation recipe's split by time, and the ranking queries built from it.

`split_log` marks every interaction with its part:

- `fit`: the rows the model and the baselines train on while the kept epoch is chosen;
- `validation`: the last slice of the training period, by time, that chooses it;
- `test`: everything at or after the cutoff. Never trained on, never in a history or a
  baseline; its figures are reported once.

`global` (the default) takes one cutoff time for every user, so nothing from the test period
can reach training through another user's rows; `user` holds out each user's latest share
instead (the classic per-user split; other users' later rows then do reach training).

`queries` turns the parts into what the ranking task reads: a history text per query (the
user's recent liked and not-liked items, most recent first, all strictly before the query),
and for evaluation the relevant items (liked in the evaluated part) and the excluded ones
(everything the user rated before it: a recommender does not re-recommend them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from finetune.errors import UserError
from recipes.recommendation_data import time_split

FIT, VALIDATION, TEST = "fit", "validation", "test"


@dataclass
class LogSplit:
    """Interactions with a `part` column (fit, validation, test) and how they were cut."""

    interactions: pd.DataFrame  # user, item, label, timestamp, part
    kind: str  # global or user
    cutoffs: dict[str, int] = field(default_factory=dict)  # global: first test/validation time

    def rows(self, *parts: str) -> pd.DataFrame:
        return self.interactions[self.interactions["part"].isin(parts)]

    def describe(self) -> str:
        counts = self.interactions["part"].value_counts()
        sizes = ", ".join(f"{counts.get(p, 0):,} {p}" for p in (FIT, VALIDATION, TEST))
        if self.kind == "global":
            when = {k: pd.Timestamp(v, unit="s").date() for k, v in self.cutoffs.items()}
            return (
                f"global time split: test from {when['test']}, validation from "
                f"{when['validation']} ({sizes} interactions)"
            )
        return f"per-user time split: each user's latest share is test ({sizes} interactions)"


def _cutoff(timestamps: pd.Series, fraction: float, what: str) -> int:
    """The time from which the latest `fraction` of `timestamps` lie (at or after it)."""
    cutoff = int(np.quantile(timestamps.to_numpy(), 1 - fraction, method="higher"))
    before = int((timestamps < cutoff).sum())
    if before == 0 or before == len(timestamps):
        raise UserError(
            f"The {what} cutoff leaves nothing on one side ({len(timestamps)} interactions, "
            "too few distinct times): use more data or --set options.split=user."
        )
    return cutoff


def split_log(interactions: pd.DataFrame, options: Any) -> LogSplit:
    """Mark each interaction fit, validation or test (options.split: global or user)."""
    frame = interactions.reset_index(drop=True).copy()
    if options.split == "global":
        test_from = _cutoff(frame["timestamp"], options.test_fraction, "test")
        train = frame["timestamp"] < test_from
        val_from = _cutoff(frame.loc[train, "timestamp"], options.val_fraction, "validation")
        frame["part"] = np.where(
            ~train, TEST, np.where(frame["timestamp"] < val_from, FIT, VALIDATION)
        )
        return LogSplit(frame, "global", {"test": test_from, "validation": val_from})
    is_test = time_split(frame, options.test_fraction, "train")
    part = np.full(len(frame), TEST, dtype=object)
    train = frame[~is_test]
    is_val = time_split(train, options.val_fraction, "train")
    part[np.flatnonzero(~is_test)] = np.where(is_val, VALIDATION, FIT)
    frame["part"] = part
    return LogSplit(frame, "user")


@dataclass
class Queries:
    """Ranking queries: one history text each; for evaluation, relevant and excluded items as
    catalogue positions; for training, the positive item of each."""

    users: list[str]
    texts: list[str]
    history: list[tuple[str, ...]]  # the items the text names (for the no-leak checks)
    history_times: list[np.ndarray]  # their timestamps
    times: np.ndarray  # the query's own time: its history is strictly before it
    positive: np.ndarray | None = None  # training: the liked item (catalogue position)
    relevant: list[np.ndarray] | None = None  # evaluation: liked items in the evaluated part
    exclude: list[np.ndarray] | None = None  # evaluation: items the user rated before it


def history_text(liked: list[str], not_liked: list[str]) -> str:
    """A user as the encoder reads them: recent likes first (truncation cuts the oldest)."""
    text = f"liked: {'; '.join(liked) or 'nothing yet'}"
    return text + (f" | not liked: {'; '.join(not_liked)}" if not_liked else "")


class Histories:
    """Each user's rated items in time order, to read the last N liked / not-liked before a
    time."""

    def __init__(self, pool: pd.DataFrame, titles: dict[str, str], k_liked: int, k_not: int):
        self.titles, self.k_liked, self.k_not = titles, k_liked, k_not
        ordered = pool.sort_values(["user", "timestamp"], kind="stable")
        self.by_user = {
            user: (rows["timestamp"].to_numpy(), rows["item"].to_numpy(), rows["label"].to_numpy())
            for user, rows in ordered.groupby("user", sort=False)
        }

    def before(self, user: str, time: int) -> tuple[str, tuple[str, ...], np.ndarray]:
        """(text, items named, their times) from the user's rows strictly before `time`."""
        times, items, labels = self.by_user.get(user, (np.empty(0, int), [], []))
        end = int(np.searchsorted(times, time, side="left"))
        liked: list[int] = []
        not_liked: list[int] = []
        for i in range(end - 1, -1, -1):
            if labels[i] == 1 and len(liked) < self.k_liked:
                liked.append(i)
            elif labels[i] == 0 and len(not_liked) < self.k_not:
                not_liked.append(i)
            if len(liked) >= self.k_liked and len(not_liked) >= self.k_not:
                break
        text = history_text(
            [self.titles[items[i]] for i in liked], [self.titles[items[i]] for i in not_liked]
        )
        named = liked + not_liked
        return text, tuple(items[i] for i in named), np.asarray(times[named], dtype=np.int64)

    def seen(self, user: str, time: int) -> np.ndarray:
        times, items, _ = self.by_user.get(user, (np.empty(0, int), np.empty(0, object), []))
        return np.asarray(items[: int(np.searchsorted(times, time, side="left"))])


def training_queries(
    rows: pd.DataFrame, items: pd.DataFrame, options: Any, max_queries: int, seed: int
) -> Queries:
    """One query per liked interaction of `rows` (a seeded sample of `max_queries` when there
    are more; 0: all), its history drawn from `rows` alone, strictly before it."""
    position = {item: k for k, item in enumerate(items["item"])}
    titles = dict(zip(items["item"], items["title"], strict=True))
    past = Histories(rows, titles, options.history_items, options.history_not_liked)
    likes = rows[rows["label"] == 1]
    if max_queries and len(likes) > max_queries:
        picked = np.sort(np.random.default_rng(seed).choice(len(likes), max_queries, False))
        likes = likes.iloc[picked]
    out = Queries([], [], [], [], likes["timestamp"].to_numpy(np.int64))
    for user, time in zip(likes["user"], likes["timestamp"], strict=True):
        text, named, named_times = past.before(user, time)
        out.users.append(user)
        out.texts.append(text)
        out.history.append(named)
        out.history_times.append(named_times)
    out.positive = likes["item"].map(position).to_numpy(np.int64)
    return out


def evaluation_queries(
    history_rows: pd.DataFrame, target_rows: pd.DataFrame, items: pd.DataFrame, options: Any
) -> Queries:
    """One query per user with a like in `target_rows`, as of the first of their target rows:
    the history and exclusions come from `history_rows` strictly before that time."""
    position = {item: k for k, item in enumerate(items["item"])}
    titles = dict(zip(items["item"], items["title"], strict=True))
    past = Histories(history_rows, titles, options.history_items, options.history_not_liked)
    liked = target_rows[target_rows["label"] == 1]
    users = sorted(liked["user"].unique(), key=str)
    start = target_rows.groupby("user")["timestamp"].min()
    out = Queries([], [], [], [], np.array([start[u] for u in users], dtype=np.int64))
    out.relevant, out.exclude = [], []
    by_user = liked.groupby("user")["item"]
    for user, time in zip(users, out.times, strict=True):
        text, named, named_times = past.before(user, time)
        out.users.append(user)
        out.texts.append(text)
        out.history.append(named)
        out.history_times.append(named_times)
        out.relevant.append(by_user.get_group(user).map(position).unique().astype(np.int64))
        seen = pd.Series(past.seen(user, time), dtype=object).map(position)
        out.exclude.append(seen.dropna().unique().astype(np.int64))
    return out
