"""How far any recommender can go on a recommendation split's new users: a ceiling, no training.

    python benchmarks/recommendation_ceiling.py                      # bundled MovieLens
    python benchmarks/recommendation_ceiling.py --interactions DIR   # a MovieLens folder
    python benchmarks/recommendation_ceiling.py --output ceiling.json    # figures as JSON

Uses the recipe's own split and queries (the defaults: global time split). A user with no
interaction before their query is new: nothing is excluded for them and nothing tells them
apart, so a method that ranks by what it knows of the user and the catalogue gives them all
one list (except through the query time, which the learned re-ranker reads). For them the
best such list is computed exactly from their own answers (`best_shared_list`): a ceiling,
not a method. With the new users at that ceiling, the script gives the NDCG@10 the returning
users would need for the whole evaluation to reach 1.1x the best baseline's, next to what the
baselines reach on them. It reads the test answers to draw the ceiling and decides nothing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

TARGET_RATIO = 1.1


def part_ceiling(rows: Any, queries: Any, items: Any, seed: int, k: int) -> dict[str, Any]:
    """New and returning users of one evaluated part, the baselines on each group and the
    ceiling for the new ones (`rows`: the history period)."""
    from finetune.evaluation.ranking import best_shared_list, full_catalogue
    from recipes.recommendation_ranking import baseline_scores

    new = np.array([len(seen) == 0 for seen in queries.exclude])
    scores = baseline_scores(rows, queries, items, seed)
    best = best_shared_list([queries.relevant[q] for q in np.flatnonzero(new)], len(items), k)
    scores["best list for the new users (from their answers)"] = np.tile(best, (len(new), 1))
    figures: dict[str, dict[str, float]] = {}
    for name, matrix in scores.items():
        per = full_catalogue(matrix, queries.relevant, queries.exclude, k)
        is_new = new[per.rows]
        figures[name] = {
            "all": float(per.ndcg.mean()),
            "new": float(per.ndcg[is_new].mean()),
            "returning": float(per.ndcg[~is_new].mean()) if (~is_new).any() else float("nan"),
        }
    n_new, n_returning = int(new.sum()), int((~new).sum())
    baselines = [name for name in figures if not name.startswith("best list")]
    leader = max(baselines, key=lambda name: figures[name]["all"])
    ceiling = figures["best list for the new users (from their answers)"]["new"]
    goal = TARGET_RATIO * figures[leader]["all"]
    needed = (goal * (n_new + n_returning) - ceiling * n_new) / max(n_returning, 1)
    return {
        "users": {"new": n_new, "returning": n_returning},
        "ndcg@10": figures,
        "best_baseline": leader,
        "goal_ndcg@10": goal,
        "new_user_ceiling": ceiling,
        "returning_needed_at_ceiling": needed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--interactions", help="a MovieLens folder (default: bundled)")
    parser.add_argument("--output", help="write the figures as JSON here")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    from recipes.recommendation import RecommendationOptions
    from recipes.recommendation_data import load_log
    from recipes.recommendation_ranking import ranking_data
    from recipes.recommendation_split import FIT, TEST, VALIDATION

    options = RecommendationOptions(interactions=args.interactions)
    data = ranking_data(load_log(options), options, args.seed)
    parts = {
        "validation": (data.split.rows(FIT), data.validation),
        TEST: (data.split.rows(FIT, VALIDATION), data.test),
    }
    out: dict[str, Any] = {"split": data.split.describe()}
    for part, (rows, queries) in parts.items():
        result = part_ceiling(rows, queries, data.items, args.seed, options.k)
        out[part] = result
        print(f"\n{part}: {result['users']['new']} new users, "
              f"{result['users']['returning']} returning")  # fmt: skip
        print(f"{'NDCG@10':52s} {'all':>6s} {'new':>6s} {'returning':>9s}")
        for name, fig in result["ndcg@10"].items():
            print(f"{name:52s} {fig['all']:6.3f} {fig['new']:6.3f} {fig['returning']:9.3f}")
        print(
            f"goal {TARGET_RATIO}x {result['best_baseline']}: {result['goal_ndcg@10']:.3f}; with "
            f"the new users at the ceiling ({result['new_user_ceiling']:.3f}) the returning users "
            f"need {result['returning_needed_at_ceiling']:.3f}"
        )
    if args.output:
        Path(args.output).write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
