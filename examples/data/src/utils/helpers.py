"""Small helpers without any personal data."""

from __future__ import annotations

import datetime

EPOCH = datetime.date(1970, 1, 1)
RELEASES = ("1.0.0", "1.2.3", "2.0.0-rc.1")
MAX_ITEMS = 1234567890123


def days_since_epoch(day: datetime.date) -> int:
    """Whole days between the epoch and `day`."""
    return (day - EPOCH).days
