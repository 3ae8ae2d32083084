"""ECIES on secp256k1: ECDH + HKDF-SHA256 + AES-256-GCM.

Private payloads (app secrets, model updates) are encrypted to the receiver's public key. The blob is
`version(1) || ephemeral compressed pubkey(33) || nonce(12) || ciphertext+tag`. The ephemeral public key is
bound into the key derivation so a blob cannot be re-targeted.
"""

from __future__ import annotations

import os

import coincurve

from r1os.errors import DecryptionError, IdentityError

_VERSION = 1
_INFO = b"r1os-ecies-v1"
_HEADER = 1 + 33 + 12


# cryptography is imported where it is used: loading it costs every process ~8 MiB (its OpenSSL), which a
# node that never encrypts or decrypts a payload does not need to pay.


def _derive(shared_point: bytes, ephemeral: bytes, recipient: bytes) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral + recipient, info=_INFO).derive(
        shared_point
    )


def encrypt_to(public_key: bytes, plaintext: bytes, *, aad: bytes = b"") -> bytes:
    """Encrypt `plaintext` so only the holder of `public_key`'s private key can read it."""
    try:
        recipient = coincurve.PublicKey(public_key)
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"invalid recipient public key: {exc}") from None
    eph = coincurve.PrivateKey()
    eph_pub = eph.public_key.format(compressed=True)
    shared = recipient.multiply(eph.secret).format(compressed=True)
    key = _derive(shared, eph_pub, recipient.format(compressed=True))
    nonce = os.urandom(12)
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    return bytes([_VERSION]) + eph_pub + nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def decrypt(private_key: coincurve.PrivateKey, blob: bytes, *, aad: bytes = b"") -> bytes:
    if len(blob) < _HEADER + 16:
        raise DecryptionError("ciphertext is truncated")
    if blob[0] != _VERSION:
        raise DecryptionError(f"unknown ciphertext version {blob[0]}")
    eph_pub, nonce, body = blob[1:34], blob[34:46], blob[46:]
    try:
        eph = coincurve.PublicKey(eph_pub)
    except (ValueError, TypeError):
        raise DecryptionError("ciphertext has an invalid ephemeral key") from None
    shared = eph.multiply(private_key.secret).format(compressed=True)
    key = _derive(shared, eph_pub, private_key.public_key.format(compressed=True))
    from cryptography.exceptions import InvalidTag
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    try:
        return AESGCM(key).decrypt(nonce, body, aad)
    except InvalidTag:
        raise DecryptionError("ciphertext was tampered with or is for another key") from None
