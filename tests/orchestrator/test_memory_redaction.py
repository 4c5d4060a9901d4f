"""Secrets are redacted before anything is stored or embedded; ordinary numbers are kept."""

from __future__ import annotations

import pytest

from orchestrator.memory.redaction import luhn_valid, redact_secrets


@pytest.mark.parametrize(
    "card",
    [
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "5500005555555559",
        "378282246310005",  # Amex, 15 digits
        "6011 0009 9013 9424",
    ],
)
def test_luhn_valid_card_numbers_are_redacted(card: str) -> None:
    out = redact_secrets(f"my card is {card} thanks")
    assert out == "my card is [card number redacted] thanks"


@pytest.mark.parametrize(
    "text",
    [
        "my account number is 4411",
        "order 1234567890123 please",  # 13 digits failing Luhn: not a card
        "call me on +1 555 123 4567",
        "the total was 1,234.56 dollars",
        "my zip is 90210",
    ],
)
def test_ordinary_numbers_are_kept(text: str) -> None:
    assert redact_secrets(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the CVV is 123", "the CVV is [security code redacted]"),
        ("security code: 9876", "security code: [security code redacted]"),
        ("SSN 123-45-6789", "SSN [ssn redacted]"),
        ("my social security number is 123456789", "my social security number is [ssn redacted]"),
        ("IBAN GB82 WEST 1234 5698 7654 32", "IBAN [iban redacted]"),
        ("my PIN is 4321", "my PIN is [secret redacted]"),
        ("password: hunter2", "password: [secret redacted]"),
    ],
)
def test_security_codes_ssn_iban_and_spoken_secrets_are_redacted(text: str, expected: str) -> None:
    assert redact_secrets(text) == expected


def test_luhn() -> None:
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")
