"""EIP-55 addresses made by r1os itself (not eth_utils, which a node does not import), checked against
eth_utils as the reference."""

from __future__ import annotations

from eth_utils.address import to_checksum_address as reference
from hypothesis import given
from hypothesis import strategies as st

from r1os.identity import normalize_address
from r1os.identity._keys import to_checksum_address


@given(st.binary(min_size=20, max_size=20))
def test_checksum_matches_eth_utils(raw: bytes) -> None:
    expected = reference(raw)
    assert to_checksum_address(raw) == expected
    assert to_checksum_address("0x" + raw.hex()) == expected
    assert normalize_address("0x" + raw.hex().upper()) == expected
    assert normalize_address(expected) == expected


def test_eip55_examples() -> None:
    # the examples of EIP-55 itself
    for address in (
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ):
        assert to_checksum_address(address.lower()) == address
