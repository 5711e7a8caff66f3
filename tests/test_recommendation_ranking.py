"""The recommendation recipe's ranking run: the split by time and the no-leak rules checked on
every example, the baselines, and the run end to end on a tiny model (CLI, `recommend`)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_recommendation import log_files, options, synthetic_log  # noqa: F401
from typer.testing import CliRunner

from finetune.cli import app
from recipes.recommendation_data import Log, standard_interactions
from recipes.recommendation_models import RANKING_BASELINES, like_log
from recipes.recommendation_ranking import baseline_scores, ranking_data
from recipes.recommendation_report import NAMES
from recipes.recommendation_split import FIT, TEST, VALIDATION, split_log


def synthetic(split: str = "global", **changes):
    raw, items = synthetic_log(n_users=40, n_items=60, per_user=15)
    from recipes.recommendation_data import _movielens_options, item_table

    interactions = standard_interactions(raw, _movielens_options(4.0), "synthetic", True)
    log = Log(interactions, item_table(items["item"], items["title"], [items["genres"]]), "syn")
    return log, options(split=split, **changes)


@pytest.mark.parametrize("kind", ["global", "user"])
def test_every_example_sees_only_the_strict_past_and_never_the_test_period(kind):
    log, opts = synthetic(kind, max_train_queries=0)
    data = ranking_data(log, opts, seed=0)
    parts = data.split.interactions
    test = parts[parts["part"] == TEST]
    test_keys = set(zip(test["user"], test["item"], test["timestamp"], strict=True))
    fit = parts[parts["part"] == FIT]
    fit_keys = set(zip(fit["user"], fit["item"], fit["timestamp"], strict=True))
    if kind == "global":
        cutoff = data.split.cutoffs["test"]
        assert (test["timestamp"] >= cutoff).all() and (
            parts.loc[parts.part != TEST, "timestamp"] < cutoff
        ).all()
        assert (fit["timestamp"] < data.split.cutoffs["validation"]).all()
    # Training queries: each positive is a fit-row like; its history strictly earlier fit rows.
    q = data.train
    for user, time, named, times in zip(q.users, q.times, q.history, q.history_times, strict=True):
        assert (times < time).all()
        for item, t in zip(named, times, strict=True):
            assert (user, item, t) in fit_keys and (user, item, t) not in test_keys
    # Validation queries: history from fit rows only; test queries: from the training period.
    for queries, allowed in ((data.validation, fit_keys), (data.test, None)):
        for user, time, named, times in zip(
            queries.users, queries.times, queries.history, queries.history_times, strict=True
        ):
            assert (times < time).all()
            for item, t in zip(named, times, strict=True):
                assert (user, item, t) not in test_keys
                if allowed is not None:
                    assert (user, item, t) in allowed


def test_baselines_are_fitted_on_training_rows_only(monkeypatch):
    log, opts = synthetic()
    data = ranking_data(log, opts, seed=0)
    seen = []

    def spy(log, queries):
        seen.append((log.likes.sum(), log.recent.sum()))
        return np.zeros(queries.shape, dtype=np.float32)

    monkeypatch.setitem(RANKING_BASELINES, "most_popular", spy)
    training = data.split.rows(FIT, VALIDATION)
    baseline_scores(training, data.test, data.items, seed=0)
    # The matrices a baseline sees hold exactly the training period's likes (and the latest
    # tenth of its rows), no test like.
    liked = training["label"] == 1
    recent = training["timestamp"] >= training["timestamp"].quantile(0.9)
    assert seen == [(int(liked.sum()), int((liked & recent).sum()))]
    assert not (data.split.rows(TEST).index.isin(training.index)).any()


def test_split_marks_every_row_once_and_validation_precedes_test():
    log, opts = synthetic()
    split = split_log(log.interactions, opts)
    assert set(split.interactions["part"]) == {FIT, VALIDATION, TEST}
    val = split.rows(VALIDATION)["timestamp"]
    assert val.max() < split.rows(TEST)["timestamp"].min()
    assert "global time split" in split.describe()


def test_baselines_rank_by_taste_and_popularity():
    rows = pd.DataFrame(
        {"user": ["a", "a", "b", "b", "c"], "item": ["x", "y", "x", "z", "x"], "label": 1}
    )
    position = {"x": 0, "y": 1, "z": 2, "w": 3}
    rows["timestamp"] = [1, 2, 3, 4, 10]
    log = like_log(rows, ["a", "b", "c"], position)
    likes = log.likes
    assert RANKING_BASELINES["most_popular"](log, likes)[0].argmax() == 0
    knn = RANKING_BASELINES["item_knn"](log, likes)
    assert knn[0, 1] > knn[0, 3] and knn[1, 2] > knn[1, 3]  # co-liked beats never liked
    als = RANKING_BASELINES["implicit_als"](log, likes)
    assert als.shape == (3, 4) and np.isfinite(als).all()


def test_recently_popular_ranks_what_is_liked_now_first():
    # x: liked by three users early on; y and z: liked in the latest tenth of the rows (y by
    # more users overall); w: never liked.
    rows = pd.DataFrame(
        {"user": list("abcd") * 5, "item": ["x", "x", "x", "y"] * 4 + ["y", "y", "y", "z"],
         "label": 1, "timestamp": range(20)}
    )  # fmt: skip
    position = {"x": 0, "y": 1, "z": 2, "w": 3}
    log = like_log(rows, list("abcd"), position)
    scores = RANKING_BASELINES["recently_popular"](log, log.likes)[0]
    # Latest 2 rows (y at 18, z at 19): y and z tie on recent likes, y wins on all-time likes.
    assert list(np.argsort(-scores)) == [1, 2, 0, 3]


@pytest.fixture(scope="module")
def ranking_run(tiny_model_dir, log_files, tmp_path_factory):  # noqa: F811
    interactions, items = log_files
    output = tmp_path_factory.mktemp("ranking-run") / "run"
    args = ["recommendation", "train", "--interactions", str(interactions), "--items", str(items)]
    args += ["--model", str(tiny_model_dir), "--epochs", "2", "--output", str(output)]
    # LoRA on the top layer only: the lower layer's states are cached for every text.
    args += ["--set", "model.lora_r=4", "--set", "options.negatives=8"]
    args += ["--set", "model.lora_layers=1"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return output


def test_run_writes_ranking_metrics_report_and_the_kept_epoch(ranking_run):
    metrics = json.loads((ranking_run / "metrics.json").read_text())
    names = {"recall@10", "ndcg@10", "mrr", "cold_recall@10", "hr@10_sampled", "ndcg@10_sampled"}
    assert set(metrics["ranking"]) == {
        "model", "two_tower_reranked", "two_tower", "frozen_two_tower", "most_popular",
        "recently_popular", "item_knn", "implicit_als",
    }  # fmt: skip
    # The delivered method is the best on validation (the fine-tuned model, two-tower +
    # re-ranker, on ties), and `model` holds its figures.
    validation = metrics["ranking_comparison"]["validation_ndcg"]
    delivered = metrics["delivered"]["method"]
    lead = max(validation.values()) - validation["two_tower_reranked"]
    if delivered == "two_tower_reranked":  # no method leads it by more than the margin
        assert lead <= 0.005
    else:
        assert validation[delivered] == max(validation.values()) and lead > 0.005
    assert metrics["ranking"]["model"] == metrics["ranking"][delivered]
    # The engine's shape: the headline keys are the delivered method's, `finetuned` holds the
    # fine-tuned model's own, and the delivery note names what is served.
    own = (
        metrics["finetuned"]
        if delivered == "two_tower_reranked"
        else metrics["baselines"][delivered]
    )
    assert metrics["auc"] == own["auc"] and metrics["accuracy"] == own["accuracy"]
    assert metrics["ndcg@10"] == metrics["ranking"][delivered]["ndcg@10"]
    assert metrics["finetuned"]["ndcg@10"] == metrics["ranking"]["two_tower_reranked"]["ndcg@10"]
    assert NAMES[delivered] in metrics["delivered"]["note"]
    assert "two_tower_reranked" not in metrics["baselines"] and "two_tower" in metrics["baselines"]
    assert metrics["ranking_diagnosis"]["test_likes"] >= metrics["ranking_diagnosis"]["cold_likes"]
    groups = metrics["ranking_diagnosis"]["user_groups"]
    counted = groups["users_without_earlier_likes"] + groups["users_with_earlier_likes"]
    assert counted == metrics["ranking"]["model"]["n"]["ndcg@10"]  # every ranked user, once
    for figures in metrics["ranking"].values():
        assert names <= set(figures)
        low, high = figures["intervals"]["ndcg@10"]
        assert low <= figures["ndcg@10"] <= high
    for key in ("accuracy", "recall", "f1", "auc", "gauc"):
        assert key in metrics
    assert metrics["primary_metric"] == "ndcg@10"
    history = json.loads((ranking_run / "history.json").read_text())["epochs"]
    assert history[0]["epoch"] == 0 and "val_ndcg@10" in history[0]
    best = max(history, key=lambda r: r["val_ndcg@10"])
    assert metrics["best_epoch"] == best["epoch"]  # never worse on validation than epoch 0
    report = (ranking_run / "report.md").read_text()
    assert report.index("Delivered:") < report.index("## Ranking (test)")
    assert report.index("## Ranking (test)") < report.index("## Like / not like")
    saved = pd.read_parquet(ranking_run / "recommendation" / "interactions.parquet")
    # The saved log (what `recommend` reads) holds the training period only.
    assert saved["timestamp"].max() < metrics["split_cutoffs"]["test"]


def test_recommend_for_a_known_and_a_new_user(ranking_run):
    runner = CliRunner()
    known = runner.invoke(
        app, ["recommendation", "recommend", "--run", str(ranking_run), "--user", "u1", "--k", "5"]
    )
    assert known.exit_code == 0, known.output
    assert known.output.count("Film number") == 5 and "items scored in" in known.output
    new = runner.invoke(
        app, ["recommendation", "recommend", "--run", str(ranking_run), "--liked", "i0,i3"]
    )
    assert new.exit_code == 0, new.output
    assert "[i0]" not in new.output and "[i3]" not in new.output  # liked items are not re-listed
    wrong = runner.invoke(
        app, ["recommendation", "recommend", "--run", str(ranking_run), "--user", "nobody"]
    )
    assert wrong.exit_code != 0 and "--liked" in wrong.output


def test_recommend_serves_a_delivered_baseline(ranking_run, tmp_path):
    """When the run's validation preferred a baseline, `recommend` serves that baseline."""
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(ranking_run, copy)
    metrics = json.loads((copy / "metrics.json").read_text())
    metrics["delivered"] = {"name": "most_popular", "method": "most_popular"}
    (copy / "metrics.json").write_text(json.dumps(metrics))
    log = pd.read_parquet(copy / "recommendation" / "interactions.parquet")
    counts = log[log["label"] == 1]["item"].value_counts()
    result = CliRunner().invoke(
        app, ["recommendation", "recommend", "--run", str(copy), "--liked", "i0", "--k", "3"]
    )
    assert result.exit_code == 0, result.output
    listed = [line.rsplit("[", 1)[1].rstrip("]") for line in result.output.splitlines()[:3]]
    # The most liked items in the training period (ties in any order), i0 left out.
    assert [counts.get(i, 0) for i in listed] == counts.drop("i0").head(3).tolist()
    assert "most_popular" in result.output


def test_layer_cache_gives_the_whole_models_vectors_and_epoch_0_is_not_encoded_again(
    tiny_model_dir,
):
    from finetune.config import ModelConfig
    from finetune.modeling.ranking import Encoder, RankingTask, Scored, Validation, build_two_tower

    options = ModelConfig(name=str(tiny_model_dir), lora_r=4, lora_layers=1)
    model, tokenizer, _ = build_two_tower(options, 32, 16, False, "cpu", seed=0)
    assert model.first_trained_layer == 1
    encoder = Encoder(tokenizer, 8, "cpu", False)
    texts = [f"Film number {i} - Drama" for i in range(12)] + ["liked: a; b | not liked: c"]
    ids = encoder.tokens(texts, 32)
    whole = encoder.vectors(model, ids)
    (rows,) = encoder.cache(model, [ids])
    assert rows == list(range(len(ids)))
    np.testing.assert_allclose(encoder.vectors(model, rows), whole, atol=1e-4)
    items, queries = rows[:12], rows[12:]
    calls = []

    def measure(scores):
        calls.append(scores)
        return {"val_loss": 0.0, "val_ndcg@10": float(scores[0, 0])}

    task = RankingTask(encoder, queries, np.array([0]), items, Validation(queries, measure))
    frozen = Scored(np.zeros((12, whole.shape[1]), dtype=np.float32), np.full((1, 12), 7.0))
    task.start_from(model, frozen)
    task.figures(model, [])  # untouched weights: the frozen scores, nothing encoded
    assert calls[-1] is frozen.scores
    next(p for p in model.parameters() if p.requires_grad).data += 0.1
    task.figures(model, [])  # changed weights: the catalogue is encoded again
    assert calls[-1] is not frozen.scores and calls[-1][0, 0] != 7.0
    history = [{"epoch": 0, "val_ndcg@10": 7.0}, {"epoch": 1, "val_ndcg@10": 1.0}]
    assert task.kept(history, 1) is task.scored[1]
    assert task.kept(history[1:], 1) is None  # calls and history do not line up


def test_prior_weight_is_fitted_on_training_positives():
    from finetune.modeling.ranking import fit_prior_weight

    prior = np.log1p(np.array([100.0, 50.0, 1.0, 0.0, 0.0]))
    text = np.zeros((6, 5))
    # Positives that are the popular items: the prior helps, a large weight is chosen.
    assert fit_prior_weight(text, prior, np.zeros(6, dtype=int)) == 16.0
    assert 0.0 < fit_prior_weight(text, prior, np.array([0, 0, 0, 1, 0, 1])) < 16.0
    # Positives that nobody liked before: any weight on the prior hurts.
    assert fit_prior_weight(text, prior, np.array([3, 4, 3, 4, 3, 4])) == 0.0


def test_qlora_ranker_trains_and_reloads_as_trained(tiny_model_dir, log_files):  # noqa: F811
    """`--quant 4bit` reaches the ranking task's backbone, the saved run reloads it (its
    catalogue vectors again) and recommends with it (eval.deliver finetuned)."""
    from finetune.registry import load_recipe

    interactions, items = log_files
    recipe = load_recipe("recommendation")
    config = recipe.config(
        model={"name": str(tiny_model_dir), "quant": "4bit", "lora_r": 4, "lora_layers": 1},
        train={"epochs": 1},
        eval={"deliver": "finetuned"},
        options={"interactions": str(interactions), "items": str(items), "negatives": 8},
        output=str(tiny_model_dir.parent / "qlora-ranking-run"),
        overwrite=True,
    )
    run = recipe.train(config, show_progress=False)
    ranker = json.loads((run.folder / "adapter" / "ranker.json").read_text())
    assert ranker["quant"] == "4bit" and run.metrics["delivered"]["name"] == "model"
    again = recipe.load(run.folder)
    # The reloaded 4-bit ranker encodes the catalogue as the trained one did at its kept epoch.
    from finetune.modeling.ranking import Encoder

    encoder = Encoder(again.tokenizer, 16, "cpu", again.info.bf16)
    items = again.serving().items
    ids = encoder.tokens(list(items["text"]), again.config.options.item_max_length)
    error = np.abs(encoder.vectors(again.model, ids) - again.item_vectors).max()
    assert error < 5e-3  # 4-bit kernels round a little differently with another batch shape
    top = recipe.recommend(again, liked=["i0", "i3"], k=5)
    assert len(top) == 5 and not {"i0", "i3"} & set(top["item"])


def test_a_killed_ranking_run_resumes_where_it_stopped(
    tiny_model_dir,
    log_files,  # noqa: F811
    tmp_path,
    monkeypatch,
):
    """A checkpoint from the middle of a ranking run continues with the remaining steps only,
    to the same validation history and test figures as the run that was not interrupted."""
    import shutil

    import torch

    from finetune.registry import load_recipe
    from finetune.training.checkpoint import Checkpoints
    from finetune.training.loop import TrainingLoop

    interactions, items = log_files
    recipe = load_recipe("recommendation")

    def config(name, resume=False):
        return recipe.config(
            model={"name": str(tiny_model_dir), "lora_r": 4, "lora_layers": 1},
            train={"epochs": 2, "checkpoint_steps": 1},
            options={"interactions": str(interactions), "items": str(items), "negatives": 8},
            output=str(tmp_path / name),
            resume=resume,
        )

    kept, save = [], Checkpoints.save

    def save_and_keep(self, state):
        save(self, state)
        kept.append(tmp_path / f"state-{len(kept)}.pt")
        shutil.copy(self.path, kept[-1])

    with monkeypatch.context() as patch:
        patch.setattr(Checkpoints, "save", save_and_keep)
        straight = recipe.train(config("straight"), show_progress=False)
    assert len(kept) >= 2 and not (tmp_path / "straight.checkpoint").exists()
    placed = tmp_path / "resumed.checkpoint" / "state.pt"
    placed.parent.mkdir()
    shutil.copy(kept[0], placed)
    steps, step = [], TrainingLoop.step
    with monkeypatch.context() as patch:
        patch.setattr(TrainingLoop, "step", lambda self, *a: steps.append(1) or step(self, *a))
        resumed = recipe.train(config("resumed", resume=True), show_progress=False)
    done_before = torch.load(kept[0], weights_only=True)["step"]
    histories = [json.loads((r.folder / "history.json").read_text()) for r in (straight, resumed)]
    assert 0 < done_before and len(steps) == histories[0]["epochs"][-1]["step"] - done_before
    assert histories[0]["epochs"] == histories[1]["epochs"]
    assert resumed.metrics["ranking"] == straight.metrics["ranking"]
    assert not placed.exists()


def test_the_latency_benchmark_times_a_run_folder(ranking_run):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent.parent / "benchmarks" / "recommend_latency.py"
    printed = subprocess.run(
        [sys.executable, str(script), str(ranking_run), "--users", "3"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(printed)
    assert result["known user"]["n"] == 3 and result["new user (5 liked)"]["median_ms"] > 0


def test_ceiling_benchmark_bounds_every_baseline_on_new_users():
    import importlib.util
    from pathlib import Path

    script = Path(__file__).parent.parent / "benchmarks" / "recommendation_ceiling.py"
    spec = importlib.util.spec_from_file_location("recommendation_ceiling", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    log, opts = synthetic()
    data = ranking_data(log, opts, seed=0)
    result = module.part_ceiling(data.split.rows(FIT, VALIDATION), data.test, data.items, 0, 10)
    users, figures = result["users"], result["ndcg@10"]
    assert users["new"] + users["returning"] == len(data.test.users)
    assert users["new"] == sum(len(seen) == 0 for seen in data.test.exclude) > 0
    ceiling = result["new_user_ceiling"]
    for name in RANKING_BASELINES:  # each gives every new user one and the same list
        assert figures[name]["new"] <= ceiling + 1e-12
    # The returning users' need, with the new ones at the ceiling, gives the goal overall.
    total = users["new"] * ceiling + users["returning"] * result["returning_needed_at_ceiling"]
    assert total / len(data.test.users) == pytest.approx(result["goal_ndcg@10"])
