"""Money as integer minor units of an ISO 4217 currency, and its decimal-string form on the wire."""

from __future__ import annotations

import re

from app.domain.errors import ValidationError

# ISO 4217 minor-unit exponents for the currencies we accept. Most have two decimals.
_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(
        "AED AUD BRL CAD CHF CNY CZK DKK EUR GBP HKD HUF ILS INR MAD MXN MYR NOK NZD PHP PLN "
        "RON SAR SEK SGD THB TRY TWD USD ZAR".split(),
        2,
    ),
    **dict.fromkeys("CLP ISK JPY KRW VND XAF XOF".split(), 0),
    **dict.fromkeys("BHD JOD KWD OMR TND".split(), 3),
}

# Larger amounts are a typo or an attack, not a basket: refuse them rather than overflow a column.
MAX_AMOUNT_MINOR = 10**9

# [0-9] rather than \d, which would accept digits of every script ("١٢").
_DECIMAL = re.compile(r"(?P<units>[0-9]{1,12})(?:\.(?P<fraction>[0-9]+))?")


def supported_currencies() -> list[str]:
    return sorted(_EXPONENTS)


def currency_exponent(currency: str) -> int:
    try:
        return _EXPONENTS[currency]
    except KeyError:
        raise ValidationError(
            f"Unknown currency {currency!r}; use an ISO 4217 code such as EUR, USD or GBP.", field="currency"
        ) from None


def parse_amount(value: object, currency: str, field: str = "amount") -> int:
    """Parse a decimal string such as "12.50" into minor units; refuse floats, signs and extra decimals."""
    if not isinstance(value, str):
        raise ValidationError(
            f"{field} must be a decimal string such as \"12.50\", not {type(value).__name__}.", field=field
        )
    match = _DECIMAL.fullmatch(value)
    if match is None:
        raise ValidationError(f"{field} {value!r} is not a positive decimal such as \"12.50\".", field=field)
    exponent = currency_exponent(currency)
    fraction = match.group("fraction") or ""
    if len(fraction) > exponent:
        raise ValidationError(
            f"{field} {value!r} has more decimals than {currency} allows ({exponent}).", field=field
        )
    scale: int = 10**exponent
    minor = int(match.group("units")) * scale + int(fraction.ljust(exponent, "0") or "0")
    if minor <= 0:
        raise ValidationError(f"{field} must be more than zero.", field=field)
    if minor > MAX_AMOUNT_MINOR:
        raise ValidationError(
            f"{field} {value!r} is larger than the most one purchase may be "
            f"({format_amount(MAX_AMOUNT_MINOR, currency)}).",
            field=field,
        )
    return minor


def format_amount(minor: int, currency: str) -> str:
    """Minor units back to the wire form: 1250 EUR -> "12.50"."""
    exponent = currency_exponent(currency)
    sign = "-" if minor < 0 else ""
    scale: int = 10**exponent
    units, fraction = divmod(abs(minor), scale)
    return f"{sign}{units}.{fraction:0{exponent}d}" if exponent else f"{sign}{units}"
