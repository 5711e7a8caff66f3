"""Time `recommend` per user on a finished recommendation run folder.

    python benchmarks/recommend_latency.py RUN_FOLDER            # 30 known users, 30 new ones
    python benchmarks/recommend_latency.py RUN_FOLDER --users 100

Loads the run once (as `finetune recommendation recommend` does), warms up with one call,
then times `recommend` for known users (their training-period history) and for new users
given five liked items each, over the whole catalogue, with the method the run delivers.
Prints the median and 90th percentile in milliseconds and the catalogue size.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a recommendation run folder")
    parser.add_argument("--users", type=int, default=30)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()

    from finetune.registry import load_recipe

    recipe = load_recipe("recommendation")
    run = recipe.load(args.run)
    log = run.serving().log
    rng = np.random.default_rng(0)
    users = sorted(log["user"].astype(str).unique())
    chosen = [users[i] for i in rng.choice(len(users), min(args.users, len(users)), replace=False)]
    liked = log[log["label"] == 1]["item"].astype(str).unique()
    recipe.recommend(run, user=chosen[0], k=args.k)  # warm-up: first-call allocations
    timings: dict[str, list[float]] = {"known user": [], "new user (5 liked)": []}
    for user in chosen:
        start = time.perf_counter()
        recipe.recommend(run, user=user, k=args.k)
        timings["known user"].append(1000 * (time.perf_counter() - start))
        given = list(rng.choice(liked, 5, replace=False))
        start = time.perf_counter()
        recipe.recommend(run, liked=given, k=args.k)
        timings["new user (5 liked)"].append(1000 * (time.perf_counter() - start))
    result = {
        "items": int(len(run.serving().items)),
        "delivered": run.metrics.get("delivered", {}).get("method"),
        **{
            name: {
                "median_ms": round(float(np.median(t)), 1),
                "p90_ms": round(float(np.percentile(t, 90)), 1),
                "n": len(t),
            }
            for name, t in timings.items()
        },
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
