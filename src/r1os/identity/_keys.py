"""secp256k1 node keys, Ethereum addresses and recoverable signatures.

The same key signs network traffic and holds licences on-chain, so a node's identity *is* its Ethereum
address. Signing goes through coincurve (libsecp256k1) directly: it is the hot path of every message.
"""

from __future__ import annotations

import base64
import os
from functools import lru_cache

import coincurve

from r1os.errors import IdentityError, SignatureError
from r1os.identity._keccak import keccak256 as _keccak

AI_PREFIX = "0xai_"


def keccak256(data: bytes) -> bytes:
    return _keccak(data)  # see _keccak: pycryptodome's Keccak without cffi, else eth_hash


def eip191_digest(message: bytes) -> bytes:
    """Digest that `personal_sign` signs: keccak("\\x19Ethereum Signed Message:\\n<len>" + message)."""
    return keccak256(b"\x19Ethereum Signed Message:\n" + str(len(message)).encode() + message)


def to_checksum_address(address: bytes | str) -> str:
    """EIP-55: the 20-byte address in hex, each letter upper-case where the keccak of the lower-case hex
    has a nibble >= 8 at its place. (Here rather than from eth_utils, whose import costs every node
    process ~4.5 MiB for this one function.) `address`: 20 bytes, or 40 hex digits after 0x."""
    lower = address.hex() if isinstance(address, bytes) else address[2:].lower()
    digest = keccak256(lower.encode()).hex()
    return "0x" + "".join(
        c.upper() if d in "89abcdef" else c for c, d in zip(lower, digest[:40], strict=True)
    )


def _address_from_uncompressed(uncompressed: bytes) -> str:
    return to_checksum_address(keccak256(uncompressed[1:])[-20:])


@lru_cache(maxsize=65536)
def address_from_public_key(public_key: bytes) -> str:
    """EIP-55 address of a compressed (33 bytes) or uncompressed (65 bytes) public key."""
    try:
        pk = coincurve.PublicKey(public_key)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"invalid public key: {exc}") from None
    return _address_from_uncompressed(pk.format(compressed=False))


def normalize_address(address: str) -> str:
    """Return the EIP-55 form of an address, accepting `0x...` hex or the `0xai_` public-key form."""
    if address.startswith(AI_PREFIX):
        return address_from_public_key(public_key_from_ai_address(address))
    if not isinstance(address, str) or len(address) != 42 or not address.startswith("0x"):
        raise IdentityError(f"not an Ethereum address: {address!r}")
    try:
        bytes.fromhex(address[2:])
    except ValueError:
        raise IdentityError(f"not an Ethereum address: {address!r}") from None
    return to_checksum_address(address)


def ai_address(public_key: bytes) -> str:
    """Ratio1's display form: `0xai_` + URL-safe base64 of the compressed public key."""
    compressed = coincurve.PublicKey(public_key).format(compressed=True)
    return AI_PREFIX + base64.urlsafe_b64encode(compressed).decode().rstrip("=")


def public_key_from_ai_address(text: str) -> bytes:
    if not text.startswith(AI_PREFIX):
        raise IdentityError(f"not a 0xai_ address: {text!r}")
    body = text[len(AI_PREFIX) :]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        return coincurve.PublicKey(raw).format(compressed=True)
    except (ValueError, TypeError):
        raise IdentityError(f"malformed 0xai_ address: {text!r}") from None


def _to_eth_signature(sig: bytes) -> bytes:
    # coincurve gives r||s||recid (0/1); Ethereum tools expect v = 27/28.
    return sig[:64] + bytes([sig[64] + 27])


def recover_public_key(digest: bytes, signature: bytes) -> bytes:
    """Compressed public key that produced `signature` over the 32-byte `digest`."""
    if len(digest) != 32:
        raise SignatureError("digest must be 32 bytes")
    if len(signature) != 65:
        raise SignatureError(f"signature must be 65 bytes, got {len(signature)}")
    v = signature[64]
    if v >= 27:
        v -= 27
    if v not in (0, 1):
        raise SignatureError("signature has an invalid recovery id")
    try:
        pk = coincurve.PublicKey.from_signature_and_message(signature[:64] + bytes([v]), digest, hasher=None)
    except (ValueError, TypeError) as exc:
        raise SignatureError(f"signature does not recover: {exc}") from None
    return pk.format(compressed=True)


def recover_address(digest: bytes, signature: bytes) -> str:
    """EIP-55 address whose key made `signature` over `digest`."""
    return address_from_public_key(recover_public_key(digest, signature))


def verify_signature(digest: bytes, signature: bytes, address: str) -> bool:
    """True when `signature` over `digest` was made by the key of `address`."""
    try:
        return recover_address(digest, signature).lower() == address.lower()
    except SignatureError:
        return False


class NodeKey:
    """A secp256k1 private key with its public forms (address, `0xai_`), signing and decryption."""

    __slots__ = ("_sk", "public_key", "address")

    def __init__(self, private_key: bytes) -> None:
        if len(private_key) != 32:
            raise IdentityError("a private key is 32 bytes")
        try:
            self._sk = coincurve.PrivateKey(private_key)
        except ValueError as exc:
            raise IdentityError(f"invalid private key: {exc}") from None
        self.public_key: bytes = self._sk.public_key.format(compressed=True)
        self.address: str = _address_from_uncompressed(self._sk.public_key.format(compressed=False))

    @classmethod
    def generate(cls) -> NodeKey:
        while True:
            try:
                return cls(os.urandom(32))
            except IdentityError:  # astronomically rare: out of the curve's range
                continue

    @classmethod
    def from_hex(cls, text: str) -> NodeKey:
        try:
            return cls(bytes.fromhex(text.removeprefix("0x")))
        except ValueError:
            raise IdentityError("private key must be 64 hex characters") from None

    @property
    def private_key(self) -> bytes:
        return bytes(self._sk.secret)

    @property
    def private_key_hex(self) -> str:
        return "0x" + self.private_key.hex()

    @property
    def ai_address(self) -> str:
        return ai_address(self.public_key)

    def sign_digest(self, digest: bytes) -> bytes:
        """65-byte r||s||v signature (v = 27/28) over a 32-byte digest."""
        if len(digest) != 32:
            raise SignatureError("digest must be 32 bytes")
        return _to_eth_signature(self._sk.sign_recoverable(digest, hasher=None))

    def sign_message(self, message: bytes) -> bytes:
        """EIP-191 `personal_sign` signature, as wallets and `eth_account` make it."""
        return self.sign_digest(eip191_digest(message))

    def derive(self, label: str) -> NodeKey:
        """A key of its own for something this key's holder runs (an app on a node: `app/<name>`),
        derived, so the holder finds the same key again after a restart without storing it, and no one
        else can compute it. HKDF-SHA256 over this key with the label; the result is reduced into the
        curve's range (the chance it needs another round is about 2**-128)."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.kdf.hkdf import HKDF

        if not label or len(label) > 256:
            raise IdentityError("a derivation label is 1-256 characters")
        for round_ in range(4):
            info = f"r1os derived key v1\n{label}\n{round_}".encode()
            candidate = HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(self.private_key)
            try:
                return NodeKey(candidate)
            except IdentityError:
                continue
        raise IdentityError("no valid key derived")  # pragma: no cover - needs four misses in a row

    def decrypt(self, blob: bytes, *, aad: bytes = b"") -> bytes:
        """Decrypt an ECIES blob made by `r1os.identity.encrypt_to` for this key (with the same `aad`)."""
        from r1os.identity._ecies import decrypt

        return decrypt(self._sk, blob, aad=aad)

    def __repr__(self) -> str:
        return f"NodeKey({self.address})"
