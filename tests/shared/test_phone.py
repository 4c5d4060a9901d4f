"""One phone-number normaliser for the whole product (`shared.phone`): lenient for the numbers
providers send, strict for the numbers we are asked to dial."""

from __future__ import annotations

import pytest

from shared.phone import InvalidPhone, digits_only, parse_e164, to_e164


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+14155550100", "+14155550100"),  # Twilio, Connect
        ("14155550100", "+14155550100"),  # Vonage: no '+'
        (14155550100, "+14155550100"),
        ("+1 (415) 555-0100", "+14155550100"),  # a bridge or a person
        ("+44 20 7183 8750", "+442071838750"),
        ("+15550001111", "+15550001111"),  # fictional range: possible, not valid
    ],
)
def test_what_providers_send_becomes_one_form(raw: object, expected: str) -> None:
    assert to_e164(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "client:alice",
        "sip:bob@example.com",
        "anonymous",
        "Unknown",
        "",
        "0201234567",
        "12345",
        None,
        True,
    ],
)
def test_what_is_not_an_international_number_is_none(raw: object) -> None:
    assert to_e164(raw) is None


@pytest.mark.parametrize(
    ("number", "message"),
    [
        ("4155550100", "not a phone number"),
        ("+1 415 555 0100", "not in E.164 format .* write it as \\+14155550100"),
        ("+1415555", "not a valid phone number"),
        ("+abc", "not a phone number"),
        ("", "not a phone number"),
    ],
)
def test_numbers_to_dial_are_refused_with_a_clear_message(number: str, message: str) -> None:
    with pytest.raises(InvalidPhone, match=message):
        parse_e164(number)


def test_numbers_to_dial_come_back_in_e164() -> None:
    assert parse_e164("+14155550100") == "+14155550100"
    assert parse_e164("+442071838750") == "+442071838750"
    assert digits_only("+14155550100") == "14155550100"
