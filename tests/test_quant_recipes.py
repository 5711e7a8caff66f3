"""QLoRA is one flag for every text recipe: each trains with --quant 4bit on its bundled data
(a tiny random BERT stands in for the backbone so this stays fast) and reloads."""

from __future__ import annotations

import numpy as np
import pytest
from run_checks import check_reported_figures

from finetune.registry import BUILT_IN, load_recipe

# Text classification recipes; the recommendation recipe's ranking run has its own QLoRA test
# (tests/test_recommendation_ranking.py).
TEXT_RECIPES = sorted(
    name for name in BUILT_IN if load_recipe(name).inputs == "text" and name != "recommendation"
)


@pytest.mark.parametrize("name", TEXT_RECIPES)
def test_text_recipe_trains_4bit_and_reloads(name, tiny_model_dir, tmp_path):
    recipe = load_recipe(name)
    config = recipe.config(
        quick=True,
        model={"name": str(tiny_model_dir), "quant": "4bit", "lora_r": 4},
        train={"max_steps": 2},
        output=str(tmp_path / "run"),
    )
    run = recipe.train(config, show_progress=False)
    check_reported_figures(run.folder)
    assert "quantization 4bit" in (run.folder / "report.md").read_text()
    texts = ["a first example text", "another, longer example text for the model"]
    if run.config.model.side_features:  # the model reads table columns beside the text
        texts = recipe.split(run.config).evaluation.subset([0, 1], "two evaluation rows")
    again = recipe.load(run.folder)
    # The quantized fine-tuned model reloads as trained (whatever the run delivers).
    assert np.allclose(run.model_proba(texts), again.model_proba(texts), atol=1e-5)
