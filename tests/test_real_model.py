"""A short run on the bundled, pretrained MiniLM: loads offline, trains, reloads identically."""

from __future__ import annotations

import numpy as np

from recipes.customer_service import recipe


def test_bundled_minilm_trains_and_reloads_identically(small_csvs, tmp_path):
    config = recipe.config(
        data={"path": str(small_csvs[0]), "eval_path": str(small_csvs[1])},
        train={"max_steps": 4, "batch_size": 16},
        output=str(tmp_path / "run"),
    )
    assert config.model.name == "minilm"
    run = recipe.train(config, show_progress=False)
    # Pretrained sentence embeddings separate these three intents; a random encoder would not.
    assert run.metrics["baselines"]["embedding_logreg"]["accuracy"] > 0.9
    assert run.metrics["accuracy"] > 0.9
    texts = ["I never got my package", "please give me my money back", "cannot sign in"]
    reloaded = recipe.load(run.folder)
    np.testing.assert_allclose(reloaded.predict_proba(texts), run.predict_proba(texts), atol=1e-6)
    assert reloaded.predict(texts) == ["delivery", "refund", "login"]
