"""The recipes the toolkit knows by name: one place the CLI, the data cards and export read.

A name maps to the module that holds the recipe (an instance of `finetune.recipe.Recipe`
called `recipe`). Modules are imported only when a recipe is asked for, so reading the names
stays cheap and the engine's layers never import the recipes, nor the CLI, to find one.
"""

from __future__ import annotations

import importlib
from typing import Any

# Recipe modules by sub-command; each exposes `recipe`, an instance of finetune.recipe.Recipe.
RECIPES = {
    "customer-service": "recipes.customer_service",
    "medical-risk": "recipes.medical_risk",
    "image-classification": "recipes.image_classification",
    "recommendation": "recipes.recommendation",
}


def load_recipe(name: str) -> Any:
    """The recipe registered under `name` (a KeyError for a name not in RECIPES)."""
    return importlib.import_module(RECIPES[name]).recipe
