from __future__ import annotations

import json
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from hypothesis import given, settings
from hypothesis import strategies as st

from r1os.errors import DecryptionError, IdentityError, SignatureError, WrongPassword
from r1os.identity import (
    NodeKey,
    eip191_digest,
    encrypt_to,
    keccak256,
    keystore_address,
    load_keystore,
    normalize_address,
    recover_address,
    save_keystore,
    verify_signature,
)


def test_address_matches_eth_account() -> None:
    key = NodeKey.generate()
    assert key.address == Account.from_key(key.private_key).address


def test_personal_sign_is_wallet_compatible() -> None:
    key = NodeKey.generate()
    sig = key.sign_message(b"r1os")
    assert Account.recover_message(encode_defunct(b"r1os"), signature=sig) == key.address
    theirs = Account.sign_message(encode_defunct(b"r1os"), key.private_key).signature
    assert bytes(theirs) == sig  # RFC 6979 deterministic nonces: same bytes


@settings(max_examples=50, deadline=None)
@given(st.binary(min_size=32, max_size=32))
def test_sign_recover_roundtrip(digest: bytes) -> None:
    key = NodeKey.generate()
    sig = key.sign_digest(digest)
    assert recover_address(digest, sig) == key.address
    assert verify_signature(digest, sig, key.address)
    other = keccak256(digest)
    assert not verify_signature(other, sig, key.address)


def test_bad_signatures_are_errors_not_crashes() -> None:
    key = NodeKey.generate()
    digest = keccak256(b"x")
    with pytest.raises(SignatureError):
        recover_address(digest, b"\x00" * 64)
    with pytest.raises(SignatureError):
        recover_address(digest, b"\x00" * 64 + b"\x09")
    assert not verify_signature(digest, b"\xff" * 65, key.address)
    with pytest.raises(SignatureError):
        key.sign_digest(b"short")


def test_ai_address_roundtrip() -> None:
    key = NodeKey.generate()
    assert key.ai_address.startswith("0xai_")
    assert normalize_address(key.ai_address) == key.address
    assert normalize_address(key.address.lower()) == key.address
    for bad in ["0x123", "hello", "0xai_!!!", "0x" + "zz" * 20]:
        with pytest.raises(IdentityError):
            normalize_address(bad)


def test_keystore_roundtrip_and_wrong_password(tmp_path: Path) -> None:
    key = NodeKey.generate()
    path = save_keystore(key, tmp_path / "k.json", "pw", strength="light")
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert keystore_address(path) == key.address
    assert load_keystore(path, "pw").address == key.address
    with pytest.raises(WrongPassword):
        load_keystore(path, "nope")


def test_keystore_garbage_files(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(IdentityError, match="no key file"):
        load_keystore(missing, "pw")
    garbage = tmp_path / "garbage.json"
    garbage.write_bytes(b"\x00\xffnot json")
    with pytest.raises(IdentityError):
        load_keystore(garbage, "pw")
    truncated = tmp_path / "trunc.json"
    truncated.write_text(json.dumps({"version": 3, "crypto": {}}))
    with pytest.raises(IdentityError):
        load_keystore(truncated, "pw")
    assert keystore_address(garbage) is None


def test_ecies_roundtrip_and_tamper() -> None:
    alice = NodeKey.generate()
    mallory = NodeKey.generate()
    blob = encrypt_to(alice.public_key, b"model update")
    assert alice.decrypt(blob) == b"model update"
    with pytest.raises(DecryptionError):
        mallory.decrypt(blob)
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(DecryptionError):
        alice.decrypt(bytes(tampered))
    with pytest.raises(DecryptionError):
        alice.decrypt(blob[:20])
    with pytest.raises(IdentityError):
        encrypt_to(b"\x02" + b"\x00" * 32, b"x")


def test_derived_keys_are_stable_distinct_and_private() -> None:
    node = NodeKey.from_hex("0x" + "11" * 32)
    app = node.derive("app/llm-chat")
    assert app.address == node.derive("app/llm-chat").address  # the same after a restart
    assert app.address != node.derive("app/other").address
    assert app.address != NodeKey.from_hex("0x" + "12" * 32).derive("app/llm-chat").address
    assert app.address != node.address
    # a derived key signs like any other
    digest = eip191_digest(b"hello")
    assert recover_address(digest, app.sign_digest(digest)) == app.address
    for bad in ("", "x" * 257):
        with pytest.raises(IdentityError):
            node.derive(bad)


def test_derived_key_is_rfc5869_hkdf_sha256() -> None:
    """The derivation computed a second way, straight from RFC 5869 with hmac (no salt: a zero key)."""
    import hashlib
    import hmac

    node = NodeKey.from_hex("0x" + "42" * 32)
    prk = hmac.new(b"\x00" * 32, node.private_key, hashlib.sha256).digest()
    okm = hmac.new(prk, b"r1os derived key v1\napp/x\n0" + b"\x01", hashlib.sha256).digest()
    assert node.derive("app/x").private_key == okm
