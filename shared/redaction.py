"""Redaction of card data and similar secrets before anything is stored, embedded, logged, shown
or sent to a model. In `shared/` because both services need it: the gateway redacts what it puts
on the `/ws` stream viewers read; the orchestrator what it stores, embeds and sends to the model.

The turn service calls `redact_secrets` once on the caller's words as they enter the orchestrator
and once on the agent's reply before it is stored or returned (an LLM repeating a card back); the
call summary, caller memories and knowledge are redacted again where they are written. What is
recognised, on written digits and on digits spoken as words ("four one one one", "oh", "zero",
"double one", "triple five"), with any mix of spaces, double spaces, dashes, dots, commas or
slashes between groups:

- **card numbers**: 13-19 digits with a card network's prefix and length (Visa, Mastercard, Amex,
  Discover, Diners, JCB, UnionPay, Maestro, Mir) that pass the Luhn check, also when more digits
  follow in the same run ("4111 1111 1111 1111 123": the security code said right after is
  redacted too); after "card number" 12-19 digits are redacted whether or not they pass Luhn (a
  misheard digit leaves the rest of the card);
- **security codes**: 3-4 digits after CVV / CVC / CID / CSC / "security code" / "card
  verification ..." / "the code on the back", and, without a keyword, 3-4 digits (or an expiry
  date) said right after a card in the same sentence, within six words;
- **PINs and passwords**: 4-8 digits after "PIN" / "PIN number" / "PIN code" / "passcode" /
  "one-time code" ("pin 1234", "PIN number is 1234", "my pin is one two three four"); the word
  after "password is" / "passphrase is";
- **US social security numbers**: 9 digits after "SSN" / "social security (number)" / "social
  insurance number", and written 3-2-4 groups ("123-45-6789", "123 45 6789") without a keyword
  when they are a possible SSN (not 000/666/9xx, 00, 0000);
- **IBANs**: upper or lower case, grouped by spaces or dashes or not at all, with the country's
  IBAN length and a valid mod-97 check.

Kept on purpose, because they are what memory and the agent's work are for: order and account
numbers, tracking numbers, times, dates, prices, quantities, zip codes, the last four digits of a
card ("ends in 1111"), and phone numbers. A caller's phone number is not card data: the agent
needs it to call back or to transfer, and the conversation already holds the caller's number;
phone numbers are masked in logs by `shared.logging`, not here. A run of digits that happens to
be a valid card number (network prefix, length and Luhn together) is redacted even if the caller
meant it as something else: for card data we prefer the false positive.

Not recognised: numbers spoken as tens ("forty one eleven"), IBANs spelled letter by letter.

Every pattern is compiled once at import, and the keyword patterns run only when a keyword is
in the text: a 300-character utterance takes about 0.1 ms, one full of secrets about 0.25 ms
(tests/shared/test_redaction.py holds it under 1 ms).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

CARD_PLACEHOLDER = "[card number redacted]"
CVV_PLACEHOLDER = "[security code redacted]"
CARD_DETAILS_PLACEHOLDER = "[card details redacted]"
SSN_PLACEHOLDER = "[ssn redacted]"
IBAN_PLACEHOLDER = "[iban redacted]"
SECRET_PLACEHOLDER = "[secret redacted]"  # noqa: S105 (a placeholder, not a secret)

# -- digit runs: written digits and digits spoken as words ------------------------------------

_WORD_DIGITS = {
    "zero": "0",
    "oh": "0",
    "o": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
    "niner": "9",
}
_WORD = r"(?:zero|oh|o(?!')|one|two|three|four|five|six|seven|eight|niner|nine)"
# One group: written digits, or a digit word, optionally doubled / tripled ("double one").
_TOKEN = rf"(?:\d+|(?:(?:double|triple)[ \t]+)?{_WORD}(?![\w']))"
# Between groups: spaces (any number), or one of - . , / with spaces around it.
_SEP = r"(?:[ \t]*[-.,/][ \t]*|[ \t]+)"
_RUN = rf"\b(?=[\dzotfsendZOTFSEND]){_TOKEN}(?:{_SEP}{_TOKEN})*(?![\w])"
_RUN_RE = re.compile(_RUN, re.IGNORECASE)
_TOKEN_RE = re.compile(
    rf"(?P<digits>\d+)|(?:(?P<times>double|triple)[ \t]+)?(?P<word>{_WORD})(?![\w'])",
    re.IGNORECASE,
)
# A cheap test that a text has anything a digit run could be made of.
_DIGITISH = re.compile(rf"\d|\b{_WORD}\b", re.IGNORECASE)

# Card networks' prefixes and lengths (the whole digit string), checked before Luhn.
_CARD_SHAPE = re.compile(
    r"4(?:\d{12}|\d{15}|\d{18})"  # Visa 13, 16, 19
    r"|(?:5[1-5]\d\d|222[1-9]|22[3-9]\d|2[3-6]\d\d|27[01]\d|2720)\d{12}"  # Mastercard
    r"|3[47]\d{13}"  # Amex
    r"|(?:6011|64[4-9]\d|65\d\d)\d{12,15}"  # Discover
    r"|3(?:0[0-5]|[689]\d)\d{11,16}"  # Diners
    r"|35(?:2[89]|[3-8]\d)\d{12,15}"  # JCB
    r"|62\d{14,17}"  # UnionPay
    r"|(?:50|5[6-8]|6\d)\d{11,17}"  # Maestro
    r"|220[0-4]\d{12,15}"  # Mir
)


class _Group:
    __slots__ = ("digits", "end", "start", "written")

    def __init__(self, digits: str, start: int, end: int, written: bool) -> None:
        self.digits, self.start, self.end, self.written = digits, start, end, written


def _groups(text: str, start: int, end: int) -> list[_Group]:
    """The digit groups of the run `text[start:end]`, each with its span in `text`."""
    out: list[_Group] = []
    for m in _TOKEN_RE.finditer(text, start, end):
        if m.group("digits"):
            out.append(_Group(m.group("digits"), m.start(), m.end(), True))
        else:
            digit = _WORD_DIGITS[m.group("word").lower()]
            times = m.group("times")
            count = 1 if times is None else (2 if times.lower() == "double" else 3)
            out.append(_Group(digit * count, m.start(), m.end(), False))
    return out


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


def is_card_number(digits: str) -> bool:
    """A card network's prefix and length, and the Luhn check."""
    return _CARD_SHAPE.fullmatch(digits) is not None and luhn_valid(digits)


def _find_card(groups: list[_Group]) -> tuple[int, int, int] | None:
    """(first group, last group, digits used of the last group) of the first card number in
    the run, the longest from its start: it starts at a group and ends at a group's end, or
    anywhere inside a group of 13 or more digits (a card said without pauses, then more)."""
    for first in range(len(groups)):
        if groups[first].digits[0] not in "23456":
            continue
        best: tuple[int, int, int] | None = None
        digits = ""
        for last in range(first, len(groups)):
            before = len(digits)
            part = groups[last].digits
            digits += part
            for used in range(1, len(part) + 1) if len(part) >= 13 else (len(part),):
                size = before + used
                if size > 19:
                    break
                if size >= 13 and is_card_number(digits[:size]):
                    best = (first, last, used)
            if len(digits) >= 19:
                break
        if best is not None:
            return best
    return None


def _possible_ssn(groups: list[_Group]) -> bool:
    if [len(g.digits) for g in groups] != [3, 2, 4] or not all(g.written for g in groups):
        return False
    area, group, serial = (g.digits for g in groups)
    return area not in ("000", "666") and area[0] != "9" and group != "00" and serial != "0000"


def _after_card(count: int) -> str:
    return CVV_PLACEHOLDER if count in (3, 4) else CARD_DETAILS_PLACEHOLDER


def _redact_run(m: re.Match[str]) -> str:
    return _redact_groups(m.string, _groups(m.string, m.start(), m.end()), m.start(), m.end())


def _redact_groups(text: str, groups: list[_Group], start: int, end: int) -> str:
    total = sum(len(g.digits) for g in groups)
    found = _find_card(groups) if total >= 13 else None
    if found is not None:
        first, last, used = found
        tail = groups[last]
        out = text[start : groups[first].start] + CARD_PLACEHOLDER
        if used == len(tail.digits):
            card_end, rest = tail.end, groups[last + 1 :]
        else:  # the card ends inside a group of written digits: the rest of it follows
            card_end = tail.start + used
            rest = [_Group(tail.digits[used:], card_end, tail.end, True), *groups[last + 1 :]]
        rest_digits = sum(len(g.digits) for g in rest)
        if rest_digits < 3:  # nothing, or a digit or two that cannot be a code
            return out + text[card_end:end]
        if rest_digits <= 8:  # the security code (and expiry) said right after the card
            return out + " " + _after_card(rest_digits)
        return out + text[card_end : rest[0].start] + _redact_groups(text, rest, rest[0].start, end)
    if total == 9 and _possible_ssn(groups):
        return SSN_PLACEHOLDER
    return text[start:end]


# -- keyword contexts ------------------------------------------------------------------------

# Words that may stand between a keyword and its value ("PIN number is", "CVV on the back is").
_FILL = (
    r"(?:'s\b|\s*[:=#]|\s*-|\s+(?:is|was|are|number|no|num|code|for|on|of|the|my|your|card|"
    r"it'?s|its|will|would|should|be|reads?|digits?|back|that|just|then)\b|,)*\s*"
)


def _keyword(words: str) -> str:
    return rf"(?<![\w])(?P<kw>{words})(?P<fill>{_FILL})(?P<run>{_RUN})"


_CVV_RE = re.compile(
    _keyword(
        r"cvv2?|cvc2?|cid|csc|card\s+security\s+code|security\s+code|security\s+number"
        r"|card\s+verification(?:\s+(?:value|code|number))?"
        r"|(?:three|four|3|4)[- ]digit\s+(?:security\s+)?(?:code|number)"
        r"|code\s+on\s+the\s+back(?:\s+of\s+(?:the|my)\s+card)?"
    ),
    re.IGNORECASE,
)
_PIN_RE = re.compile(
    _keyword(
        r"pin(?:\s+(?:number|code))?|passcode|pass\s+code|access\s+code"
        r"|one[- ]time\s+(?:pass)?code|otp|verification\s+code"
    ),
    re.IGNORECASE,
)
# Substrings one of which a text must hold for a keyword's pattern to be tried (a fast path).
_CVV_WORDS = ("cvv", "cvc", "cid", "csc", "security", "verification", "digit", "back")
_PIN_WORDS = ("pin", "pass", "access", "code", "otp", "one")
_SSN_RE = re.compile(
    _keyword(r"ssn|social\s+security(?:\s+number)?|social\s+insurance(?:\s+number)?|sin"),
    re.IGNORECASE,
)
_CARD_WORDED_RE = re.compile(
    _keyword(r"(?:credit\s+|debit\s+)?card\s+(?:number|no\.?|num)|card\s+#"), re.IGNORECASE
)
_PASSWORD_RE = re.compile(
    r"(?i)\b(?P<kw>password|passphrase|pass\s+phrase)(?P<fill>\s*(?:is|was|:|=)\s*)"
    r"(?P<value>(?!\[secret redacted\])\S+)"
)
# Digits said right after a card, in the same sentence, within six words.
_PLACEHOLDERS = "|".join(re.escape(p) for p in (CARD_PLACEHOLDER, CARD_DETAILS_PLACEHOLDER))
_AFTER_CARD_RE = re.compile(
    rf"(?P<kw>{_PLACEHOLDERS})(?P<fill>(?:[\s,;:'-]+[A-Za-z']+){{0,6}}?[\s,;:'-]+)(?P<run>{_RUN})",
    re.IGNORECASE,
)


def _replacer(placeholder: str, low: int, high: int) -> Callable[[re.Match[str]], str]:
    def replace(m: re.Match[str]) -> str:
        groups = _groups(m.string, m.start("run"), m.end("run"))
        if low <= sum(len(g.digits) for g in groups) <= high:
            return f"{m.group('kw')}{m.group('fill')}{placeholder}"
        return m.group(0)

    return replace


def _after_card_replace(m: re.Match[str]) -> str:
    digits = sum(len(g.digits) for g in _groups(m.string, m.start("run"), m.end("run")))
    slashed = "/" in m.group("run")
    if digits in (3, 4) and not slashed:
        return f"{m.group('kw')}{m.group('fill')}{CVV_PLACEHOLDER}"
    if slashed and 3 <= digits <= 6:  # an expiry date, 12/27 or 12/2027
        return f"{m.group('kw')}{m.group('fill')}{CARD_DETAILS_PLACEHOLDER}"
    return m.group(0)


_CVV_SUB = _replacer(CVV_PLACEHOLDER, 3, 4)
_PIN_SUB = _replacer(SECRET_PLACEHOLDER, 4, 8)
_SSN_SUB = _replacer(SSN_PLACEHOLDER, 9, 9)
_CARD_WORDED_SUB = _replacer(CARD_PLACEHOLDER, 12, 19)

# -- IBAN ---------------------------------------------------------------------------------------

_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AL": 28, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22,
    "BI": 27, "BR": 29, "BY": 28, "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DJ": 27,
    "DK": 18, "DO": 28, "EE": 20, "EG": 29, "ES": 24, "FI": 18, "FK": 18, "FO": 18, "FR": 27,
    "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27, "GT": 28, "HR": 21, "HU": 28, "IE": 22,
    "IL": 23, "IQ": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30, "KZ": 20, "LB": 28, "LC": 32,
    "LI": 21, "LT": 20, "LU": 20, "LV": 21, "LY": 25, "MC": 27, "MD": 24, "ME": 22, "MK": 19,
    "MN": 20, "MR": 27, "MT": 31, "MU": 30, "NI": 28, "NL": 18, "NO": 15, "OM": 23, "PK": 24,
    "PL": 28, "PS": 29, "PT": 25, "QA": 29, "RO": 24, "RS": 22, "RU": 33, "SA": 24, "SC": 31,
    "SD": 18, "SE": 24, "SI": 19, "SK": 24, "SM": 27, "SO": 23, "ST": 25, "SV": 28, "TL": 23,
    "TN": 24, "TR": 26, "UA": 29, "VA": 22, "VG": 24, "XK": 20, "YE": 30,
}  # fmt: skip
# A country code and check digits, then up to 30 letters or digits grouped by spaces or dashes.
_IBAN_START = re.compile(r"(?<![\w])[A-Za-z]{2}\d{2}")
_IBAN_BODY = re.compile(r"(?:[ \t]*-?[ \t]*[A-Za-z0-9]){11,30}")
_ALNUM = re.compile(r"[A-Za-z0-9]")


def iban_valid(iban: str) -> bool:
    """The mod-97 check of ISO 13616 on a compact IBAN (no separators)."""
    iban = iban.upper()
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(ch, 36)) for ch in rearranged)
    return int(number) % 97 == 1


def _redact_ibans(text: str) -> str:
    out: list[str] = []
    done = 0
    for head in _IBAN_START.finditer(text):
        if head.start() < done:
            continue
        length = _IBAN_LENGTHS.get(head.group(0)[:2].upper())
        body = _IBAN_BODY.match(text, head.end()) if length is not None else None
        if length is None or body is None:
            continue
        chars = list(_ALNUM.finditer(text, head.end(), body.end()))
        if len(chars) < length - 4:
            continue
        end = chars[length - 5].end()
        if end < len(text) and text[end].isalnum():  # it would end inside a longer word
            continue
        compact = head.group(0) + "".join(c.group(0) for c in chars[: length - 4])
        if not iban_valid(compact):
            continue
        out.append(text[done : head.start()])
        out.append(IBAN_PLACEHOLDER)
        done = end
    if not out:
        return text
    out.append(text[done:])
    return "".join(out)


# -- entry points -------------------------------------------------------------------------------


def redact_secrets(text: str) -> str:
    """Text with card numbers, security codes, PINs, passwords, SSNs and IBANs replaced by
    placeholders; everything else as it was."""
    if not text:
        return text
    lower = text.lower()
    if _DIGITISH.search(text) is not None:
        text = _redact_ibans(text)
        if "card" in lower:
            text = _CARD_WORDED_RE.sub(_CARD_WORDED_SUB, text)
        text = _RUN_RE.sub(_redact_run, text)
        if any(word in lower for word in _CVV_WORDS):
            text = _CVV_RE.sub(_CVV_SUB, text)
        if any(word in lower for word in _PIN_WORDS):
            text = _PIN_RE.sub(_PIN_SUB, text)
        if "ssn" in lower or "social" in lower or "sin" in lower:
            text = _SSN_RE.sub(_SSN_SUB, text)
        if CARD_PLACEHOLDER in text:
            for _ in range(2):  # the expiry, then the code, said after the card
                text = _AFTER_CARD_RE.sub(_after_card_replace, text)
    if "pass" not in lower:
        return text
    return _PASSWORD_RE.sub(_password_sub, text)


def _password_sub(m: re.Match[str]) -> str:
    return f"{m.group('kw')}{m.group('fill')}{SECRET_PLACEHOLDER}"


def contains_secret(text: str) -> bool:
    return redact_secrets(text) != text


_SENTENCE_END = re.compile(r"[.!?](?=\s)")


class StreamRedactor:
    """`redact_secrets` for a reply produced piece by piece (streamed tokens).

    Text is passed on as it comes until a piece holds something a secret could be made of (a
    digit, a digit word); from there it is held back until the sentence ends or two words in a
    row are neither digits nor digit words, then passed on redacted, with the sentence's earlier
    words as context ("your PIN is" + "1234"). Only sentences with numbers in them wait, and
    only as long as the number is being said. `finish()` returns what is still held.
    """

    __slots__ = ("_held", "_sentence")

    def __init__(self) -> None:
        self._sentence = ""  # what was passed on of the current sentence (redacted)
        self._held = ""

    def feed(self, piece: str) -> str:
        """What of the reply can be passed on now that `piece` came."""
        if not self._held and _DIGITISH.search(piece) is None:
            return self._pass(piece)
        self._held += piece
        out = ""
        ends = [m.end() for m in _SENTENCE_END.finditer(self._held)]
        if ends:  # whole sentences: redacted and passed on
            done, self._held = self._held[: ends[-1]], self._held[ends[-1] :]
            out = self._release(done)
            self._sentence = ""
            if _DIGITISH.search(self._held) is None:
                rest, self._held = self._held, ""
                return out + self._pass(rest)
        words = self._held.split()
        number_over = len(words) >= 3 and not any(_DIGITISH.search(w) for w in words[-2:])
        if number_over and self._held[-1:].isspace():  # and the last word is complete
            done, self._held = self._held, ""
            out += self._release(done)
        return out

    def finish(self) -> str:
        done, self._held = self._held, ""
        return self._release(done) if done else ""

    def _release(self, held: str) -> str:
        whole = redact_secrets(self._sentence + held)
        out = (
            whole[len(self._sentence) :]
            if whole.startswith(self._sentence)
            else (redact_secrets(held))
        )
        return self._pass(out)

    def _pass(self, text: str) -> str:
        self._sentence += text
        return text


def redact_value(value: Any) -> Any:
    """`redact_secrets` over every text in a JSON-like value (keys too, at any depth): a tool's
    arguments, which the model fills in from what the caller said. Numbers, flags and nulls as
    they are; a tuple comes back as a list."""
    if isinstance(value, str):
        return redact_secrets(value)
    if isinstance(value, dict):
        return {redact_secrets(str(k)): redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact_value(v) for v in value]
    return value
