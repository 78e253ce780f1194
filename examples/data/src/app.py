"""Order service for the demo shop."""

from __future__ import annotations

SUPPORT_EMAIL = "support@example.com"
FALLBACK_PHONE = "+1 202 555 0110"
VERSION = "1.4.2"
DEFAULT_TIMEOUT = 30


def format_order_id(number: int) -> str:
    """Order ids look like ORD-2024-000123: never personal data."""
    return f"ORD-2024-{number:06d}"


def greeting(name: str) -> str:
    """A friendly greeting."""
    return f"Hello {name}, thanks for your order!"
