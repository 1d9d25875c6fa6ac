"""How long to wait before trying a wallet update again (an APNs push, a Google Wallet patch)."""

from __future__ import annotations

import datetime as dt

MAX_ATTEMPTS = 8
FIRST_RETRY = dt.timedelta(seconds=30)
LONGEST_RETRY = dt.timedelta(hours=1)


def retry_delay(attempts: int) -> dt.timedelta:
    """The wait after `attempts` failed tries: doubling from 30 s, capped at an hour."""
    delay: dt.timedelta = FIRST_RETRY * 2 ** (attempts - 1)
    return min(delay, LONGEST_RETRY)
