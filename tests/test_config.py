from pathlib import Path

import pytest

from finetune.config import Config, merge, parse_set_options, resolve, save_yaml
from finetune.errors import UserError


def test_precedence_engine_recipe_yaml_flags(tmp_path: Path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("train:\n  seed: 7\n  epochs: 2\nmodel:\n  lora_r: 4\n")
    config = resolve(
        "demo", {"train": {"epochs": 9, "batch_size": 8}}, yaml_file, {"train": {"seed": 3}}
    )
    assert config.train.seed == 3  # flag beats YAML
    assert config.train.epochs == 2.0  # YAML beats recipe default
    assert config.train.batch_size == 8  # recipe default beats engine default
    assert config.model.lora_r == 4
    assert config.train.learning_rate == Config().train.learning_rate  # engine default


def test_saved_yaml_round_trips(tmp_path: Path):
    config = resolve("demo", {}, None, {"data": {"path": "x.csv"}, "model": {"quant": "8bit"}})
    save_yaml(config, tmp_path / "config.yaml")
    again = resolve("demo", {}, tmp_path / "config.yaml")
    assert again == config


def test_unknown_key_suggests_the_right_one(tmp_path: Path):
    yaml_file = tmp_path / "c.yaml"
    yaml_file.write_text("train:\n  learning_rte: 0.1\n")
    with pytest.raises(UserError, match=r"unknown option 'train.learning_rte'.*learning_rate"):
        resolve("demo", {}, yaml_file)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model": {"quant": "3bit"}}, "model.quant must be one of none, 8bit, 4bit"),
        ({"train": {"epochs": 0}}, "train.epochs must be positive"),
        ({"train": {"epochs": -1}}, "train.epochs must be positive"),
        ({"train": {"seed": "abc"}}, "train.seed must be int"),
        ({"train": {"batch_size": 2.5}}, "train.batch_size must be int"),
    ],
)
def test_bad_values_are_named(overrides, message):
    with pytest.raises(UserError, match=message):
        resolve("demo", {}, None, overrides)


def test_set_options_parse_and_coerce():
    updates = parse_set_options(
        [
            "train.learning_rate=5e-4",
            "model.target_modules=query,value",
            "data.redact_pii=false",
            "train.max_steps=null",
        ]
    )
    config = merge(Config(), updates, source="--set")
    assert config.train.learning_rate == 5e-4
    assert config.model.target_modules == ["query", "value"]
    assert config.data.redact_pii is False
    assert config.train.max_steps is None
    with pytest.raises(UserError, match="KEY=VALUE"):
        parse_set_options(["oops"])


def test_yaml_errors_name_the_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(UserError, match="bad.yaml is not valid YAML: line 2, column 1: ") as error:
        resolve("demo", {}, bad)
    assert "\n" not in str(error.value)
    with pytest.raises(UserError, match="Config file not found"):
        resolve("demo", {}, tmp_path / "missing.yaml")
