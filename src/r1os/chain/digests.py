"""The messages oracles sign for the chain, byte for byte what the contracts rebuild.

Both are EIP-191 `personal_sign` over a 32-byte keccak hash, so any Ethereum wallet or `eth_account`
(`encode_defunct(primitive=inner)`) makes the same signature; signatures are 65 bytes r||s||v.

- availability: keccak(node 20 bytes ++ uint256 first_epoch ++ uint256 last_epoch ++ 1 byte per epoch)
- PoAI attestation: keccak(escrow 20 bytes ++ uint256 job_id ++ uint256 epoch ++ one 32-byte word per
  node, the address left-padded with zeros: Solidity's abi.encodePacked of an address[])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from r1os.errors import ChainError
from r1os.identity import NodeKey, eip191_digest, keccak256, normalize_address

MAX_EPOCHS_PER_CLAIM = 1080
"""The contracts take at most this many availability bytes in one claim."""


def _addr(address: str) -> bytes:
    try:
        return bytes.fromhex(normalize_address(address)[2:])
    except Exception as exc:
        raise ChainError(f"invalid address {address!r}: {exc}") from None


def _u256(value: int) -> bytes:
    if not 0 <= value < 2**256:
        raise ChainError(f"{value} does not fit in uint256")
    return value.to_bytes(32, "big")


def availability_bytes(availabilities: Iterable[int] | bytes) -> bytes:
    """One byte per epoch (0..255); refuses out-of-range values instead of wrapping them."""
    if isinstance(availabilities, bytes | bytearray):
        data = bytes(availabilities)
    else:
        values = list(availabilities)
        bad = [v for v in values if not 0 <= int(v) <= 255]
        if bad:
            raise ChainError(f"availability values must be 0..255, got {bad[:3]}")
        data = bytes(int(v) for v in values)
    if not data:
        raise ChainError("a claim needs at least one epoch of availability")
    if len(data) > MAX_EPOCHS_PER_CLAIM:
        raise ChainError(f"at most {MAX_EPOCHS_PER_CLAIM} epochs per claim, got {len(data)}")
    return data


def availability_hash(node: str, first_epoch: int, availabilities: Iterable[int] | bytes) -> bytes:
    """The inner keccak hash over a node's availability for epochs first..first+len-1."""
    data = availability_bytes(availabilities)
    last_epoch = first_epoch + len(data) - 1
    return keccak256(_addr(node) + _u256(first_epoch) + _u256(last_epoch) + data)


def availability_digest(node: str, first_epoch: int, availabilities: Iterable[int] | bytes) -> bytes:
    """The EIP-191 digest an oracle signs (what `ecrecover` sees on-chain)."""
    return eip191_digest(availability_hash(node, first_epoch, availabilities))


def attestation_hash(escrow: str, job_id: int, epoch: int, nodes: Sequence[str]) -> bytes:
    """The inner keccak hash over a PoAI attestation: which nodes served a job in an epoch."""
    words = b"".join(bytes(12) + _addr(n) for n in nodes)
    return keccak256(_addr(escrow) + _u256(job_id) + _u256(epoch) + words)


def attestation_digest(escrow: str, job_id: int, epoch: int, nodes: Sequence[str]) -> bytes:
    return eip191_digest(attestation_hash(escrow, job_id, epoch, nodes))


def _key(key: NodeKey | str | bytes) -> NodeKey:
    if isinstance(key, NodeKey):
        return key
    return NodeKey(key) if isinstance(key, bytes) else NodeKey.from_hex(key)


def sign_availability(
    key: NodeKey | str | bytes, node: str, first_epoch: int, availabilities: Iterable[int] | bytes
) -> bytes:
    """An oracle's 65-byte signature over a node's availability."""
    return _key(key).sign_digest(availability_digest(node, first_epoch, availabilities))


def sign_attestation(
    key: NodeKey | str | bytes, escrow: str, job_id: int, epoch: int, nodes: Sequence[str]
) -> bytes:
    """An oracle's 65-byte signature over a PoAI attestation."""
    return _key(key).sign_digest(attestation_digest(escrow, job_id, epoch, nodes))
