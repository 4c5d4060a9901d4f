"""Secrets are redacted before anything is stored, embedded or sent to the model; ordinary
numbers are kept. Table-driven: every written and spoken form below, and as many that must stay."""

from __future__ import annotations

import re
import timeit

import pytest

from shared.redaction import (
    StreamRedactor,
    contains_secret,
    iban_valid,
    is_card_number,
    luhn_valid,
    redact_secrets,
    redact_value,
)

REDACTED: list[tuple[str, str]] = [
    ("my card is 4111 1111 1111 1111 thanks", "my card is [card number redacted] thanks"),
    ("4111-1111-1111-1111", "[card number redacted]"),
    ("4111.1111.1111.1111", "[card number redacted]"),
    ("4111  1111  1111  1111", "[card number redacted]"),
    ("4111 - 1111 - 1111 - 1111", "[card number redacted]"),
    ("4111111111111111", "[card number redacted]"),
    ("card: 5500 0055 5555 5559.", "card: [card number redacted]."),
    ("amex 3782 822463 10005", "amex [card number redacted]"),
    ("378282246310005", "[card number redacted]"),
    ("discover 6011 0009 9013 9424", "discover [card number redacted]"),
    ("diners 3056 930902 5904", "diners [card number redacted]"),
    ("jcb 3530 1113 3330 0000", "jcb [card number redacted]"),
    ("mastercard 2223 0031 2200 3222", "mastercard [card number redacted]"),
    ("visa thirteen 4222222222222", "visa thirteen [card number redacted]"),
    ("4111 1111 1111 1111 123", "[card number redacted] [security code redacted]"),
    ("4111 1111 1111 1111 1234", "[card number redacted] [security code redacted]"),
    ("41111111111111111234", "[card number redacted] [security code redacted]"),
    ("it's 4111 1111 1111 1111, 737", "it's [card number redacted] [security code redacted]"),
    (
        "4111 1111 1111 1111. 123 is the code",
        "[card number redacted] [security code redacted] is the code",
    ),
    (
        "my card is 4111 1111 1111 1111 and the code is 123",
        "my card is [card number redacted] and the code is [security code redacted]",
    ),
    (
        "4111 1111 1111 1111 expiry 12/27 cvv 123",
        "[card number redacted] expiry [card details redacted] cvv [security code redacted]",
    ),
    ("4111 1111 1111 1111 12/27 123", "[card number redacted] [card details redacted]"),
    (
        "card 5500 0055 5555 5559 and 4111 1111 1111 1111",
        "card [card number redacted] and [card number redacted]",
    ),
    ("4111 1111 1111 1111 5500 0055 5555 5559", "[card number redacted] [card number redacted]"),
    ("four one one one one one one one one one one one one one one one", "[card number redacted]"),
    ("Four One One One One One One One One One One One One One One One", "[card number redacted]"),
    (
        "four-one-one-one, one-one-one-one, one-one-one-one, one-one-one-one",
        "[card number redacted]",
    ),
    (
        "four one one one, one one one one, one one one one, one one one one, one two three",
        "[card number redacted] [security code redacted]",
    ),
    (
        "it's four triple one, double one one one, one one one one, one one one one",
        "it's [card number redacted]",
    ),
    (
        "five five oh oh oh oh five five five five five five five five five nine",
        "[card number redacted]",
    ),
    (
        "five five zero zero zero zero five five five five five five five five five nine",
        "[card number redacted]",
    ),
    ("4111 one one one one 1111 one one one one", "[card number redacted]"),
    ("my card number is 4111 1111 1111 1112", "my card number is [card number redacted]"),
    ("credit card number: 5500 0055 5555 5550", "credit card number: [card number redacted]"),
    ("the CVV is 123", "the CVV is [security code redacted]"),
    ("cvv-123", "cvv-[security code redacted]"),
    ("CVC: 9876", "CVC: [security code redacted]"),
    ("security code one two three", "security code [security code redacted]"),
    (
        "the three digit code on the back is 737",
        "the three digit code on the back is [security code redacted]",
    ),
    (
        "the code on the back of the card is 737",
        "the code on the back of the card is [security code redacted]",
    ),
    ("card verification value 4321", "card verification value [security code redacted]"),
    ("PIN number is 1234", "PIN number is [secret redacted]"),
    ("pin 1234", "pin [secret redacted]"),
    ("my pin is one two three four", "my pin is [secret redacted]"),
    ("PIN: 4321", "PIN: [secret redacted]"),
    ("pin code 987654", "pin code [secret redacted]"),
    ("the PIN for my card is 2580", "the PIN for my card is [secret redacted]"),
    ("my passcode is 246810", "my passcode is [secret redacted]"),
    ("password: hunter2", "password: [secret redacted]"),
    ("password is swordfish", "password is [secret redacted]"),
    ("SSN 123-45-6789", "SSN [ssn redacted]"),
    ("it's 123-45-6789", "it's [ssn redacted]"),
    ("my number is 123 45 6789", "my number is [ssn redacted]"),
    ("ssn 123456789", "ssn [ssn redacted]"),
    ("my social security number is 123456789", "my social security number is [ssn redacted]"),
    (
        "social security number is one two three four five six seven eight nine",
        "social security number is [ssn redacted]",
    ),
    ("IBAN GB82 WEST 1234 5698 7654 32", "IBAN [iban redacted]"),
    ("gb82 west 1234 5698 7654 32", "[iban redacted]"),
    ("GB82-WEST-1234-5698-7654-32", "[iban redacted]"),
    ("GB82WEST12345698765432", "[iban redacted]"),
    ("de89 3704 0044 0532 0130 00 thanks", "[iban redacted] thanks"),
    ("DE89370400440532013000", "[iban redacted]"),
    ("my iban is fr14 2004 1010 0505 0001 3m02 606 ok", "my iban is [iban redacted] ok"),
    # the edges of each rule (each case below fails if that edge moves)
    ("card 41111111111111111 ok", "card [card number redacted]1 ok"),
    ("4111 1111111111111", "[card number redacted]1"),  # ends inside a 13-digit group
    ("4222 2222 2222 2999999999999", "[card number redacted]999999999999"),  # a digit into it
    ("press 1, 4111 1111 1111 1111", "press 1, [card number redacted]"),
    ("4111 1111 1111 1111 2024051799881", "[card number redacted] 2024051799881"),
    ("card 4111111111111111 5 times", "card [card number redacted] 5 times"),
    ("4222222222222222224", "[card number redacted]"),  # Visa 19 (its first 13 are a card too)
    (
        "four two two two two two two two two two two two two two two two two two four",
        "[card number redacted]",
    ),
    (
        "four one one one, one one one one, one one one one, one one double one",
        "[card number redacted]",
    ),
    (
        "four one one one, one one one one, one one one one, one triple one",
        "[card number redacted]",
    ),
    ("4111 1111 1111 1111 1227 1234", "[card number redacted] [card details redacted]"),
    ("4111 1111 1111 1111 555 123 4567", "[card number redacted] 555 123 4567"),  # a phone
    ("4111 1111 1111 1111 12", "[card number redacted] 12"),  # two digits: not a code
    ("4111 1111 1111 1111 paid on 1/05/2024", "[card number redacted] paid on 1/05/2024"),
    ("pin 24681357", "pin [secret redacted]"),  # eight digits, the longest PIN
    ("card number 1234 5678 9012", "card number [card number redacted]"),  # twelve: a card still
    ("card number 1234 5678 9012 3456 789", "card number [card number redacted]"),  # nineteen
    ("4111 1111 1111 1111 for 1/2 the price", "[card number redacted] for 1/2 the price"),
    (  # five digits after a card: not a code
        "4111 1111 1111 1111 and my zip is 90210",
        "[card number redacted] and my zip is 90210",
    ),
    ("4111111111111111123 45 6789", "[card number redacted][ssn redacted]"),
    (
        "4111 1111 1111 1111 and the code is 1234",
        "[card number redacted] and the code is [security code redacted]",
    ),
    ("4111 1111 1111 1111 expiry 1/27", "[card number redacted] expiry [card details redacted]"),
    (
        "4111 1111 1111 1111 expiry 12/2027",
        "[card number redacted] expiry [card details redacted]",
    ),
    (
        "card 4111 1111 1111 1111 expires 12/27 code 737",
        "card [card number redacted] expires [card details redacted] code [security code redacted]",
    ),
    (
        "GB82 WE ST12 3456 9876 5432 or DE89 3704 0044 0532 0130 00",
        "[iban redacted] or [iban redacted]",
    ),
    ("order AB12, iban GB82 WEST 1234 5698 7654 32", "order AB12, iban [iban redacted]"),
    (
        "account DE12 9876 5432 101, iban GB82 WEST 1234 5698 7654 32",
        "account DE12 9876 5432 101, iban [iban redacted]",
    ),
    (
        "ref DE893704004405320130001, iban GB82 WEST 1234 5698 7654 32",
        "ref DE893704004405320130001, iban [iban redacted]",
    ),
    (
        "not GB00 WEST 1234 5698 7654 32 but GB82 WEST 1234 5698 7654 32",
        "not GB00 WEST 1234 5698 7654 32 but [iban redacted]",
    ),
]

KEPT: list[str] = [
    "my account number is 4411",
    "order 1234567890123 please",
    "my order number is 20240517123456",
    "order #A-55123",
    "order number 7788 1234",
    "tracking 9400 1000 0000 0000 0000 00",
    "tracking number 1Z999AA10123456784",
    "call me on +1 555 123 4567",
    "my number is (555) 123-4567",
    "you can reach me at 555-123-4567 or 555-987-6543",
    "+44 20 7946 0958",
    "the total was 1,234.56 dollars",
    "it costs $19.99",
    "that's 4,111.11 euros",
    "my zip is 90210",
    "meet at 10:30 on 12/05/2024",
    "the appointment is at 3 pm on March 5th",
    "at 09:45 tomorrow",
    "I was born on 1990-04-12",
    "I'd like two tickets for five o'clock",
    "three adults and one child",
    "one two three, testing",
    "I need 12 boxes of 24",
    "we have 1000 units",
    "room 1204",
    "flight BA 2490 at 14:05",
    "my card ends in 1111",
    "the last four digits are 1111",
    "version 4.1.1 of the app",
    "I'm 42 years old",
    "apartment 5, 123 Main Street",
    "the code on my voucher is SAVE20",
    "my zip code is 10001",
    "policy number 12345678",
    "reference 2024-0517-88",
    "member id 1234 5678 9012",
    "extension 2145",
    "oh wait, zero one two",
    "The pin on the map is near exit 12",
    "I lost my pin and order 12345 hasn't arrived",
    "Give me a minute, one second",
    "the invoice is 4111 1111",
    "123-456-7890",
    "it's 666-12-3456",
    "1 2 3 4 5 6 7 8 9 10 11 12",
    "at2020 is a product code",
    # the edges of each rule, one step outside
    "triple one, double two, 6789",  # 3-2-4 spoken: only written groups look like an SSN
    "order 123456789 shipped",
    "901-23-4567",  # no SSN starts with 9
    "pin 123",
    "pin 123456789",
    "ssn 12345678",
    "cvv 12",
    "the security code is 12345",
    "ssn 1234567890",
    "card number 12345678901",
    "card number 12345678901234567890",
    "model DE12 is on sale",
    "code DE00 1234 5678 9012 3456 7.",  # one character short of a German IBAN
]

_WORDS = {
    "zero": "0",
    "oh": "0",
    "one": "1",
    "two": "2",
    "three": "3",
    "four": "4",
    "five": "5",
    "six": "6",
    "seven": "7",
    "eight": "8",
    "nine": "9",
}


def spoken_digits(text: str) -> str:
    """Every digit of a text, written or spoken as a word, in order."""
    words = re.findall(r"[a-z]+|\d", text.lower())
    return "".join(_WORDS.get(w, w) for w in words if w.isdigit() or w in _WORDS)


def test_the_tables_are_big_enough() -> None:
    assert len(REDACTED) >= 40 and len(KEPT) >= 40
    assert len({t for t, _ in REDACTED}) == len(REDACTED) and len(set(KEPT)) == len(KEPT)


@pytest.mark.parametrize(("text", "expected"), REDACTED)
def test_secrets_are_redacted(text: str, expected: str) -> None:
    out = redact_secrets(text)
    assert out == expected
    assert "redacted]" in out
    assert redact_secrets(out) == out  # redacting twice changes nothing


@pytest.mark.parametrize("text", KEPT)
def test_ordinary_numbers_are_kept(text: str) -> None:
    assert redact_secrets(text) == text


def test_no_digit_of_a_card_or_its_code_is_left() -> None:
    for text, _ in REDACTED:
        out = spoken_digits(redact_secrets(text))
        for secret in ("4111111111111111", "5500005555555559", "378282246310005", "123456789"):
            assert secret not in out, text


def test_card_checks() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
    assert is_card_number("4111111111111111") and is_card_number("378282246310005")
    assert not is_card_number("1234567890123452")  # Luhn-valid, but no network starts with 1
    assert iban_valid("GB82WEST12345698765432") and not iban_valid("GB82WEST12345698765433")


# The IBAN lengths of the SWIFT IBAN registry, restated by length (a second, independent copy).
IBAN_REGISTRY = {
    15: "NO",
    16: "BE",
    18: "DK FI FK FO GL NL SD",
    19: "MK SI",
    20: "AT BA EE KZ LT LU MN XK",
    21: "CH HR LI LV",
    22: "BG BH CR DE GB GE IE ME RS VA",
    23: "AE GI IL IQ OM SO TL",
    24: "AD CZ ES MD PK RO SA SE SK TN VG",
    25: "LY PT ST",
    26: "IS TR",
    27: "BI DJ FR GR IT MC MR SM",
    28: "AL AZ BY CY DO GT HU LB NI PL SV",
    29: "BR EG PS QA UA",
    30: "JO KW MU YE",
    31: "MT SC",
    32: "LC",
    33: "RU",
}


def _iban(country: str, length: int) -> str:
    """A valid IBAN of that country and length: digits for the account, mod-97 check digits."""
    bban = "".join(str((i * 7 + 3) % 10) for i in range(length - 4))
    as_number = int(bban + "".join(str(ord(c) - 55) for c in country) + "00")
    return f"{country}{98 - as_number % 97:02d}{bban}"


def test_every_registry_country_iban_is_redacted_at_its_length() -> None:
    countries = [(c, n) for n, cs in IBAN_REGISTRY.items() for c in cs.split()]
    assert len(countries) == 88
    for country, length in countries:
        iban = _iban(country, length)
        assert iban_valid(iban) and len(iban) == length
        spaced = " ".join(iban[i : i + 4] for i in range(0, length, 4))
        for form in (iban, spaced):
            assert redact_secrets(f"iban {form} thanks") == "iban [iban redacted] thanks", form


def test_contains_secret() -> None:
    assert contains_secret("my pin is 1234") and contains_secret("GB82WEST12345698765432")
    assert not contains_secret("order 1234 please") and not contains_secret("")


@pytest.mark.parametrize(
    ("pieces", "passed"),
    [
        # whole sentences go at once; what follows without a number goes too
        (["Call 1. Or 2. Bye"], ["Call 1. Or 2. Bye"]),
        (["Call 1. Bye"], ["Call 1. Bye"]),
        # two words in a row without digits, then a space: the number is over
        (["1234 and so "], ["1234 and so "]),
        (["a b 12 c d "], ["a b 12 c d "]),
        (["code 1234 ", "and more words "], ["", "code 1234 and more words "]),
        # held while the number may go on, released redacted with its sentence
        (["pin is 1234", " and so", " on "], ["", "", "pin is [secret redacted] and so on "]),
        (["12 c d"], [""]),  # the last word may not be complete
        (["12 3 c "], [""]),  # one word after a digit: the number may go on
        (["my card is 4111 ", "1111 1111 1111 ", "ok"], ["", "", ""]),
    ],
)
def test_a_stream_passes_text_on_as_soon_as_the_number_is_over(
    pieces: list[str], passed: list[str]
) -> None:
    redactor = StreamRedactor()
    assert [redactor.feed(p) for p in pieces] == passed
    whole = "".join(pieces)
    assert "".join(passed) + redactor.finish() == redact_secrets(whole)


def test_a_streamed_reply_is_redacted_across_tokens() -> None:
    reply = (
        "Sure, I have your card as 4111 1111 1111 1111 and the code 123. Anything else? "
        "Your PIN is one two three four, noted."
    )
    words = reply.split(" ")
    tokens = [w + " " for w in words[:-1]] + [words[-1]]
    redactor = StreamRedactor()
    passed = [redactor.feed(t) for t in tokens] + [redactor.finish()]
    assert (
        "".join(passed)
        == redact_secrets(reply)
        == (
            "Sure, I have your card as [card number redacted] and the code "
            "[security code redacted]. Anything else? Your PIN is [secret redacted], noted."
        )
    )
    assert passed[0] == "Sure, "  # text without numbers is passed on at once
    # split inside a group, too
    redactor = StreamRedactor()
    pieces = ["card 41", "11 11", "11 1111 11", "11 th", "anks"]
    out = "".join(redactor.feed(p) for p in pieces) + redactor.finish()
    assert out == "card [card number redacted] thanks"


def test_fast_enough_for_every_turn() -> None:
    ordinary = (
        "Hi, I'd like to check on my order number 20240517 from last Tuesday at 10:30, it was two "
        "items for $1,234.56 and I was told it would arrive in five to seven days. My zip is "
        "90210 and you can call me back on +1 555 123 4567 if there is any problem. Thanks, bye."
    )
    secrets = (
        "Sure, my card is four one one one one one one one one one one one one one one one and "
        "the security code is one two three, expiry 12/27, and my pin is 4321. Also my IBAN is "
        "gb82 west 1234 5698 7654 32 and my ssn 123-45-6789 and the order number is 55512 ok"
    )
    for text in (ordinary, secrets):
        assert 250 <= len(text) <= 320
        runs = 200
        per_call = min(timeit.repeat(lambda t=text: redact_secrets(t), number=runs, repeat=3))
        assert per_call / runs < 0.001, f"{per_call / runs * 1e6:.0f} us per utterance"


def test_redact_value_redacts_every_text_at_any_depth_and_keeps_the_rest() -> None:
    card, placeholder = "4111 1111 1111 1111", "[card number redacted]"
    value = {
        "query": f"card {card} fees",
        "limit": 2,
        "exact": True,
        "none": None,
        f"note {card}": [f"pin is 1234 and card {card}", 3.5, ("pin is 9876",)],
        "nested": {"deeper": [{"fact": f"my card is {card}"}]},
    }
    assert redact_value(value) == {
        "query": f"card {placeholder} fees",
        "limit": 2,
        "exact": True,
        "none": None,
        f"note {placeholder}": [
            f"pin is [secret redacted] and card {placeholder}",
            3.5,
            ["pin is [secret redacted]"],
        ],
        "nested": {"deeper": [{"fact": f"my card is {placeholder}"}]},
    }
    assert redact_value("") == "" and redact_value(7) == 7
