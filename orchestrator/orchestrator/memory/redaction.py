"""Redaction of card numbers and similar secrets before anything is stored or embedded.

A caller reading out a card number must not leave it in Chroma (where it would also be embedded
and so recoverable by similarity search) nor in a call summary. Digit runs of 13-19 digits that
pass the Luhn check are card numbers; CVV/CVC codes, US social security numbers, IBANs and spoken
PINs/passwords are recognised by their context words. Ordinary numbers (an account number such as
4411, an order number, a phone number that fails Luhn) are kept: they are what memory is for.
"""

from __future__ import annotations

import re

CARD_PLACEHOLDER = "[card number redacted]"
CVV_PLACEHOLDER = "[security code redacted]"
SSN_PLACEHOLDER = "[ssn redacted]"
IBAN_PLACEHOLDER = "[iban redacted]"
SECRET_PLACEHOLDER = "[secret redacted]"  # noqa: S105 (a placeholder, not a secret)

# 13-19 digits, optionally grouped by single spaces or dashes ("4111 1111 1111 1111").
_CARD_CANDIDATE = re.compile(r"(?<![\d])(?:\d[ -]?){12,18}\d(?![\d])")
_CVV = re.compile(
    r"(?i)\b(cvv2?|cvc2?|cid|security\s+code|card\s+verification(?:\s+code)?)"
    r"(\s*(?:is|:|=|number|code)?\s*)(\d{3,4})\b"
)
_SSN = re.compile(r"(?<!\d)(\d{3})[- ](\d{2})[- ](\d{4})(?!\d)")
_SSN_WORDED = re.compile(
    r"(?i)\b(ssn|social\s+security(?:\s+number)?)(\s*(?:is|:|=|number)?\s*)(\d{9})\b"
)
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?\b")
_SECRET_WORDED = re.compile(
    r"(?i)\b(pin(?:\s+code)?|password|passcode|pass\s+phrase|passphrase)"
    r"(\s*(?:is|:|=)\s*)(\S+)"
)


def luhn_valid(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2 == 1:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"\D", "", match.group(0))
    if 13 <= len(digits) <= 19 and luhn_valid(digits):
        return CARD_PLACEHOLDER
    return match.group(0)


def redact_secrets(text: str) -> str:
    """Text with card numbers, CVVs, SSNs, IBANs and spoken PINs/passwords replaced."""
    if not text:
        return text
    text = _CARD_CANDIDATE.sub(_card, text)
    text = _CVV.sub(lambda m: f"{m.group(1)}{m.group(2)}{CVV_PLACEHOLDER}", text)
    text = _SSN_WORDED.sub(lambda m: f"{m.group(1)}{m.group(2)}{SSN_PLACEHOLDER}", text)
    text = _SSN.sub(SSN_PLACEHOLDER, text)
    text = _IBAN.sub(IBAN_PLACEHOLDER, text)
    return _SECRET_WORDED.sub(lambda m: f"{m.group(1)}{m.group(2)}{SECRET_PLACEHOLDER}", text)


def contains_secret(text: str) -> bool:
    return redact_secrets(text) != text
