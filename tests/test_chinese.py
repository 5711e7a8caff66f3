"""Chinese customer messages end to end: tokenization, baselines, redaction and the report.

A new user's Chinese CSV (text and label columns, Chinese labels), trained with no flags
beyond --model (and a test's --max-steps and --output), on the tiny random BERT.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from finetune.evaluation.baselines import BaselineInputs, cjk_share, tfidf_logreg

INTENTS_ZH = {
    "退款": ["我要退款", "请把钱退给我", "退款什么时候到账", "申请退款被拒绝了", "钱还没退回来"],
    "物流": ["快递到哪了", "包裹一直没到", "物流信息不更新", "快递员把包裹弄丢了", "什么时候发货"],
    "账号": ["登录不了", "密码忘记了", "账号被锁定了", "收不到验证码", "怎么修改手机号"],
}


def chinese_rows(n_per_class: int, seed: int) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for label, phrases in INTENTS_ZH.items():
        for i in range(n_per_class):
            tail = rng.choice(["", "，谢谢", "！！", "，急", "。麻烦尽快"])
            rows.append({"text": f"{rng.choice(phrases)}{tail}{i}", "label": label})
    rng.shuffle(rows)
    return rows


def test_mostly_cjk_text_gets_character_ngrams_and_english_keeps_words():
    zh = [r["text"] for r in chinese_rows(5, 0)]
    assert cjk_share(zh) > 0.9 and cjk_share(["where is my parcel"]) == 0.0
    rows = chinese_rows(12, 1)
    labels = sorted(INTENTS_ZH)
    inputs = BaselineInputs(
        train_texts=[r["text"] for r in rows],
        train_labels=np.array([labels.index(r["label"]) for r in rows]),
        eval_texts=["退款什么时候能到", "快递丢了", "密码不对登录不了"],
        n_classes=3,
        seed=0,
    )
    proba = tfidf_logreg(inputs)
    assert inputs.fitted["tfidf_analyzer"].startswith("character 1-3 grams")
    # Unseen sentences share characters, not space-split "words", with the training texts.
    assert [labels[i] for i in proba.argmax(1)] == ["退款", "物流", "账号"]
    english = BaselineInputs(["refund me", "where parcel"], np.array([0, 1]), ["refund"], 2, 0)
    tfidf_logreg(english)
    assert english.fitted["tfidf_analyzer"] == "word 1-2 grams"


def test_an_english_vocabulary_on_chinese_text_is_reported(tiny_model_dir):
    from finetune.modeling.inputs import TextInputs
    from finetune.modeling.models import load_tokenizer

    inputs = TextInputs(load_tokenizer(str(tiny_model_dir)), max_length=32)  # MiniLM's vocab
    ids = inputs.encode([r["text"] for r in chinese_rows(4, 3)])
    unknown = inputs.tokenizer.unk_token_id
    assert sum(i.count(unknown) for i in ids) / sum(map(len, ids)) > 0.3
    assert any("unknown to this model's vocabulary" in n for n in inputs.notes(ids))
    english = inputs.encode(["where is my parcel", "refund me now"])
    assert inputs.notes(english) == []


@pytest.fixture(scope="module")
def chinese_run(tiny_model_dir, tmp_path_factory):
    from finetune.cli import make_app

    folder = tmp_path_factory.mktemp("zh")
    data = folder / "messages.csv"
    frame = pd.DataFrame(chinese_rows(16, 2))
    frame.loc[0, "text"] = "手机13812345678，" + frame.loc[0, "text"]  # redacted before training
    frame.to_csv(data, index=False)
    out = folder / "run"
    args = ["customer-service", "train", "--data", str(data), "--model", str(tiny_model_dir)]
    result = CliRunner().invoke(make_app(), [*args, "--max-steps", "3", "--output", str(out)])
    assert result.exit_code == 0, result.output
    return out


def test_a_chinese_csv_trains_and_reports_without_mojibake(chinese_run):
    report = (chinese_run / "report.md").read_text(encoding="utf-8")
    assert "TF-IDF baseline features: character 1-3 grams" in report
    for label in INTENTS_ZH:
        assert f"| {label} |" in report  # the per-class table, in Chinese
    assert "\ufffd" not in report and "Ã" not in report
    assert "1 phone numbers" in report
    assert "unknown to this model's vocabulary" in report  # MiniLM's vocab has few Han characters
    metrics = json.loads((chinese_run / "metrics.json").read_text(encoding="utf-8"))
    assert set(metrics["per_class"]) == set(INTENTS_ZH)
    # The character baseline separates these intents; a space-split one could not.
    assert metrics["baselines"]["tfidf_logreg"]["accuracy"] > 0.9


def test_plots_draw_chinese_labels_or_number_them_with_a_key(chinese_run):
    from finetune.reporting.report import plot_labels

    report = (chinese_run / "report.md").read_text(encoding="utf-8")
    shown, settings = plot_labels(sorted(INTENTS_ZH))
    if shown == sorted(INTENTS_ZH):  # a CJK font is installed: the plots use it
        assert settings["font.sans-serif"]
    else:  # none: the confusion matrix says #1..#3 and the report says which is which
        assert shown == ["#1", "#2", "#3"]
        for number, label in zip(shown, sorted(INTENTS_ZH), strict=True):
            assert f"| {number} | {label} |" in report
    assert (chinese_run / "plots" / "confusion_matrix.png").stat().st_size > 0


def test_bundled_chinese_reviews_load_as_a_customer_service_dataset():
    from finetune.errors import UserError
    from recipes.customer_service import recipe

    config = recipe.config(options={"dataset": "chinese_reviews"})
    split = recipe.split(config)
    assert (len(split.train), len(split.evaluation)) == (13888, 3473)
    assert set(split.train.labels) == {"positive", "negative"}
    assert not set(split.train.texts) & set(split.evaluation.texts)
    assert recipe.card(config)["positive_class"] == "negative"
    assert cjk_share(list(split.train.texts)) > 0.9
    assert len(recipe.split(recipe.config()).train) == 700  # shop_intents stays the default
    with pytest.raises(UserError, match="not bundled"):
        recipe.split(recipe.config(options={"dataset": "nope"}))
