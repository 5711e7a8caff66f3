"""Redact e-mail addresses, payment card numbers and phone numbers from customer messages.

Rule-based and dependency-free (stdlib `re` only), meant to scrub support-chat and e-mail
text before it is written to a training set. Each match is replaced by a fixed placeholder
(`PLACEHOLDERS`) and counted, so a data card can say how much was removed.

Order of passes: e-mails, then cards, then phones, so the digits inside an address are never
read as a phone and a card number is never counted as a phone.

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

What is deliberately left alone: a bare run of digits that does not start with ``+`` or
``0`` (customers paste order ids like ``2026112801``; a bare US number ``4155550132`` is
therefore kept too), dates, times, prices, postcodes, quantities, short ids and version
strings. A number glued to letters or to ``#``, ``/``, ``.``, ``,`` or ``-`` on its left is
part of some other token (a tracking code, a date, an amount) and is not a phone.

Known limits: rules, not a model. A Luhn-valid 13-19 digit reference number is redacted as a
card (one in ten random numbers passes); a reference number written like a phone (``0``
first, or US 3-3-4 grouping) is redacted as a phone; names, street addresses and IBANs are
out of scope.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields

__all__ = ["PLACEHOLDERS", "RedactionCounts", "redact", "redact_all"]

PLACEHOLDERS = {"email": "[EMAIL]", "phone": "[PHONE]", "card": "[CARD]"}


@dataclass
class RedactionCounts:
    """How many e-mails, phones and cards were replaced."""

    email: int = 0
    phone: int = 0
    card: int = 0

    def add(self, other: RedactionCounts) -> None:
        """Add another tally to this one, in place."""
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @property
    def total(self) -> int:
        return self.email + self.phone + self.card


# --- e-mail -------------------------------------------------------------------------------

# Matched outward from each "@" so the cost is linear in the text: the domain forwards, the
# local part (dot-separated atoms, not glued to a word on its left) backwards on the reversed
# text. A single left-to-right pattern would rescan every dotted run from every word start.
_DOMAIN_RE = re.compile(
    r"(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,24}(?![\w-])", re.IGNORECASE
)
_LOCAL_REVERSED_RE = re.compile(r"[a-z0-9_%+'-]+(?:\.[a-z0-9_%+'-]+)*(?![\w%+'-])", re.IGNORECASE)


def _redact_emails(text: str) -> tuple[str, int]:
    at = text.find("@")
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
        at = text.find("@", max(at + 1, done))
    parts.append(text[done:])
    return "".join(parts), (len(parts) - 1) // 2


# --- cards --------------------------------------------------------------------------------

# Not glued to a word, a '+' (phone) or a decimal/date/amount separator on either side.
_NUM_BEFORE = r"(?<![\w+.,/-])"
_NUM_AFTER = r"(?!\w|[.,:/-][0-9])"

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
    r"(?<![\w+#.,/-])"
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
    text: str, pattern: re.Pattern[str], valid: Callable[[str], bool], placeholder: str
) -> tuple[str, int]:
    count = 0

    def repl(m: re.Match[str]) -> str:
        nonlocal count
        found = m.group(0)
        keep = _longest_valid_prefix(found, valid)
        if keep is None:
            return found
        count += 1
        return placeholder + found[len(keep) :]

    return pattern.sub(repl, text), count


def redact(text: str) -> tuple[str, RedactionCounts]:
    """Replace emails, payment card numbers and phone numbers in one message."""
    counts = RedactionCounts()
    text, counts.email = _redact_emails(text)
    text, counts.card = _substitute(text, _CARD_RE, _is_card, PLACEHOLDERS["card"])
    text, counts.phone = _substitute(text, _PHONE_RE, _is_phone, PLACEHOLDERS["phone"])
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
