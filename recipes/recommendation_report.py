"""The recommendation run's report.md: the ranking table first (every method, 95% intervals),
the comparison with the best baseline, the like/not-like view second, then how it was run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from finetune.markdown import figure, table

NAMES = {
    "two_tower_reranked": "two-tower (LoRA) + re-ranker",
    "two_tower": "two-tower, fine-tuned (LoRA), alone",
    "frozen_two_tower": "two-tower, frozen encoder (no fine-tuning; same item prior)",
    "most_popular": "most popular (training likes)",
    "recently_popular": "recently popular (likes in the latest 10% of training rows)",
    "item_knn": "item-kNN (cosine)",
    "implicit_als": "matrix factorisation (implicit ALS)",
}


def _with_interval(figures: dict, name: str) -> str:
    low, high = figures["intervals"].get(name, [None, None])
    if figures.get(name) is None:
        return "n/a"
    return f"{figures[name]:.3f} [{figure(low)}, {figure(high)}]"


def ranking_table(ranking: dict[str, Any], k: int, delivered: str | None = None) -> str:
    """Every method once (`model` is the delivered one's second name), the delivered marked."""
    columns = [f"recall@{k}", f"ndcg@{k}", "mrr", f"cold_recall@{k}"]
    sampled = [f"hr@{k}_sampled", f"ndcg@{k}_sampled"]
    rows = [
        [NAMES.get(name, name) + (" **(delivered)**" if name == delivered else "")]
        + [_with_interval(figures, c) for c in columns]
        + [figure(figures[c]) for c in sampled]
        for name, figures in ranking.items()
        if name != "model"
    ]
    header = ["method", f"Recall@{k}", f"NDCG@{k}", "MRR", f"cold Recall@{k}"]
    return table(header + [f"HR@{k} (99 sampled)", f"NDCG@{k} (99 sampled)"], rows)


def delivered_key(metrics: dict[str, Any]) -> str:
    """The key in `ranking` of the method a run serves (`two_tower`: the fine-tuned ranker)."""
    delivered = metrics.get("delivered") or {}
    return delivered.get("method", "two_tower") if isinstance(delivered, dict) else delivered


def delivered_line(val: dict[str, float], delivered: str, k: int) -> str:
    """Which method the run serves and why (`val`: each method's validation NDCG@k), said
    first."""
    name = NAMES.get(delivered, delivered)
    model = "two_tower_reranked" if "two_tower_reranked" in val else "two_tower"
    if delivered == model:
        return (
            f"Delivered: the fine-tuned model, {name} (validation NDCG@{k} "
            f"{val[delivered]:.3f}, cross-fitted by user; no method leads it there by more "
            "than the margin)."
        )
    return (
        f"Delivered: **{name}**, not the fine-tuned model: its validation NDCG@{k} "
        f"{val[delivered]:.3f} beats the {NAMES.get(model)}'s {val[model]:.3f}, so `recommend` "
        "serves it."
    )


def comparison_lines(metrics: dict[str, Any], k: int) -> list[str]:
    comparison = metrics["ranking_comparison"]
    ratio = comparison["ndcg_ratio"]
    best = NAMES.get(comparison["best_baseline"], comparison["best_baseline"])
    lines = []
    if ratio["ratio"] is not None:
        inside = ratio["low"] <= 1.0 <= ratio["high"]
        lines.append(
            f"- NDCG@{k}: the two-tower + re-ranker over the best baseline on test ({best}): "
            f"**{ratio['ratio']:.2f}x** (paired 95% interval {ratio['low']:.2f}-"
            f"{ratio['high']:.2f}"
            + ("; 1.0 is inside it: the lead is within noise)" if inside else ")")
        )
    cold_model, cold_base = comparison["cold_recall_model"], comparison["cold_recall_baseline"]
    lines.append(
        f"- Cold items (no training interaction): Recall@{k} {figure(cold_model)} for the "
        f"two-tower + re-ranker (the two-tower alone "
        f"{figure(comparison.get('cold_recall_two_tower'))}) against {figure(cold_base)} for "
        "the best collaborative baseline "
        f"({NAMES.get(comparison['best_collaborative_cold'])}); collaborative methods cannot "
        "score an item nobody interacted with."
    )
    val = comparison["validation_ndcg"]
    lines.append(
        f"- Validation NDCG@{k} (what chose the kept epoch and the delivered method): "
        + ", ".join(f"{NAMES.get(n, n)} {v:.3f}" for n, v in val.items())
        + "."
    )
    return lines


def diagnosis_lines(where: dict[str, Any] | None) -> str:
    """Where the test likes fall (warm or cold items) and where each method ranks them."""
    if not where:
        return ""
    ranks = "; ".join(
        f"{NAMES.get(n, n)}: cold {figure(r['cold'])}, warm {figure(r['warm'])}"
        for n, r in where["median_rank_of_liked"].items()
    )
    years = where["cold_year_minus_cutoff_p10_p50_p90"]
    span = f"{years[0]:+.1f} / {years[1]:+.1f} / {years[2]:+.1f}" if years else "n/a"
    return (
        f"Where the test likes fall: {where['cold_likes']} of {where['test_likes']} are of items "
        f"nobody interacted with in training ({where['users_with_cold_like']} users have one); "
        f"their release year minus the cutoff (10th / 50th / 90th percentile, "
        f"{where['cold_with_year']} with a year in the title): {span} years. Median rank of a "
        f"liked test item over the catalogue: {ranks}." + user_group_line(where.get("user_groups"))
    )


def user_group_line(groups: dict[str, Any] | None) -> str:
    """NDCG per method for test users new to the log and for returning ones."""
    if not groups:
        return ""
    key = next(k for k in groups if k.startswith("ndcg@"))
    per = "; ".join(
        f"{NAMES.get(n, n)}: {figure(g['without'])} / {figure(g['with'])}"
        for n, g in groups[key].items()
    )
    return (
        f" Test users with no like before the test period: {groups['users_without_earlier_likes']}"
        f", with earlier likes: {groups['users_with_earlier_likes']}; {key.upper()} for each "
        f"group (new / returning): {per}."
    )


def like_table(metrics: dict[str, Any]) -> str:
    from finetune.evaluation.metrics import finetuned_figures  # sklearn: not at `--help`

    delivered = delivered_key(metrics)

    def name(key: str) -> str:
        return NAMES.get(key, key) + (" (delivered)" if key == delivered else "")

    rows = [[name("two_tower_reranked")] + _likes(finetuned_figures(metrics))]
    rows += [[name(n)] + _likes(b) for n, b in metrics["baselines"].items()]
    return table(["method", "accuracy", "recall", "F1", "AUC", "GAUC"], rows)


def _likes(entry: dict[str, Any]) -> list[str]:
    return [figure(entry.get(k)) for k in ("accuracy", "recall", "f1", "auc", "gauc")]


def ranking_report(folder: Path, metrics: dict, result: Any, data: Any, env: dict) -> None:
    """Write report.md and plots/ndcg.png into the run folder being assembled."""
    k = int(metrics["primary_metric"].split("@")[1])
    _plot(folder / "plots" / "ndcg.png", metrics["ranking"], k)
    epochs = [
        [figure(r["epoch"]), figure(r.get("train_loss")), figure(r.get("val_loss")),
         figure(r.get(f"val_ndcg@{k}")), figure(r.get(f"val_recall@{k}"))]
        for r in result.history
    ]  # fmt: skip
    parts = [
        "# Recommendation: ranking report",
        f"Split: {metrics['split']}. {metrics['n_eval']} test users (every user with a liked "
        f"test item), {metrics['n_items']:,} items ranked for each (full catalogue, the user's "
        "training-period items excluded). Intervals: 95% bootstrap over users.",
        metrics["delivered"]["note"],
        "## Ranking (test)",
        "The two-tower + re-ranker: gradient-boosted trees over the two-tower's score, the "
        "item-kNN and ALS scores (0, with a flag, for items nobody interacted with), the "
        "item's popularity (whole period and latest 10%), its age at the query time and the "
        "user's number of likes; fitted on the validation period with features from the fit "
        "period's models, each user's liked items weighing as one user; its validation figure "
        "is cross-fitted over 5 folds of users.",
        ranking_table(metrics["ranking"], k, delivered_key(metrics)),
        "\n".join(comparison_lines(metrics, k)),
        diagnosis_lines(metrics.get("ranking_diagnosis")),
        "![NDCG](plots/ndcg.png)",
        "## Like / not like on rated test items (secondary view)",
        "Each method's score, calibrated on the validation period's rated items (logistic "
        "fit), on every test-period rating of the test users. GAUC: AUC within each user.",
        like_table(metrics),
        "## Training",
        f"{metrics['n_train']:,} training queries (liked interactions with their earlier "
        f"history), {metrics['n_val']} validation users; kept epoch {result.best_epoch} by "
        f"validation NDCG@{k} (epoch 0 is the frozen encoder). Train time "
        f"{metrics['train_seconds']:.0f} s, wall time {env['wall_seconds']:.0f} s, peak memory "
        f"{env['peak_rss_mb']:.0f} MB RSS, device {env.get('processor', '?')}.",
        table(["epoch", "train loss", "val loss", f"val NDCG@{k}", f"val Recall@{k}"], epochs),
    ]
    if data.notes:
        parts += ["## Notes", "\n".join(f"- {note}" for note in data.notes)]
    (folder / "report.md").write_text("\n\n".join(parts) + "\n", encoding="utf-8")


def _plot(path: Path, ranking: dict[str, Any], k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    names = [n for n in ranking if n != "model"]
    means = [ranking[n][f"ndcg@{k}"] for n in names]
    low = [m - ranking[n]["intervals"][f"ndcg@{k}"][0] for n, m in zip(names, means, strict=True)]
    high = [ranking[n]["intervals"][f"ndcg@{k}"][1] - m for n, m in zip(names, means, strict=True)]
    fig, axis = plt.subplots(figsize=(7, 3))
    axis.barh([NAMES.get(n, n) for n in names], means, xerr=[low, high], color="#4c72b0")
    axis.set_xlabel(f"NDCG@{k} (test, full catalogue, 95% interval)")
    axis.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
