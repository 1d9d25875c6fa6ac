"""URL converters."""

from __future__ import annotations

from werkzeug.routing import BaseConverter


class DatabaseIdConverter(BaseConverter):
    """A row id in a URL: ASCII digits only, and small enough for a BIGINT.

    Werkzeug's `int` converter matches `\\d`, which takes Arabic-Indic or fullwidth digits too, and has no upper
    bound, so a 40-digit id would reach the database and fail there. Anything else here is simply a 404.
    """

    regex = r"[1-9][0-9]{0,17}"

    def to_python(self, value: str) -> int:
        return int(value)

    def to_url(self, value: int) -> str:
        return str(value)
