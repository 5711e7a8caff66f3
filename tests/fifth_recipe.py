"""A fifth vertical in a few lines: is this support ticket urgent? With its own tiny data.

It registers itself by entry point (`[project.entry-points."finetune.recipes"]`, here written
by tests/test_recipe_api.py), and `finetune ticket-urgency train` works: no edit in finetune/.
"""

from __future__ import annotations

from finetune.config import Config
from finetune.data.tables import Examples
from finetune.recipe import Recipe, Splits

URGENT = ("server is down", "cannot log in", "payment failed twice", "all our data is gone")
ROUTINE = ("please change my address", "a feature idea", "copy of my invoice", "thanks a lot")


def bundled(part: str, offset: int) -> Examples:
    rows = [(f"ticket {offset + i}: {URGENT[i % 4]}", "urgent") for i in range(8)]
    rows += [(f"ticket {offset + i}: {ROUTINE[i % 4]}", "routine") for i in range(8)]
    return Examples([t for t, _ in rows], [label for _, label in rows], f"tickets {part}")


class TicketUrgency(Recipe):
    name = "ticket-urgency"
    title = "Support ticket urgency"
    description = "Is this support ticket urgent? (two-class text classification)"
    defaults = {"data": {"positive_label": "urgent"}, "train": {"epochs": 1, "batch_size": 8}}
    baselines = ("tfidf_logreg",)

    def split(self, config: Config) -> Splits:
        if config.data.path is not None:
            return super().split(config)  # the user's file: the engine's split
        return self.complete_split(config, bundled("train", 0), bundled("test", 100))


recipe = TicketUrgency()
