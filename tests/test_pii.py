"""Tests for finetune.data.pii: labelled positive and negative customer messages.

Every positive case is a realistic sentence with one piece of PII; the expected output is the
same sentence with that piece replaced by its placeholder, so surrounding text and
punctuation are checked too. Every negative case must come back byte for byte unchanged.
"""

from __future__ import annotations

import pytest

from finetune.data.pii import (
    PLACEHOLDERS,
    RedactionCounts,
    foreign_numbers,
    redact,
    redact_all,
    redact_replies,
)

# (kind, the PII as written, a sentence with "{}" where it goes)
POSITIVES: list[tuple[str, str, str]] = [
    # --- e-mails ---
    ("email", "john.smith@example.com", "Hi, my email is {} if you need it."),
    ("email", "Jane.Doe+orders@Mail.Example.co.uk", "Please reply to {}, thanks!"),
    ("email", "support-team@shop-online.de", "I already wrote to {} twice."),
    ("email", "a.b-c_d@sub.domain.example.org", "Contact: {}"),
    ("email", "MARIE.DUPONT@ORANGE.FR", "Mon adresse est {}."),
    ("email", "raj.kumar91@gmail.com", "Send the invoice to {} please"),
    ("email", "first_last@company.io", "(work address: {})"),
    ("email", "info@my-store.example.com", "The receipt came from {}?"),
    ("email", "billing+2026@acme-corp.com", "Our accounts team is at <{}>."),
    ("email", "x@ex.ai", "Short one: {}; please use that."),
    ("email", "tom.o-neill@uni.ac.uk", "Changed my login to {} last week."),
    ("email", "peter@example.com", "Umm...{} is my old address."),
    # --- resident ID numbers (Chinese formats: tests/test_pii_zh.py) ---
    ("national_id", "11010519491231002X", "My ID card number is {}."),
    # --- phones: international ---
    ("phone", "+44 7700 900123", "You can call me on {} after 5pm."),
    ("phone", "+1 415-555-0132", "My number is {}."),
    ("phone", "+49 30 1234567", "Bitte rufen Sie mich unter {} an."),
    ("phone", "+33 6 12 34 56 78", "Appelez-moi au {}, merci."),
    ("phone", "+91 98765 43210", "Reach me at {} (WhatsApp too)."),
    ("phone", "+447700900123", "Text {} when the courier is close."),
    ("phone", "+1 (415) 555-0132", "Office line: {}"),
    ("phone", "+44 (0)20 7946 0958", "Our London office is {}."),
    ("phone", "+33612345678", "Mon portable: {}"),
    ("phone", "0033 6 12 34 56 78", "Tel.: {} (France)"),
    # --- phones: US national ---
    ("phone", "(415) 555-0132", "Call me at {} tomorrow."),
    ("phone", "415-555-0132", "Best number: {}, any time."),
    ("phone", "415.555.0132", "My cell is {}"),
    ("phone", "1-800-555-0199", "I called {} and waited an hour."),
    # --- phones: UK national ---
    ("phone", "07700 900123", "My mobile is {} if the driver gets lost."),
    ("phone", "020 7946 0958", "Ring the shop on {} please."),
    ("phone", "07700900123", "Number: {}."),
    ("phone", "0161 496 0000", "Call {} during office hours."),
    # --- phones: French and German national ---
    ("phone", "06 12 34 56 78", "Vous pouvez me joindre au {}."),
    ("phone", "06.12.34.56.78", "Tél. {}"),
    ("phone", "030 1234567", "Meine Nummer ist {}."),
    # --- cards (test numbers) ---
    ("card", "4111 1111 1111 1111", "I paid with card {} and got charged twice."),
    ("card", "5555-5555-5555-4444", "Card number {}, expiry 12/27."),
    ("card", "4242424242424242", "Use {} for the refund please."),
    ("card", "3782 822463 10005", "My Amex is {}."),
    ("card", "371449635398431", "Amex {} was declined."),
    ("card", "6011 1111 1111 1117", "Discover card: {}"),
    ("card", "6011000990139424", "Charge {} instead."),
    ("card", "5105-1051-0510-5100", "The Mastercard ending in 5100 ({}) is the old one."),
    ("card", "4012 8888 8888 1881", "Visa {} expired last month."),
    ("card", "2223 0031 2200 3222", "New Mastercard {}, please update."),
    ("card", "3056 930902 5904", "Diners Club {} was charged."),
    ("card", "4222222222222", "Old 13-digit Visa {} on file."),
]

NEGATIVES: list[str] = [
    "Where is my order #A10234?",
    "My order 558812 hasn't arrived yet.",
    "Order number 2026112801 was charged twice.",
    "Order ids 2026112801 and 2026112802 were both cancelled.",
    "Reference 1234567890123 is on the invoice.",
    "Gift card 4111 1111 1111 1112 didn't work.",
    "Voucher 1234567812345678 was rejected at checkout.",
    "I paid €1,299.00 for the sofa.",
    "The total was $1,049.99 including tax.",
    "Refund of 1.299,00 € is still pending.",
    "Delivery was promised for 2026-11-28.",
    "I ordered it on 12/03/2025.",
    "Placed 28.11.2026 at 10:45, nothing since.",
    "Date and time: 2025-12-03 09:15.",
    "The courier came at 14:30 instead of 09:00.",
    "Tracking 1Z999AA10123456784 shows no movement.",
    "USPS tracking 9400111899223856928499 is stuck.",
    "FedEx tracking 123456789012 is not found.",
    "Please send it to SW1A 1AA, London.",
    "My postcode is 10115 Berlin.",
    "Deliver to 75001 Paris, 3rd floor.",
    "I need 250 units, not 2500.",
    "Please send 3 x 12 packs.",
    "SKU 4411-22 is out of stock.",
    "Firmware version 10.15.7 keeps crashing.",
    "The app says v2.14.3 build 20251128.",
    "Invoice INV-2026-000123 is wrong.",
    "Ticket 98765432 was closed without reply.",
    "My customer number is 10023344556.",
    "The box weighs 12.5 kg and measures 40 x 30 x 20 cm.",
    "Rated 4.5 stars by 1,234 customers.",
    "Use code SAVE20 for +20% off.",
    "Batch 2025-11-28-001 was recalled.",
    "Arriving 05 11 2025 14:30, table for 4.",
    "Booked for 05 11 2025 14 guests.",
    "Apartment 12, floor 3, building 45.",
    "Order 558812, 2 items, total €59.90, placed 28/11/2026 at 10:45.",
]


# A second set written later as a held-out check, before looking at how redaction handles it.
# Measured on it before any change (2026-11-28): e-mail recall 7/8 (an apostrophe in the local
# part), phones 12/12, cards 6/6, false positives 2/20 (an IBAN and a Luhn-invalid grouped
# 16-digit number partly read as phones). Both were fixed; the set is now part of the suite.
HELD_OUT_POSITIVES = [
    ("email", "maria.garcia@correo.es", "Escríbeme a {} por favor."),
    ("email", "li.wei@163.com", "My email: {}"),
    ("email", "o'brien@example.ie", "Send it to {} thanks"),
    ("email", "user.name@company.travel", "booking mail is {}."),
    ("email", "j_doe99@yahoo.co.in", "mail me at {} asap"),
    ("email", "SALES@Example.NET", "Forwarded from {}."),
    ("email", "a1@b2.museum", "(contact {})"),
    ("email", "noreply+ticket-4471@help.shop.example.com", "Got an email from {} yesterday."),
    ("phone", "+34 612 345 678", "Mi móvil es el {}."),
    ("phone", "+39 347 123 4567", "Chiamami al {}."),
    ("phone", "+61 412 345 678", "Aussie mobile {} if needed."),
    ("phone", "+55 11 91234-5678", "Meu número é {}."),
    ("phone", "+31 6 12345678", "Bel me op {}."),
    ("phone", "+81 90-1234-5678", "Call {} please."),
    ("phone", "+353 87 123 4567", "I'm on {}."),
    ("phone", "+1-212-555-0187", "Reach me: {}"),
    ("phone", "(212) 555 0187", "home phone {}"),
    ("phone", "0049 151 23456789", "Handy: {}"),
    ("phone", "01632 960 123", "landline {} evenings"),
    ("phone", "0612345678", "appelle le {}"),
    ("card", "4000 0566 5566 5556", "Debit card {} was charged twice."),
    ("card", "5200828282828210", "card {} declined"),
    ("card", "3714 496353 98431", "amex {}"),
    ("card", "6011-0009-9013-9424", "discover {} please refund"),
    ("card", "3530 1113 3330 0000", "JCB {} on file"),
    ("card", "4111-1111-1111-1111", "used {} yesterday"),
]
HELD_OUT_NEGATIVES = [
    "Order 4000056655665557 failed.",  # Luhn-invalid 16 digits
    "Parcel ID 5200828282828211 is missing.",
    "Reference 371449635398430 on the letter.",
    "IBAN DE89 3704 0044 0532 0130 00 for the refund.",
    "My loyalty number is 6011 0009 9013 9425.",
    "Call centre hours are 08:00-20:00, Mon-Fri.",
    "Size 42, colour 0012, model 2024.",
    "Paid 1.234.567 VND at checkout.",
    "Version 3.12.0 of the app.",
    "Room 1204, 12th floor.",
    "Price dropped from 129.99 to 99.99.",
    "Serial number SN-20251128-7781.",
    "Delivered on 2025/11/28 at 18:05.",
    "Promo code 2X4Y-6Z8W is expired.",
    "ZIP 94107-1234 please.",
    "I've been a customer since 2019, order count 57.",
    "The sofa is 210 x 95 x 80 cm.",
    "Invoice total: 3 450,00 EUR.",
    "Account ending 4821 was charged.",
    "Flight LH 400 lands at 11:35.",
]

POSITIVES += HELD_OUT_POSITIVES
NEGATIVES += HELD_OUT_NEGATIVES


def _case_id(case: tuple[str, str, str]) -> str:
    return f"{case[0]}:{case[1]}"


def _expected(kind: str, pii: str, template: str) -> tuple[str, str]:
    return template.format(pii), template.format(PLACEHOLDERS[kind])


def test_every_kind_the_redactor_knows_has_cases():
    # Against the code, not the list itself: a new kind of PII in pii.py needs cases here.
    assert (
        {kind for kind, _, _ in POSITIVES} == set(PLACEHOLDERS) == set(RedactionCounts().as_dict())
    )


@pytest.mark.parametrize("case", POSITIVES, ids=_case_id)
def test_positive_is_replaced_and_counted(case):
    kind, pii, template = case
    text, expected = _expected(kind, pii, template)
    out, counts = redact(text)
    assert out == expected
    assert counts.as_dict() == {k: int(k == kind) for k in PLACEHOLDERS}
    assert counts.total == 1


@pytest.mark.parametrize("text", NEGATIVES)
def test_negative_is_untouched(text):
    out, counts = redact(text)
    assert out == text
    assert counts.total == 0


def test_cards_are_not_counted_as_phones():
    out, counts = redact("Card 4111 1111 1111 1111, phone 020 7946 0958.")
    assert out == "Card [CARD], phone [PHONE]."
    assert (counts.card, counts.phone) == (1, 1)


def test_several_items_in_one_message():
    text = (
        "Hi, I'm jane@example.com, call +44 7700 900123 or 415-555-0132. "
        "Order 558812 was paid with 5555 5555 5555 4444 on 2026-11-28 (€1,299.00)."
    )
    out, counts = redact(text)
    assert out == (
        "Hi, I'm [EMAIL], call [PHONE] or [PHONE]. "
        "Order 558812 was paid with [CARD] on 2026-11-28 (€1,299.00)."
    )
    assert counts == RedactionCounts(email=1, phone=2, card=1)
    assert counts.total == 4


def test_trailing_number_after_a_match_is_kept():
    assert redact("Call 020 7946 0958 12 times")[0] == "Call [PHONE] 12 times"
    assert redact("Call +1 415-555-0132 2 times")[0] == "Call [PHONE] 2 times"
    assert redact("card 4111 1111 1111 1111 2 pcs")[0] == "card [CARD] 2 pcs"


def test_long_inputs_are_handled():
    # A backtracking e-mail pattern once took ~10 s on 60k characters of "a.a.a..."; the
    # matcher is linear now (no timing assertion here: a regression shows as a slow suite).
    for text in ("a." * 30_000, "a@" + "b." * 30_000 + "!", "4111 " * 12_000):
        out, counts = redact(text)
        assert out == text and counts.total == 0


def test_text_without_pii_is_unchanged():
    text = "Hello, my parcel is late. Order 558812, placed 2026-11-28. Thanks!"
    out, counts = redact(text)
    assert out == text
    assert counts.total == 0
    assert counts.as_dict() == {"email": 0, "phone": 0, "card": 0, "national_id": 0}
    assert redact("") == ("", RedactionCounts())


def test_redact_all_sums_counts():
    texts = [
        "mail me at a@b.com or c.d@e.org",
        "my phone is 07700 900123",
        "card 4242 4242 4242 4242 and phone +33 6 12 34 56 78",
        "nothing here, order 2026112801",
    ]
    out, counts = redact_all(texts)
    assert out == [
        "mail me at [EMAIL] or [EMAIL]",
        "my phone is [PHONE]",
        "card [CARD] and phone [PHONE]",
        "nothing here, order 2026112801",
    ]
    assert counts == RedactionCounts(email=2, phone=2, card=1)
    assert counts.total == 5
    assert redact_all([]) == ([], RedactionCounts())
    assert redact_all(iter(["x@y.io"]))[1].email == 1


def test_counts_add_and_as_dict():
    a = RedactionCounts(email=1, phone=2, card=3)
    a.add(RedactionCounts(email=10, phone=20, card=30))
    assert a.as_dict() == {"email": 11, "phone": 22, "card": 33, "national_id": 0}
    assert a.total == 66
    assert set(PLACEHOLDERS) == set(a.as_dict())


def test_recall_and_false_positive_rate():
    """Per kind: recall on the positives, and how many negatives any pass touches (FPR)."""
    found = {kind: [0, 0] for kind in PLACEHOLDERS}
    for kind, pii, template in POSITIVES:
        text, expected = _expected(kind, pii, template)
        out, counts = redact(text)
        found[kind][0] += out == expected and getattr(counts, kind) == 1 and counts.total == 1
        found[kind][1] += 1
    wrongly = {kind: 0 for kind in found}
    for text in NEGATIVES:
        for kind, count in redact(text)[1].as_dict().items():
            wrongly[kind] += count > 0
    lines = [
        f"{kind}: recall {hit / total:.3f} ({hit}/{total}), false-positive rate "
        f"{wrongly[kind] / len(NEGATIVES):.3f} ({wrongly[kind]}/{len(NEGATIVES)} negatives)"
        for kind, (hit, total) in found.items()
    ]
    print("\nPII redaction\n" + "\n".join(lines))
    assert all(hit == total for hit, total in found.values()), lines
    assert not any(wrongly.values()), lines


# --- served replies: numbers the conversation did not give ---------------------------------


@pytest.mark.parametrize(
    ("reply", "given", "served"),
    [
        # Another customer's order number, in a training reply served as it is.
        (
            "I've cancelled purchase 732201349959 for you.",
            "how can I cancel my order?",
            "I've cancelled purchase [NUMBER] for you.",
        ),
        # The customer's own, also when they wrote it in groups or in full-width digits.
        ("Order 732201349959 is on its way.", "where is order 732201349959", None),
        ("Order 732201349959 is on its way.", "where is order 7322 0134 9959", None),
        ("Order 732201349959 is on its way.", "where is order 7322-0134-9959", None),
        ("订单 12345678 已发货。", "订单１２３４５６７８到哪了", None),
        # Glued to letters or a "#", in braces, full-width in the reply: still a number.
        ("See invoice #37777 or INV88231.", "my invoice", "See invoice #[NUMBER] or INV[NUMBER]."),
        ("{{370795561790}}", "cancel order 3707955617", "{{[NUMBER]}}"),
        ("订单１２３４５６７８已发货", "我的订单", "订单[NUMBER]已发货"),
        # Under 5 digits: days, years, prices, quantities stay.
        ("Refunds take 14 days; since 2024 we charge $1,299.00 for 3 items.", "refund?", None),
        # Part of a longer number the customer gave is not theirs to echo alone.
        ("Your code is 12345.", "my order is 1234567", "Your code is [NUMBER]."),
    ],
)
def test_a_served_reply_names_only_numbers_its_conversation_gave(reply, given, served):
    out, count = foreign_numbers(reply, given)
    assert out == (reply if served is None else served)
    assert count == (0 if served is None else served.count("[NUMBER]"))


def test_served_replies_are_redacted_and_lose_foreign_numbers():
    replies = ["mail ann@example.com about order 558812", "order 558812 ships today"]
    conversations = ["hi", "where is order 558812?\nit was due monday"]
    served, foreign = redact_replies(replies, conversations)
    assert served == ["mail [EMAIL] about order [NUMBER]", "order 558812 ships today"]
    assert foreign == 1
