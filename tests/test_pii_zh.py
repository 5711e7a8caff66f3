"""Chinese PII: mainland mobiles and landlines, resident ID numbers, bank cards, e-mails.

TUNING_* are the examples the patterns were written against. tests/data/pii_zh_heldout.jsonl
(60 messages with PII, 60 tricky ones without: order, tracking and invoice numbers, dates,
prices) was written before the patterns and only scored: its recall and false-positive rate
are reported in docs/models.md and guarded here against regressions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from finetune.data.pii import redact

# (text, the redacted text)
TUNING_POSITIVES = [
    ("手机13587654321", "手机[PHONE]"),
    ("电话：150 1234 8765。", "电话：[PHONE]。"),
    ("号码是181-2345-6789吧", "号码是[PHONE]吧"),
    ("打+86 186 1234 5678找我", "打[PHONE]找我"),
    ("联系0086-13912348765", "联系[PHONE]"),
    ("座机010-87654321转分机", "座机[PHONE]转分机"),
    ("前台（020）83456789", "前台[PHONE]"),
    ("电话 0769-2233 4455 找王姐", "电话 [PHONE] 找王姐"),
    ("(0591)7654321是旧号码", "[PHONE]是旧号码"),
    ("身份证：11010519491231002X。", "身份证：[ID]。"),
    ("证件号440524188001010014", "证件号[ID]"),
    ("退到卡号6222600260001072444里", "退到卡号[CARD]里"),
    ("卡：6225 8802 1234 5673", "卡：[CARD]"),
    ("邮箱abc_123@163.com，收到回复", "邮箱[EMAIL]，收到回复"),
    ("发到wang＠qq.com", "发到[EMAIL]"),
    ("my number is 13587654321", "my number is 13587654321"),  # no CJK: English rules
]
TUNING_NEGATIVES = [
    "订单号3587654321987，还没发货",
    "快递单号YT1234567890123",
    "花了1358元",
    "2023年12月25日到货",
    "房间号2108",
    "流水号11010519491231002Y",
    "订单号 110105194912310021 查一下",  # ID-shaped, wrong check digit
    "型号AB13587654321C",
    "共计13587.65元",
    "下单时间2023-12-25 10:30:00",
    "拨打95588转人工",
]


@pytest.mark.parametrize(("text", "expected"), TUNING_POSITIVES)
def test_tuning_positives(text, expected):
    assert redact(text)[0] == expected


@pytest.mark.parametrize("text", TUNING_NEGATIVES)
def test_tuning_negatives(text):
    assert redact(text) == (text, redact(text)[1]) and redact(text)[1].total == 0


def test_counts_by_kind():
    _, counts = redact("身份证11010519491231002X，手机13587654321，卡6222600260001072444")
    assert counts.as_dict() == {"email": 0, "phone": 1, "card": 1, "national_id": 1}


def heldout_scores(name: str = "pii_zh_heldout.jsonl") -> tuple[float, float]:
    """Recall of the PII items and the share of PII-free messages changed."""
    path = Path(__file__).parent / "data" / name
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    found = expected = false_positives = negatives = 0
    for row in rows:
        counts = redact(row["text"])[1].as_dict()
        if row["expect"]:
            expected += sum(row["expect"].values())
            found += sum(min(n, counts[kind]) for kind, n in row["expect"].items())
        else:
            negatives += 1
            false_positives += sum(counts.values()) > 0
    return found / expected, false_positives / negatives


def test_heldout_recall_and_false_positive_rate():
    recall, false_positive_rate = heldout_scores()
    # The figures reported in docs/models.md; a change that lowers them shows here.
    assert recall >= 0.95  # 65 of 68 when written
    assert false_positive_rate <= 0.05  # 3 of 60 when written, 2 of 60 now


def test_second_heldout_set():
    """pii_zh_heldout2.jsonl was written against the documented gaps (full-width digits,
    grouped and 15-digit ID numbers, order numbers shaped like mobiles) before they were
    closed: 10 of 22 found and 5 of 20 changed before, 22 and 0 after."""
    recall, false_positive_rate = heldout_scores("pii_zh_heldout2.jsonl")
    assert recall >= 0.95
    assert false_positive_rate <= 0.05


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("手机１３９１２３４５６７８，谢谢（急）", "手机[PHONE]，谢谢（急）"),
        ("身份证 11010519491231002X 登记", "身份证 [ID] 登记"),
        ("身份证 110105 19491231 002X 登记", "身份证 [ID] 登记"),
        ("身份证110105 1949 1231 002x", "身份证[ID]"),
        ("老身份证号：110105491231002", "老身份证号：[ID]"),
        ("订单号123，手机13812345678", "订单号123，手机[PHONE]"),
        ("快递员打不通15000001111", "快递员打不通[PHONE]"),
    ],
)
def test_full_width_grouped_and_labelled(text, expected):
    assert redact(text)[0] == expected


@pytest.mark.parametrize(
    "text",
    [
        "订单号13812345678，没发货",
        "运单号：15012345678",
        "订单号１３８１２３４５６７８",
        "编号 110105491231002",  # 15 digits without an ID label
        "工单 110105 19491231 0021",  # grouped, wrong check character
        "全角括号（一）和全角空格　都不动",
    ],
)
def test_labelled_and_malformed_numbers_kept(text):
    assert redact(text) == (text, redact(text)[1]) and redact(text)[1].total == 0
