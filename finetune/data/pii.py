"""Redact e-mail addresses, payment card numbers and phone numbers from customer messages.

Rule-based and dependency-free (stdlib `re` only), meant to scrub support-chat and e-mail
text before it is written to a training set. Each match is replaced by a fixed placeholder
(`PLACEHOLDERS`) and counted, so a data card can say how much was removed.

Order of passes: e-mails, then resident ID numbers, then cards, then phones, so the digits
inside an address are never read as a phone, an ID number that happens to pass the Luhn check
is counted as an ID, and a card number is never counted as a phone.

What is matched:

- E-mails: ``local@domain.tld`` with dots, plus, hyphens and subdomains, any case.
- Cards: 13-19 digits, ungrouped or grouped with single spaces or hyphens in the usual
  layouts (4-4-4-4[-1..3], 4-4-4-1..3, Amex 4-6-5, Diners 4-6-4), replaced only when they
  pass the Luhn check, so an order or reference number that fails it is kept.
- Phones, at least 9 digits in all: international ``+CC ...`` or ``00CC ...`` (spaces,
  hyphens, dots, brackets, an optional ``(0)``; a few common country codes have their exact
  length checked), US national ``(415) 555-0132``, ``415-555-0132``, ``415.555.0132``, and
  national numbers with a leading trunk ``0`` (UK, FR, DE and the like: ``07700 900123``,
  ``020 7946 0958``, ``06 12 34 56 78``, ``030 1234567``, or a bare ``07700900123`` of 10-11
  digits; not a day-month-year date such as ``05 11 2025``).

Chinese text: a number written right after or before a Chinese character ("手机13812345678",
"打021-61234567转客服") is not "glued to a word": CJK characters count as separators around
numbers and addresses. In messages that contain CJK characters, three mainland formats are
matched too: mobiles ``13812345678`` / ``138 1234 5678`` / ``138-1234-5678`` (1, then 3-9, 11
digits; ``+86`` and ``0086`` forms are international numbers above), landlines with their
area code (``010-62345678``, ``0755 2654 3210``, ``(0755)26543210`` with ASCII or full-width
brackets: 010 and 02X take an 8-digit number, other area codes 7-8 digits), and e-mail
addresses written with a full-width ``＠``. Resident ID numbers (``[ID]``), in any text: 18
characters, a region code, a real birth date (1800-2099) and the ISO 7064 check character
(a digit or ``X``) must all agree, so an 18-digit order number almost never passes.

What is deliberately left alone: a bare run of digits that does not start with ``+`` or
``0`` (customers paste order ids like ``2026112801``; a bare US number ``4155550132`` is
therefore kept too), dates, times, prices, postcodes, quantities, short ids and version
strings. A number glued to letters or to ``#``, ``/``, ``.``, ``,`` or ``-`` on its left is
part of some other token (a tracking code, a date, an amount) and is not a phone.

Chinese text also gets: numbers typed in full-width characters (``１３８…``, matched on their
half-width twin, the rest of the message untouched), ID numbers written in groups (6-8-4 or
6-4-4-4 with spaces or hyphens; the check character still has to agree) and first-generation
15-digit ID numbers right after an ID label (``身份证``, ``证件``); a mobile- or card-shaped
number right after a label that names it as something else (``订单号``, ``运单号``, ``编号``,
``条码`` ...) is kept.

Chinese limits: a bare 11-digit number shaped like a mobile with no label is redacted even
when it is an order or member number; e-mail addresses with Chinese characters in them, and
15-digit ID numbers without a label, are not matched.

Served replies (`redact_replies`) are redacted as messages are, and more: a reply names a
number of 5 digits or more only when its conversation gave it. A reply written for another
customer (a retrieved training reply, or a model that copied one) names that customer's order,
invoice or account number; each such number becomes ``[NUMBER]`` (`foreign_numbers`). A
number the customer gave is kept, also when written in groups ("7322 0134 9959" gives
732201349959). The shop's own long numbers in a reply (a postcode, a price of 10000 written
without separators) are replaced too.

Known limits: rules, not a model. A Luhn-valid 13-19 digit reference number is redacted as a
card (one in ten random numbers passes); a reference number written like a phone (``0``
first, or US 3-3-4 grouping) is redacted as a phone; names, street addresses and IBANs are
out of scope.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields

__all__ = [
    "NUMBER_PLACEHOLDER",
    "PLACEHOLDERS",
    "RedactionCounts",
    "foreign_numbers",
    "redact",
    "redact_all",
    "redact_replies",
]

PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]", "national_id": "[ID]"}


@dataclass
class RedactionCounts:
    """How many e-mails, phones, cards and resident ID numbers were replaced."""

    email: int = 0
    phone: int = 0
    card: int = 0
    national_id: int = 0

    def add(self, other: RedactionCounts) -> None:
        """Add another tally to this one, in place."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def total(self) -> int:
        return self.email + self.phone + self.card + self.national_id


# Han ideographs (with extension A and compatibility forms), kana, Hangul, CJK punctuation and
# full-width forms: in Chinese and Japanese text these sit right against numbers and addresses.
_CJK_CHARS = (
    "\u3000-\u303f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af\uff00-\uffef"
)
_CJK_RE = re.compile(f"[{_CJK_CHARS}]")
# A word character that is not CJK: what a number or an address must not be glued to.
_WORD = f"[^\\W{_CJK_CHARS}]"


# --- e-mail -------------------------------------------------------------------------------

# Matched outward from each "@" so the cost is linear in the text: the domain forwards, the
# local part (dot-separated atoms, not glued to a word on its left) backwards on the reversed
# text. A single left-to-right pattern would rescan every dotted run from every word start.
_DOMAIN_RE = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}" + f"(?!{_WORD}|-)", re.IGNORECASE
)
_LOCAL_REVERSED_RE = re.compile(
    r"[a-z0-9_%+'-]+(?:\.[a-z0-9_%+'-]+)*" + f"(?!{_WORD}|[%+'-])", re.IGNORECASE
)


_AT_RE = re.compile("[@\uff20]")  # a full-width "＠" (Chinese keyboards, anti-harvesting) too


def _find_at(text: str, start: int) -> int:
    found = _AT_RE.search(text, start)
    return -1 if found is None else found.start()


def _redact_emails(text: str) -> tuple[str, int]:
    at = _find_at(text, 0)
    if at == -1:
        return text, 0
    n = len(text)
    reversed_text = text[::-1]
    parts: list[str] = []
    done = 0  # text[:done] is already in parts
    while at != -1:
        local = _LOCAL_REVERSED_RE.match(reversed_text, n - at, n - done)
        domain = _DOMAIN_RE.match(text, at + 1) if local else None
        if local and domain:
            parts.append(text[done : at - len(local.group(0))])
            parts.append(PLACEHOLDERS["email"])
            done = domain.end()
        at = _find_at(text, max(at + 1, done))
    parts.append(text[done:])
    return "".join(parts), (len(parts) - 1) // 2


# --- cards --------------------------------------------------------------------------------

# Not glued to a word, a '+' (phone) or a decimal/date/amount separator on either side.
_NUM_BEFORE = f"(?<!{_WORD}|[+.,/-])"
_NUM_AFTER = f"(?!{_WORD}|[.,:/-][0-9])"

_CARD_RE = re.compile(
    _NUM_BEFORE
    + r"(?:"
    + r"[0-9]{13,19}"
    + r"|[0-9]{4}(?P<s1>[ -])[0-9]{4}(?P=s1)[0-9]{4}(?P=s1)[0-9]{1,4}(?:(?P=s1)[0-9]{1,3})?"
    + r"|[0-9]{4}(?P<s2>[ -])[0-9]{6}(?P=s2)[0-9]{4,5}"
    + r")"
    + _NUM_AFTER
)


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _is_card(candidate: str) -> bool:
    digits = re.sub(r"[^0-9]", "", candidate)
    return 13 <= len(digits) <= 19 and _luhn_ok(digits)


# --- phones -------------------------------------------------------------------------------

_PHONE_RE = re.compile(
    f"(?<!{_WORD}|[+#.,/-])"
    + r"(?:"
    # International: +CC or 00CC, optional (0) trunk, optional (area), then digit groups.
    + r"(?:\+|(?<![0-9][ .-])00(?=[1-9]))[0-9]{1,3}(?:[ .-]?\(0\))?(?:[ .-]?\([0-9]{1,4}\))?"
    + r"[ .-]?[0-9]{1,12}(?:[ .-][0-9]{1,8}){0,5}"
    # US national: (415) 555-0132, 415-555-0132, 415.555.0132, optional leading 1.
    + r"|(?:1[ .-]?)?(?:\([2-9][0-9]{2}\)[ .-]?[2-9][0-9]{2}[ .-]"
    + r"|[2-9][0-9]{2}(?P<us>[ .-])[2-9][0-9]{2}(?P=us))[0-9]{4}"
    # National with trunk 0, grouped with one kind of separator: French pairs 06 12 34 56 78,
    # else at most four groups: 07700 900123, 020 7946 0958, 030 1234567.
    # A 0 right after another digit group ("6011 0009 9013", an IBAN's "3704 0044") continues
    # that number; it does not start a phone.
    + r"|(?<![0-9][ .-])0[1-9](?P<f>[ .-])[0-9]{2}(?:(?P=f)[0-9]{2}){3}"
    + r"|(?<![0-9][ .-])0[0-9]{1,4}(?P<z>[ .-])[0-9]{2,8}(?:(?P=z)[0-9]{2,8}){0,2}"
    # National with trunk 0, bare: 07700900123.
    + r"|(?<![0-9][ .-])0[0-9]{9,10}"
    + r")"
    + _NUM_AFTER
)

# Total digit counts (country code included) for a few common country codes; others get the
# E.164 range. Country codes are prefix-free, so the first match on the digits is the code.
_CC_LENGTHS: dict[str, tuple[int, int]] = {
    "1": (11, 11),  # NANP
    "7": (11, 11),  # RU/KZ
    "31": (11, 11),  # NL
    "33": (11, 11),  # FR
    "34": (11, 11),  # ES
    "39": (11, 13),  # IT
    "44": (11, 12),  # UK
    "49": (10, 14),  # DE
    "61": (11, 11),  # AU
    "81": (11, 12),  # JP
    "86": (12, 13),  # CN
    "91": (12, 12),  # IN
}


# A day-month-year date written with spaces, dots or hyphens ("05 11 2025").
_DATE_RE = re.compile(r"(?:0[1-9]|[12][0-9]|3[01])([ .-])(?:0[1-9]|1[0-2])\1(?:19|20)[0-9]{2}")


def _international_ok(candidate: str) -> bool:
    digits = re.sub(r"[^0-9]", "", candidate.replace("(0)", "", 1))
    if candidate.startswith("00"):
        digits = digits[2:]
    low, high = 9, 15
    for n in (1, 2, 3):
        if digits[:n] in _CC_LENGTHS:
            low, high = _CC_LENGTHS[digits[:n]]
            break
    return low <= len(digits) <= high


def _is_phone(candidate: str) -> bool:
    if candidate.startswith("+"):
        return _international_ok(candidate)
    if candidate.startswith("00") and _international_ok(candidate):
        return True
    digits = re.sub(r"[^0-9]", "", candidate)
    if candidate.startswith("0"):
        return 9 <= len(digits) <= 11 and not _DATE_RE.match(candidate)
    return len(digits) in (10, 11)  # US, with or without the leading 1


_SEPARATOR_RUN = re.compile(r"[ .-]+\(?[0-9]*\)?$")


def _longest_valid_prefix(candidate: str, valid: Callable[[str], bool]) -> str | None:
    """Longest prefix of `candidate`, cut at a group separator, that `valid` accepts.

    A greedy match can take in a trailing number that is not part of it ("... 0958 12 items",
    "4111 1111 1111 1111 2"); cutting whole trailing groups recovers the real one.
    """
    while candidate:
        if valid(candidate):
            return candidate
        shorter = _SEPARATOR_RUN.sub("", candidate)
        if shorter == candidate:
            return None
        candidate = shorter
    return None


def _substitute(
    text: str,
    pattern: re.Pattern[str],
    valid: Callable[[str], bool],
    placeholder: str,
    labelled_other: Callable[[str, int], bool] | None = None,
) -> tuple[str, int]:
    """Replace each valid match; `labelled_other(text, start)` skips numbers labelled as
    something else (an order or tracking number)."""
    count = 0

    def repl(m: re.Match[str]) -> str:
        nonlocal count
        found = m.group(0)
        if labelled_other is not None and labelled_other(m.string, m.start()):
            return found
        keep = _longest_valid_prefix(found, valid)
        if keep is None:
            return found
        count += 1
        return placeholder + found[len(keep) :]

    return pattern.sub(repl, text), count


# --- Chinese formats ----------------------------------------------------------------------

# Resident ID: region (first digit 1-8), birth date YYYYMMDD, sequence, check character.
_NATIONAL_ID_RE = re.compile(
    _NUM_BEFORE
    + r"[1-8][0-9]{5}(?:18|19|20)[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3}"
    + r"[0-9Xx]"
    + _NUM_AFTER
)
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
# In Chinese text only: the same 18 characters written in groups (6-8-4 or 6-4-4-4, single
# spaces or hyphens), and the first-generation 15-digit number (region, YYMMDD, sequence; no
# check character) when an ID label (身份证, 证件) comes right before it.
_NATIONAL_ID_GROUPED_RE = re.compile(
    _NUM_BEFORE
    + r"[1-8][0-9]{5}[ -](?:18|19|20)[0-9]{2}[ -]?(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])"
    + r"[ -][0-9]{3}[0-9Xx]"
    + _NUM_AFTER
)
_OLD_NATIONAL_ID_RE = re.compile(
    r"(?:身份证|证件)[^0-9\n]{0,6}?"
    + _NUM_BEFORE
    + r"([1-8][0-9]{5}[0-9]{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12][0-9]|3[01])[0-9]{3})"
    + _NUM_AFTER
)


def _is_national_id(candidate: str) -> bool:
    """GB 11643: the weighted sum of the first 17 digits, mod 11, picks the check character."""
    candidate = re.sub(r"[ -]", "", candidate)
    if len(candidate) != 18:
        return False
    total = sum(int(d) * w for d, w in zip(candidate[:17], _ID_WEIGHTS, strict=True))
    return "10X98765432"[total % 11] == candidate[17].upper()


def _redact_chinese_ids(text: str) -> tuple[str, int]:
    """Grouped 18-character and labelled 15-digit resident ID numbers, in CJK text only."""
    if not _CJK_RE.search(text):
        return text, 0
    text, grouped = _substitute(
        text, _NATIONAL_ID_GROUPED_RE, _is_national_id, PLACEHOLDERS["national_id"]
    )
    old = 0

    def repl(m: re.Match[str]) -> str:
        nonlocal old
        old += 1
        return m.group(0)[: m.start(1) - m.start(0)] + PLACEHOLDERS["national_id"]

    return _OLD_NATIONAL_ID_RE.sub(repl, text), grouped + old


# Mainland mobile: 1, then 3-9, 11 digits, bare or grouped 3-4-4 with spaces or hyphens.
_CN_MOBILE_RE = re.compile(
    f"(?<!{_WORD}|[+#.,/-])" + r"1[3-9][0-9](?P<m>[ -]?)[0-9]{4}(?P=m)[0-9]{4}" + _NUM_AFTER
)
# Landline with its area code (0 + 2-3 digits), optionally in ASCII or full-width brackets.
_CN_LANDLINE_RE = re.compile(
    f"(?<!{_WORD}|[+#.,/-])"
    + r"(?:[(（]0[1-9][0-9]{1,2}[)）][ -]?|0[1-9][0-9]{1,2}[ -]?)[2-9][0-9]{2,3}[ -]?[0-9]{4}"
    + _NUM_AFTER
)


def _is_cn_landline(candidate: str) -> bool:
    digits = re.sub(r"[^0-9]", "", candidate)
    area = 3 if digits[1] in "12" else 4  # 010 and 02X are Beijing and the big cities
    return len(digits) - area in ((8,) if area == 3 else (7, 8))


# A label right before a number says it is not a phone or card: "订单号13812345678" is an
# order number shaped like a mobile ("快递员说打不通138..." and "订单号123，手机138..." are not).
_CN_OTHER_LABEL_RE = re.compile(
    r"(?:订单|单号|运单|快递|编号|条码|条形码|流水|工单|序列号|合同|取件码|券码|批次|会员卡)"
    r"(?:号码|号)?[是为：:\s]{0,2}$"
)


def _labelled_other(text: str, start: int) -> bool:
    """The characters right before `start` are a label of a non-personal number."""
    return _CN_OTHER_LABEL_RE.search(text[max(0, start - 10) : start]) is not None


def _redact_chinese_phones(text: str) -> tuple[str, int]:
    """Mainland landlines and bare mobiles: only in text with CJK characters, where a bare
    11-digit number starting 13-19 is far more often a phone than it is in English text,
    unless a label right before it names it as something else."""
    if not _CJK_RE.search(text):
        return text, 0
    text, landlines = _substitute(text, _CN_LANDLINE_RE, _is_cn_landline, PLACEHOLDERS["phone"])
    text, mobiles = _substitute(
        text, _CN_MOBILE_RE, lambda _: True, PLACEHOLDERS["phone"], _labelled_other
    )
    return text, landlines + mobiles


# Full-width digits, X, hyphen, plus, brackets and the ideographic space, one character each
# way: a number typed in full-width mode is matched on its half-width twin, and the message
# keeps its own characters everywhere nothing was redacted.
_HALF_WIDTH = str.maketrans("０１２３４５６７８９Ｘｘ－＋（）\u3000", "0123456789Xx-+() ")


def _redact_half_width(text: str) -> tuple[str, RedactionCounts]:
    """Redact `text` as if written in half-width characters; untouched parts stay as given."""
    from difflib import SequenceMatcher

    half = text.translate(_HALF_WIDTH)
    redacted, counts = _redact(half)
    if counts.total == 0:
        return text, counts
    pieces = []
    matcher = SequenceMatcher(None, half, redacted, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        pieces.append(text[i1:i2] if tag == "equal" else redacted[j1:j2])
    return "".join(pieces), counts


def redact(text: str) -> tuple[str, RedactionCounts]:
    """Replace emails, resident ID, payment card and phone numbers in one message."""
    if text.translate(_HALF_WIDTH) != text:
        return _redact_half_width(text)
    return _redact(text)


def _redact(text: str) -> tuple[str, RedactionCounts]:
    counts = RedactionCounts()
    text, counts.email = _redact_emails(text)
    text, counts.national_id = _substitute(
        text, _NATIONAL_ID_RE, _is_national_id, PLACEHOLDERS["national_id"]
    )
    text, grouped_ids = _redact_chinese_ids(text)
    counts.national_id += grouped_ids
    labelled = _labelled_other if _CJK_RE.search(text) else None
    text, counts.card = _substitute(text, _CARD_RE, _is_card, PLACEHOLDERS["card"], labelled)
    text, counts.phone = _substitute(text, _PHONE_RE, _is_phone, PLACEHOLDERS["phone"])
    text, chinese = _redact_chinese_phones(text)
    counts.phone += chinese
    return text, counts


def redact_all(texts: Iterable[str]) -> tuple[list[str], RedactionCounts]:
    """Redact many messages; counts summed."""
    out: list[str] = []
    total = RedactionCounts()
    for text in texts:
        redacted, counts = redact(text)
        out.append(redacted)
        total.add(counts)
    return out, total


# --- served replies -----------------------------------------------------------------------

NUMBER_PLACEHOLDER = "[NUMBER]"
_LONG_NUMBER_RE = re.compile(r"(?<![0-9])[0-9]{5,}(?![0-9])")
_DIGIT_GROUPS_RE = re.compile(r"[0-9]+(?:[ -][0-9]+)*")


def _given_numbers(text: str) -> set[str]:
    """Each run of digits in `text`, and each run of digit groups joined by single spaces or
    hyphens, joins dropped (full-width digits read as half-width)."""
    found: set[str] = set()
    for match in _DIGIT_GROUPS_RE.finditer(text.translate(_HALF_WIDTH)):
        groups = re.split("[ -]", match.group())
        found.update(groups)
        found.add("".join(groups))
    return found


def foreign_numbers(reply: str, given: str) -> tuple[str, int]:
    """`reply` with each number of 5 digits or more that `given` (the conversation it answers)
    does not hold replaced by NUMBER_PLACEHOLDER, and how many were replaced."""
    known = _given_numbers(given)
    half = reply.translate(_HALF_WIDTH)  # one character for one: positions agree
    pieces, last, count = [], 0, 0
    for match in _LONG_NUMBER_RE.finditer(half):
        if match.group() not in known:
            pieces += [reply[last : match.start()], NUMBER_PLACEHOLDER]
            last, count = match.end(), count + 1
    return "".join(pieces) + reply[last:], count


def redact_replies(replies: list[str], conversations: list[str]) -> tuple[list[str], int]:
    """Replies as served: redacted as messages are (`redact`), then each number of 5 digits or
    more that its conversation (all turns' text) did not give replaced (`foreign_numbers`).
    Returns the replies and how many numbers were foreign."""
    redacted = redact_all(replies)[0]
    served, foreign = [], 0
    for reply, given in zip(redacted, conversations, strict=True):
        text, count = foreign_numbers(reply, given)
        served.append(text)
        foreign += count
    return served, foreign
