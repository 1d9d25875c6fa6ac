"""Wallet pass builders (Apple .pkpass, Google Wallet objects), a library with no Flask or SQLAlchemy inside.

The builders arrive with the Apple and Google Wallet issues; this package holds the place the layout fixes.
"""

from __future__ import annotations

__all__: list[str] = []
