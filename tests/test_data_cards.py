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


def test_bundled_digits_match_their_card(tmp_path, monkeypatch):
    from PIL import Image

    from recipes.image_classification import recipe

    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path))  # written once per cache folder
    card = read_card(ROOT / "data_cards" / "mnist_5k.md")
    for key in ("name", "source", "license", "citation", "task", "classes", "size", "split"):
        assert card.get(key), key
    train, test = recipe.bundled(recipe.config())
    assert (len(train), len(test)) == (card["size"]["train"], card["size"]["test"])
    assert len(train) + len(test) == card["size"]["all"]
    for split, share in (
        (train, 1 - card["split"]["test_share"]),
        (test, card["split"]["test_share"]),
    ):
        assert sorted(set(split.labels)) == card["classes"]
        assert set(Counter(split.labels).values()) == {round(card["size"]["per_class"] * share)}
    assert not set(train.texts) & set(test.texts), "an image is in both splits"
    with Image.open(test.texts[0]) as image:
        assert image.size == (card["images"]["width"], card["images"]["height"])
        assert image.mode == card["images"]["mode"].split()[0]
    assert Path(test.texts[0]).parent.name == test.labels[0]  # <digit>/<index>.png
