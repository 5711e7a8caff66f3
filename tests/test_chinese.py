"""Chinese customer messages end to end: tokenization, baselines, redaction and the report.

A new user's Chinese CSV (text and label columns, Chinese labels), trained with no flags
beyond --model (and a test's --max-steps and --output), on the tiny random BERT.
"""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from finetune.evaluation.baselines import BaselineInputs, tfidf_logreg
from finetune.evaluation.text_metrics import cjk_share

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
    assert any("unknown to this model's vocabulary" in n for n in inputs.warnings(ids))
    assert inputs.notes(ids) == []  # said once: the run adds the warnings to its notes
    english = inputs.encode(["where is my parcel", "refund me now"])
    assert inputs.notes(english) == [] and inputs.warnings(english) == []


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
    said = result.output.find("% of the tokens are unknown to this model's vocabulary")
    assert -1 < said < result.output.index("epoch 1:")  # before training, not only in the report
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


# Chinese customer messages and the shop's replies, two intents (the reply task's input).
PAIRS_ZH = [
    ("我的快递到哪里了", "您好，请提供订单号，我们马上为您查询物流信息。", "物流"),
    ("订单什么时候发货", "您好，订单会在付款后两天内发货，请耐心等待。", "物流"),
    ("包裹三天了还没到", "很抱歉让您久等了，请提供订单号，我们为您催促快递。", "物流"),
    ("我忘记密码了怎么办", "您好，请在登录页面点击忘记密码，按照提示重置即可。", "账号"),
    ("怎么修改绑定的手机号", "您好，请在账户设置中修改绑定的手机号。", "账号"),
    ("我想注销我的账号", "您好，请在账户设置中申请注销，我们会在七天内处理。", "账号"),
]


def test_reply_overlap_counts_chinese_characters_and_keeps_english_as_rouge_score_does():
    from rouge_score import rouge_scorer

    from finetune.evaluation.text_metrics import rouge_l

    # rouge-score alone keeps a-z and 0-9 only: every Chinese reply would score 0.
    assert rouge_l(["您好，订单已发货。"], ["您好，订单已发货。"]) == pytest.approx(1.0)
    assert rouge_l(["请提供订单号"], ["账户设置"]) == 0.0
    # All 7 characters in order, of 8 (， is not a token): F = 2PR/(P+R) with P = 1, R = 7/8.
    assert rouge_l(["您好，订单已发货"], ["您好，订单已经发货"]) == pytest.approx(14 / 15)
    english = ["Your order #12 ships today, café!", "Call 1-800 now", "see {{Order Number}}"]
    references = ["The order ships today.", "call us now", "Your {{Order Number}} is ready"]
    default = rouge_scorer.RougeScorer(["rougeL"])
    pairs = zip(english, references, strict=True)
    expected = [default.score(r, g)["rougeL"].fmeasure for g, r in pairs]
    assert rouge_l(english, references) == pytest.approx(sum(expected) / 3, abs=0)


def test_chinese_retrieval_and_reply_intents_read_characters():
    from finetune.evaluation.reply_metrics import fit_reply_classifier, retrieve_tfidf

    messages, replies, intents = (list(column) for column in zip(*PAIRS_ZH, strict=True))
    # New wordings share characters with a training message, never a space-split "word".
    asked = ["快递到哪了", "忘记密码怎么办", "账号想注销"]
    assert retrieve_tfidf(messages, replies, asked) == [replies[0], replies[3], replies[5]]
    judge = fit_reply_classifier(replies, intents, seed=0)
    said = ["麻烦提供一下订单号方便查询快递", "去账户设置里面重置密码就行"]
    assert list(judge.predict(said)) == ["物流", "账号"]


def test_a_chinese_free_text_column_gets_character_ngrams_in_the_table_baseline():
    from finetune.evaluation.table_baselines import logistic_regression

    notes = [m for m, _, _ in PAIRS_ZH] * 3
    frame = pd.DataFrame({"age": range(len(notes)), "note": notes})
    frame.attrs["columns"] = [{"name": "note", "kind": "text"}]  # as a table's reader declares
    labels = np.array([int(intent == "账号") for _, _, intent in PAIRS_ZH] * 3)
    inputs = BaselineInputs(
        train_texts=notes, train_labels=labels, eval_texts=notes[:2], n_classes=2, seed=0,
        train_features=frame, eval_features=frame.iloc[:2],
    )  # fmt: skip
    logistic_regression(inputs)
    vectorizer = inputs.predictors["logistic_regression"].vectorizers["note"]
    assert vectorizer.analyzer == "char"


def test_a_chinese_reply_run_scores_overlap_and_names_what_retrieval_cannot_read(
    tiny_llama_dir, tiny_model_dir, tmp_path
):
    import generation_recipe

    from finetune.cli import make_app

    args, evaluation, run = generation_recipe.chinese_reply_run_args(
        tiny_llama_dir, tiny_model_dir, tmp_path, PAIRS_ZH
    )
    result = CliRunner().invoke(make_app(), args)
    assert result.exit_code == 0, result.output
    said = result.output.find(f"tokens are unknown to the retrieval encoder `{tiny_model_dir}`")
    assert -1 < said < result.output.index("epoch 1:")  # before training, not only in the report
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    # The evaluation messages are training messages: TF-IDF retrieval returns their replies.
    assert metrics["reply"]["retrieval_tfidf"]["rougeL"] == pytest.approx(1.0)
    assert metrics["retrieval_model"] == str(tiny_model_dir)
    from finetune.modeling.generation import RetrievedReplies

    assert RetrievedReplies.load(run, 8, "cpu").model == str(tiny_model_dir)  # predict, export
    report = (run / "report.md").read_text(encoding="utf-8")
    assert f"unknown to the retrieval encoder `{tiny_model_dir}`" in report  # MiniLM's vocab
    assert f"retrieval (frozen {tiny_model_dir})" in report
    app = make_app()
    result = CliRunner().invoke(
        app, ["customer-service", "evaluate", "--run", str(run), "--data", str(evaluation)]
    )
    assert result.exit_code == 0, result.output
    saved = json.loads((run / "evaluations" / "eval.json").read_text(encoding="utf-8"))
    assert saved["retrieval_model"] == str(tiny_model_dir)  # new pairs: the run's own encoder


def test_the_bundled_chinese_reply_pairs_are_a_reply_dataset_with_their_own_defaults():
    from finetune.errors import UserError
    from recipes.customer_service import recipe
    from recipes.customer_service_replies import SYSTEM, split

    config = recipe.config(options={"task": "reply", "dataset": "shop_replies_zh"})
    train, validation, evaluation = split(config)
    assert (len(train), len(validation), len(evaluation)) == (56, 16, 24)  # the set's val_rows
    assert set(Counter(evaluation.labels).values()) == {3}  # 3 test pairs per intent
    assert not set(evaluation.prompts) & (set(train.prompts) | set(validation.prompts))
    assert cjk_share(list(train.responses)) > 0.9
    assert config.options.system.startswith("你是") and config.train.epochs == 3
    assert recipe.card(config) is None
    bitext = recipe.config(options={"task": "reply"})
    assert (bitext.options.system, bitext.options.val_rows, bitext.train.epochs) == (SYSTEM, 27, 1)
    # The user's settings win over the dataset's; a file of their own gets none of them.
    mine = recipe.config(
        options={"task": "reply", "dataset": "shop_replies_zh", "system": "", "val_rows": 8}
    )
    assert (mine.options.system, mine.options.val_rows, mine.train.epochs) == ("", 8, 3)
    own = recipe.config(
        data={"path": "pairs.csv"}, options={"task": "reply", "dataset": "shop_replies_zh"}
    )
    assert (own.options.system, own.train.epochs) == (SYSTEM, 1)
    quick = recipe.config(quick=True, options={"task": "reply", "dataset": "shop_replies_zh"})
    assert quick.options.val_rows == 8 and quick.train.max_steps == 4  # --quick on top
    with pytest.raises(UserError, match="shop_replies_zh"):  # an intent dataset, for replies
        recipe.config(options={"task": "reply", "dataset": "chinese_reviews"})
