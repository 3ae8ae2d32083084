"""Token amounts for people: exact decimal text <-> integer units (no floats, no web3 import)."""

from __future__ import annotations

from decimal import ROUND_DOWN, Decimal, InvalidOperation

from r1os.errors import ChainError

R1_DECIMALS = 18
USDC_DECIMALS = 6
ETH_DECIMALS = 18


def parse_units(text: str | int | Decimal, decimals: int) -> int:
    """'12.5' -> 12500000000000000000 for 18 decimals; refuses more precision than the token has."""
    try:
        value = Decimal(str(text))
    except InvalidOperation:
        raise ChainError(f"not an amount: {text!r}") from None
    if not value.is_finite():
        raise ChainError(f"not an amount: {text!r}")
    units = value * (Decimal(10) ** decimals)
    if value < 0 or units != units.to_integral_value():
        raise ChainError(f"invalid amount {text!r}: must be >= 0 with at most {decimals} decimals")
    return int(units)


def format_units(units: int, decimals: int) -> str:
    """12500000000000000000 -> '12.5' for 18 decimals (exact)."""
    value = (Decimal(units) / (Decimal(10) ** decimals)).quantize(
        Decimal(1) / (Decimal(10) ** decimals), rounding=ROUND_DOWN
    )
    text = format(value, "f")
    return text.rstrip("0").rstrip(".") if "." in text else text
