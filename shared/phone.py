"""Phone numbers, one way everywhere: E.164 through `phonenumbers`.

Providers write the same number differently (Twilio `+14155550100`, Vonage `14155550100`,
Connect `+14155550100`, a bridge `+1 (415) 555-0100`) and send non-numbers where there is no
number (`client:alice`, `sip:bob@example.com`, `anonymous`, `Unknown`). Every part of the
product — caller memory, the call list, masking, outbound dialling — must agree on one form, or a
caller is remembered under one spelling and forgotten under another. Two entry points:

- `to_e164(value)`: lenient, for numbers providers and callers send us. Any punctuation, with or
  without the `+`; None for anything that is not a possible international number. Fictional
  ranges (555-01xx) are possible numbers, so they work in demos and tests.
- `parse_e164(value)`: strict, for numbers we are asked to dial: written in E.164 exactly and
  valid for its country, else `InvalidPhone` naming which check failed.

`phonenumbers` is imported on first use (about 25 ms), not when a service starts.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

_LETTERS = re.compile(r"[A-Za-z@]")
_NON_DIGITS = re.compile(r"\D")


class InvalidPhone(ValueError):
    """A number we were asked to use is not acceptable; the message names the problem."""


@lru_cache(maxsize=4096)
def _possible(digits: str) -> str | None:
    import phonenumbers

    try:
        number = phonenumbers.parse(f"+{digits}", None)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_possible_number(number):
        return None
    return str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))


def to_e164(value: Any) -> str | None:
    """`+1 (415) 555-0100`, `14155550100` -> `+14155550100`; SIP users, client names,
    `anonymous`, national numbers without a country code and non-strings -> None."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        return None
    text = str(value).strip()
    if not text or _LETTERS.search(text):
        return None
    digits = _NON_DIGITS.sub("", text)
    if not 7 <= len(digits) <= 15 or digits.startswith("0"):
        return None
    return _possible(digits)


def parse_e164(value: str, field: str = "phone_number", exact: bool = True) -> str:
    """The number in E.164, checked to be valid; `InvalidPhone` otherwise. With `exact` it
    must also be written in E.164 (what our API asks of its clients); without, spaces and
    punctuation after the `+` and country code are accepted (`+1 415 555 0100`)."""
    import phonenumbers

    text = (value or "").strip()
    if not text.startswith("+"):
        raise InvalidPhone(
            f"{field}: not a phone number in E.164 (start with '+' and a country code), "
            "e.g. +14155550100"
        )
    try:
        number = phonenumbers.parse(text, None)
    except phonenumbers.NumberParseException:
        raise InvalidPhone(
            f"{field}: not a phone number; write it in E.164, e.g. +14155550100"
        ) from None
    formatted = str(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164))
    if exact and text != formatted:
        raise InvalidPhone(
            f"{field}: not in E.164 format (a '+', the country code and the number, no spaces "
            f"or punctuation): write it as {formatted}"
        )
    if not phonenumbers.is_valid_number(number):
        raise InvalidPhone(f"{field}: {formatted} is not a valid phone number for its country code")
    return formatted


def digits_only(number: str) -> str:
    """`+14155550100` -> `14155550100` (Vonage's wire form)."""
    return _NON_DIGITS.sub("", number)
