"""The recommendation run's re-ranker: its features read only the history period and the
models fitted on it (no test-period interaction enters), it ranks cold items by what it can
know about them, it is reproducible, and `recommend` serves the list the evaluation scored."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_recommendation import (
    log_files,  # noqa: F401
    options,
)
from test_recommendation_ranking import synthetic
from typer.testing import CliRunner

from finetune.cli import app
from finetune.evaluation.ranking import full_catalogue
from recipes.recommendation_data import Log, _movielens_options, item_table, standard_interactions
from recipes.recommendation_ranking import (
    FIT,
    TEST,
    VALIDATION,
    Fitted,
    baseline_scores,
    ranking_data,
    rerank_stage,
)
from recipes.recommendation_rerank import item_stats, release_years


def noise_fitted(data, seed: int = 0) -> Fitted:
    """Two-tower scores that carry no signal: whatever the re-ranker finds, the log gave it."""
    rng = np.random.default_rng(seed)
    val = rng.normal(size=(len(data.validation.users), len(data.items)))
    test = rng.normal(size=(len(data.test.users), len(data.items)))
    return Fitted(None, None, None, None, None, val, test, val, test, None)


@pytest.fixture
def few_trees(monkeypatch):
    """Fewer boosting rounds: what these tests check does not depend on how many."""
    import recipes.recommendation_rerank as rerank

    monkeypatch.setattr(rerank, "TREES", 20)


def perturb(data, parts: tuple[str, ...]) -> None:
    """Rewrite every interaction of `parts`: all liked, all of the last catalogue item."""
    frame = data.split.interactions
    mask = frame["part"].isin(parts)
    frame.loc[mask, "label"] = 1 - frame.loc[mask, "label"]
    frame.loc[mask, "item"] = data.items["item"].iloc[-1]


def test_features_never_read_the_test_period_and_validation_reads_only_the_fit_period(
    few_trees,
):
    log, opts = synthetic()
    data = ranking_data(log, opts, seed=0)
    fitted = noise_fitted(data)
    before = rerank_stage(data, fitted, seed=0)
    perturb(data, (TEST,))
    after = rerank_stage(data, fitted, seed=0)
    np.testing.assert_array_equal(before.val_scores, after.val_scores)
    np.testing.assert_array_equal(before.test_scores, after.test_scores)
    perturb(data, (VALIDATION,))  # validation features come from fit-period models only
    np.testing.assert_array_equal(before.val_scores, rerank_stage(data, fitted, 0).val_scores)
    perturb(data, (FIT,))  # the check can fail: the fit rows do reach the features
    assert not np.array_equal(before.val_scores, rerank_stage(data, fitted, 0).val_scores)


def test_item_stats_use_rows_strictly_before_the_query_time():
    items = item_table(pd.Series(["a", "b"]), pd.Series(["A (1999)", "B"]), [])
    rows = pd.DataFrame(
        {"user": ["u", "v", "w"], "item": ["a", "a", "b"], "label": [1, 1, 1],
         "timestamp": [10, 20, 20]}
    )  # fmt: skip
    stats = item_stats(rows, items, as_of=20)
    assert np.expm1(stats.log_likes).round().tolist() == [1, 0]  # the rows at time 20 are out
    assert stats.cold.tolist() == [False, True] and stats.first_seen[0] == 10
    assert np.isnan(release_years(items["title"])[1]) and stats.release_year[0] == 1999


def releases_log():
    """Each year 6 users arrive and like 3 of that year's 6 new films (and rate 4 of 40 old
    ones at random): a film is liked right after release, so the latest ones are cold at test
    time and only their release year (in the title) says they are the answer."""
    rng = np.random.default_rng(0)
    years = range(2000, 2012)
    old = [(f"o{j}", f"Old film {j} (1990)") for j in range(40)]
    new = [(f"n{y}_{j}", f"New film {y}-{j} ({y})") for y in years for j in range(6)]
    items = pd.DataFrame(old + new, columns=["item", "title"])
    rows = []
    for y in years:
        for u in range(6):
            user, start = f"u{y}_{u}", int(pd.Timestamp(f"{y}-01-01").timestamp())
            start += int(rng.integers(0, 300 * 86400))
            picks = [(f"o{j}", int(rng.integers(1, 6))) for j in rng.choice(40, 4, False)]
            picks += [(f"n{y}_{j}", 5) for j in rng.choice(6, 3, False)]
            for n, (item, rating) in enumerate(picks):
                rows.append((user, item, rating, start + 3600 * n))
    raw = pd.DataFrame(rows, columns=["user", "item", "rating", "timestamp"])
    interactions = standard_interactions(raw, _movielens_options(4.0), "releases", True)
    return Log(interactions, item_table(items["item"], items["title"], []), "releases")


def test_the_reranker_ranks_cold_items_that_recency_points_to():
    data = ranking_data(releases_log(), options(max_train_queries=0), seed=0)
    reranked = rerank_stage(data, noise_fitted(data), seed=0)
    protocol = data.protocol
    assert sum(len(c) for c in protocol.cold) > 0  # the test period does like cold items

    def cold_recall(scores):
        return full_catalogue(scores, protocol.cold, protocol.exclude, 10).recall.mean()

    collaborative = baseline_scores(data.split.rows(FIT, VALIDATION), data.test, data.items, 0)
    assert cold_recall(collaborative["implicit_als"]) == 0.0
    assert cold_recall(reranked.test_scores) >= 0.5


def test_same_seed_same_reranker_scores(few_trees):
    log, opts = synthetic()
    data = ranking_data(log, opts, seed=0)
    fitted = noise_fitted(data)
    first, second = rerank_stage(data, fitted, seed=3), rerank_stage(data, fitted, seed=3)
    np.testing.assert_array_equal(first.val_scores, second.val_scores)
    np.testing.assert_array_equal(first.test_scores, second.test_scores)


@pytest.fixture(scope="module")
def reranked_run(tiny_model_dir, log_files, tmp_path_factory):  # noqa: F811
    """A tiny run that delivers the fine-tuned model whatever validation says (fp32, so the
    evaluation's batched scores and `recommend`'s single query agree to float precision)."""
    interactions, items = log_files
    output = tmp_path_factory.mktemp("reranked-run") / "run"
    args = ["recommendation", "train", "--interactions", str(interactions), "--items", str(items)]
    args += ["--model", str(tiny_model_dir), "--epochs", "1", "--output", str(output)]
    args += ["--set", "model.lora_r=4", "--set", "options.negatives=8"]
    args += ["--set", "model.lora_layers=1", "--set", "eval.deliver=finetuned"]
    args += ["--set", "train.precision=fp32"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return output


def test_recommend_serves_the_reranked_list_the_evaluation_scored(reranked_run):
    from recipes.recommendation import recipe

    metrics = json.loads((reranked_run / "metrics.json").read_text())
    assert metrics["delivered"]["method"] == "two_tower_reranked"
    predictions = pd.read_csv(reranked_run / "predictions.csv", dtype={"user": str, "item": str})
    run = recipe.load(reranked_run)  # reloaded from the folder alone
    assert (reranked_run / "reranker" / "reranker.joblib").is_file()
    known = set(run.serving().users)  # users with a training-period history
    listed = [(u, rows) for u, rows in predictions.groupby("user") if u in known]
    assert listed
    for user, rows in listed[:3]:
        at = int(rows["query_time"].iloc[0])
        served = recipe.recommend(run, user, k=len(rows), at=at)
        assert served["item"].tolist() == rows.sort_values("rank")["item"].tolist()
        np.testing.assert_allclose(served["score"], rows.sort_values("rank")["score"], atol=1e-4)


def test_each_fitting_user_weighs_as_one_user_whatever_their_number_of_likes():
    from recipes.recommendation_rerank import training_pairs

    features = np.zeros((3, 50, 1), dtype=np.float32)
    relevant = [np.arange(20), np.array([3]), np.array([], dtype=np.int64)]
    exclude = [np.array([], dtype=np.int64), np.array([4]), np.array([], dtype=np.int64)]
    rows, labels, weights = training_pairs(features, relevant, exclude, seed=0)
    user = rows // 50
    liked = labels == 1
    assert sorted(set(user.tolist())) == [0, 1]  # a user with no liked item is not fitted on
    per_user = np.bincount(user[liked], weights=weights[liked])
    assert per_user[0] == pytest.approx(per_user[1])  # 20 likes weigh as much as 1
    assert weights[liked].sum() == pytest.approx(liked.sum())  # as many as unweighted
    assert (weights[~liked] == 1).all() and not np.isin(rows[user == 1] % 50, [4]).any()
