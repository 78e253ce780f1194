"""Card and account validators with their test values."""

from __future__ import annotations

# Public test numbers from the payment providers' documentation.
TEST_CARDS = (
    "4111 1111 1111 1111",
    "5555-5555-5555-4444",
    "378282246310005",
)
# Fails the Luhn check on purpose: must not be reported.
INVALID_CARD = "4111 1111 1111 1112"
# Fails the mod-97 check on purpose.
INVALID_IBAN = "GB00 WEST 1234 5698 7654 32"


def luhn_ok(digits: str) -> bool:
    """Whether digits pass the Luhn check."""
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = int(char) * (2 if position % 2 else 1)
        total += value - 9 if value > 9 else value
    return total % 10 == 0
