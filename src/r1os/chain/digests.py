"""The messages oracles sign for the chain, byte for byte what the contracts rebuild.

Both are EIP-191 `personal_sign` over a 32-byte keccak hash, so any Ethereum wallet or `eth_account`
(`encode_defunct(primitive=inner)`) makes the same signature; signatures are 65 bytes r||s||v.

- availability: keccak(node 20 bytes ++ uint256 first_epoch ++ uint256 last_epoch ++ 1 byte per epoch)
- PoAI attestation: keccak(escrow 20 bytes ++ uint256 job_id ++ uint256 epoch ++ one 32-byte word per
  node, the address left-padded with zeros: Solidity's abi.encodePacked of an address[])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pydantic import BaseModel, Field

from r1os.errors import ChainError
from r1os.identity import NodeKey, eip191_digest, keccak256, normalize_address, recover_address

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


class SignedAvailability(BaseModel):
    """What a claim needs from the oracles: a node's availability for consecutive epochs, signed.

    The file `r1os rewards claim --signatures` reads, and what the oracle service hands out.
    """

    node: str
    first_epoch: int = Field(ge=0)
    availabilities: list[int] = Field(min_length=1, max_length=MAX_EPOCHS_PER_CLAIM)
    signatures: list[str] = Field(min_length=1, description="65-byte signatures, 0x hex")
    token_id: int | None = Field(default=None, description="licence to claim for (default: the node's)")
    type: str | None = Field(default=None, description="ND, MND or GND (default: the node's licence)")

    @property
    def last_epoch(self) -> int:
        return self.first_epoch + len(self.availabilities) - 1

    def signature_bytes(self) -> list[bytes]:
        out = []
        for i, sig in enumerate(self.signatures):
            try:
                raw = bytes.fromhex(sig.removeprefix("0x"))
            except ValueError:
                raise ChainError(f"signature {i} is not hex") from None
            if len(raw) != 65:
                raise ChainError(f"signature {i} is {len(raw)} bytes, not 65 (r||s||v)")
            out.append(raw)
        return out

    def verify_signers(self) -> list[str]:
        """Addresses that signed (recovered locally), to show before sending a claim."""
        digest = availability_digest(self.node, self.first_epoch, self.availabilities)
        return [recover_address(digest, s) for s in self.signature_bytes()]

    @classmethod
    def make(
        cls,
        keys: Sequence[NodeKey | str | bytes],
        node: str,
        first_epoch: int,
        availabilities: Sequence[int],
    ) -> SignedAvailability:
        """Sign with each oracle key (tests, devnet tools)."""
        sigs = ["0x" + sign_availability(k, node, first_epoch, availabilities).hex() for k in keys]
        return cls(node=node, first_epoch=first_epoch, availabilities=list(availabilities), signatures=sigs)
