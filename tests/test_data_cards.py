"""Every bundled dataset has a card, and the card agrees with the data it describes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from finetune.data import load_examples
from finetune.datacard import read_card

ROOT = Path(__file__).parent.parent


def test_bundled_customer_service_data_matches_its_card():
    card, _ = read_card(ROOT / "data_cards" / "shop_intents.md")
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
