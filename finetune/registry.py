"""Which recipes exist: the `finetune.recipes` entry points of the installed packages.

One place the CLI, the data cards and export read. A package registers a recipe in its
pyproject.toml,

    [project.entry-points."finetune.recipes"]
    my-vertical = "my_package.my_module:recipe"

and `finetune my-vertical train` works with no edit in `finetune/`. Finding the names reads
package metadata only; a recipe's module is imported when the recipe is loaded, so the engine's
layers never import the recipes, nor the CLI, to find one (this module sits at the bottom).
"""

from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any

from finetune.errors import UserError

GROUP = "finetune.recipes"
# The recipes this package ships (also registered in pyproject.toml): used when its installed
# metadata predates the entry points (a source checkout not reinstalled since).
BUILT_IN = {
    "customer-service": "recipes.customer_service:recipe",
    "medical-risk": "recipes.medical_risk:recipe",
    "image-classification": "recipes.image_classification:recipe",
    "recommendation": "recipes.recommendation:recipe",
}
DISTRIBUTION = "finetune-kit"


def recipe_entries() -> dict[str, str]:
    """Command name -> "module:attribute" of every registered recipe."""
    found = metadata.entry_points(group=GROUP)
    entries = {point.name: point.value for point in found}
    if any(_distribution(point) == DISTRIBUTION for point in found):
        return entries
    return {**BUILT_IN, **entries}


def _distribution(point: metadata.EntryPoint) -> str | None:
    name = getattr(point.dist, "name", None)  # None for an entry point made by hand
    return None if name is None else name.replace("_", "-").lower()


def load_recipe(name: str) -> Any:
    """The recipe object registered as `name` (a finetune.recipe.Recipe; typed Any because
    this bottom layer cannot import the recipe API)."""
    entries = recipe_entries()
    if name not in entries:
        raise UserError(f"No recipe named {name!r}; registered: {', '.join(entries)}.")
    return load_entry(entries[name])


def load_entry(value: str) -> Any:
    """The object an entry point's "module:attribute" names."""
    module, _, attribute = value.partition(":")
    loaded: Any = importlib.import_module(module)
    for part in filter(None, attribute.split(".")):
        loaded = getattr(loaded, part)
    return loaded
