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


def test_bundled_smollm2_classifies_from_its_last_token(small_csvs, tmp_path):
    """The one test on the real SmolLM2-135M. Cost: about 30 s on 2 idle cores (2 min when
    they are busy), including about 20 s the first time, when the bundled GGUF is converted
    into the cache folder (~/.cache/finetune-kit or $FINETUNE_CACHE) and kept for later runs."""
    import json

    config = recipe.config(
        data={"path": str(small_csvs[0]), "eval_path": str(small_csvs[1]), "max_length": 32},
        model={"name": "smollm2-135m"},
        train={"max_steps": 2, "batch_size": 8},
        output=str(tmp_path / "run"),
    )
    run = recipe.train(config, show_progress=False)
    info = json.loads((run.folder / "adapter" / "classifier.json").read_text())
    assert info["pooling"] == "last" and info["backbone"] == "smollm2-135m"
    assert run.tokenizer.pad_token is not None
    # Pretrained last-token states separate the three intents well above chance (1/3).
    assert run.metrics["baselines"]["embedding_logreg"]["accuracy"] > 0.8
    texts = ["I never got my package", "please give me my money back"]
    reloaded = recipe.load(run.folder)
    np.testing.assert_allclose(reloaded.predict_proba(texts), run.predict_proba(texts), atol=1e-5)
