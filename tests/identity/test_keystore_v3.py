"""Keystore v3 read and written without eth_keyfile, checked against eth_account (the reference for the
format): files it writes with either KDF open here, files written here open there, and wrong passwords,
altered files and malformed fields give the errors a user is told how to fix."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any, Literal

import pytest
from eth_account import Account

from r1os.errors import IdentityError, WrongPassword
from r1os.identity import NodeKey, keccak256, keystore_address, load_keystore, save_keystore
from r1os.identity._keystore import _scrypt, decrypt_keystore, encrypt_keystore

PASSWORD = "correct horse ☃"  # not ASCII: the password is UTF-8 bytes on both sides


def _reference(key: NodeKey, kdf: Literal["scrypt", "pbkdf2"], tmp_path: Path) -> Path:
    # small work factors: the format is what is checked, not the strength
    data = Account.encrypt(key.private_key, PASSWORD, kdf=kdf, iterations=2**10 if kdf == "scrypt" else 1000)
    path = tmp_path / f"{kdf}.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("kdf", ["scrypt", "pbkdf2"])
def test_reads_keystores_written_by_eth_account(kdf: Literal["scrypt", "pbkdf2"], tmp_path: Path) -> None:
    key = NodeKey.generate()
    path = _reference(key, kdf, tmp_path)
    assert load_keystore(path, PASSWORD).private_key == key.private_key
    assert keystore_address(path) == key.address


@pytest.mark.parametrize("kdf", ["scrypt", "pbkdf2"])
def test_wrong_password_for_eth_account_keystores(kdf: Literal["scrypt", "pbkdf2"], tmp_path: Path) -> None:
    path = _reference(NodeKey.generate(), kdf, tmp_path)
    with pytest.raises(WrongPassword, match="wrong password"):
        load_keystore(path, PASSWORD + "x")


def test_eth_account_reads_keystores_written_here(tmp_path: Path) -> None:
    key = NodeKey.generate()
    path = save_keystore(key, tmp_path / "k.json", PASSWORD, strength="light")
    data = json.loads(path.read_text())
    assert Account.decrypt(data, PASSWORD) == key.private_key
    assert data["crypto"]["kdfparams"]["n"] == 2**12
    assert keystore_address(path) == key.address


def test_standard_strength_roundtrip() -> None:
    # n=2**18 needs 256 MiB of scrypt memory, more than hashlib allows by default
    key = NodeKey.generate()
    data = encrypt_keystore(key, PASSWORD)
    assert data["crypto"]["kdfparams"]["n"] == 2**18
    assert decrypt_keystore(data, PASSWORD) == key.private_key


def test_field_names_are_case_insensitive_and_hex_may_have_0x() -> None:
    key = NodeKey.generate()
    data: dict[str, Any] = Account.encrypt(key.private_key, PASSWORD, kdf="pbkdf2", iterations=1000)
    crypto = data.pop("crypto")
    crypto["mac"] = "0x" + crypto["mac"]
    data["Crypto"] = crypto
    assert decrypt_keystore(data, PASSWORD) == key.private_key


def _altered(data: dict[str, Any], where: tuple[str, ...], value: object) -> dict[str, Any]:
    out = copy.deepcopy(data)
    node = out
    for name in where[:-1]:
        node = node[name]
    if value is _DELETE:
        del node[where[-1]]
    else:
        node[where[-1]] = value
    return out


_DELETE = object()


def test_altered_ciphertext_or_mac_is_refused_as_a_wrong_password() -> None:
    # the MAC covers the ciphertext: a changed byte is indistinguishable from a wrong password
    data = Account.encrypt(NodeKey.generate().private_key, PASSWORD, kdf="pbkdf2", iterations=1000)
    text = data["crypto"]["ciphertext"]
    flipped = text[:-1] + ("0" if text[-1] != "0" else "1")
    with pytest.raises(WrongPassword):
        decrypt_keystore(_altered(data, ("crypto", "ciphertext"), flipped), PASSWORD)
    with pytest.raises(WrongPassword):
        decrypt_keystore(_altered(data, ("crypto", "mac"), "00" * 32), PASSWORD)


@pytest.mark.parametrize(
    ("where", "value", "says"),
    [
        (("version",), 4, "version 4"),
        (("version",), "3", "'version' is not a number"),
        (("crypto",), _DELETE, "missing 'crypto'"),
        (("crypto",), [], "'crypto' is not a dict"),
        (("crypto", "cipher"), "aes-256-gcm", "cipher 'aes-256-gcm'"),
        (("crypto", "ciphertext"), "zz", "'ciphertext' is not hex"),
        (("crypto", "cipherparams"), _DELETE, "missing 'cipherparams'"),
        (("crypto", "cipherparams", "iv"), "00" * 17, "'iv' is 17 bytes"),
        (("crypto", "mac"), None, "'mac' is not a str"),
        (("crypto", "kdf"), "argon2", "kdf 'argon2'"),
        (("crypto", "kdfparams", "salt"), _DELETE, "missing 'salt'"),
        (("crypto", "kdfparams", "dklen"), 16, "'dklen' 16"),
        (("crypto", "kdfparams", "n"), 1000, "power of 2"),
        (("crypto", "kdfparams", "n"), True, "'n' is not a number"),
        (("crypto", "kdfparams", "r"), 0, "r=0"),
        (("crypto", "kdfparams", "n"), 2**40, "needs"),
    ],
)
def test_malformed_scrypt_keystores_name_the_field(where: tuple[str, ...], value: object, says: str) -> None:
    data = Account.encrypt(NodeKey.generate().private_key, PASSWORD, kdf="scrypt", iterations=2**10)
    with pytest.raises(ValueError, match=says):
        decrypt_keystore(_altered(data, where, value), PASSWORD)


@pytest.mark.parametrize(
    ("where", "value", "says"),
    [
        (("crypto", "kdfparams", "prf"), "hmac-md5", "'prf' 'hmac-md5'"),
        (("crypto", "kdfparams", "c"), 0, "'c' 0 rounds"),
        (("crypto", "kdfparams", "c"), 10**12, "rounds"),
        (("crypto", "kdfparams", "c"), _DELETE, "missing 'c'"),
    ],
)
def test_malformed_pbkdf2_keystores_name_the_field(where: tuple[str, ...], value: object, says: str) -> None:
    data = Account.encrypt(NodeKey.generate().private_key, PASSWORD, kdf="pbkdf2", iterations=1000)
    with pytest.raises(ValueError, match=says):
        decrypt_keystore(_altered(data, where, value), PASSWORD)


@pytest.mark.parametrize("content", [[], "text", 3, None, {"version": 3}, {"version": 3, "crypto": {}}])
def test_files_that_are_not_keystores_are_identity_errors(content: object, tmp_path: Path) -> None:
    path = tmp_path / "k.json"
    path.write_text(json.dumps(content))
    with pytest.raises(IdentityError, match="malformed key file") as info:
        load_keystore(path, PASSWORD)
    assert info.value.hint and "keystore v3" in info.value.hint


def test_a_decrypted_secret_that_is_no_key_is_an_identity_error(tmp_path: Path) -> None:
    # a well-formed keystore around 31 bytes: the MAC matches, the key does not exist
    key = NodeKey.generate()
    data = encrypt_keystore(key, PASSWORD, scrypt_n=2**4)
    derived_ct = bytes.fromhex(data["crypto"]["ciphertext"])[:31]
    salt = bytes.fromhex(data["crypto"]["kdfparams"]["salt"])
    derived = _scrypt(PASSWORD.encode(), salt, 2**4, 8, 1, 32)
    data["crypto"]["ciphertext"] = derived_ct.hex()
    data["crypto"]["mac"] = keccak256(derived[16:32] + derived_ct).hex()
    path = tmp_path / "short.json"
    path.write_text(json.dumps(data))
    with pytest.raises(IdentityError, match="malformed key file .*32 bytes"):
        load_keystore(path, PASSWORD)


# NIST SP 800-38A, F.5.1 (CTR-AES128.Encrypt): the first two blocks
_SP800_38A_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
_SP800_38A_COUNTER = bytes.fromhex("f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff")
_SP800_38A_PLAIN = bytes.fromhex("6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e51")
_SP800_38A_CIPHER = bytes.fromhex("874d6191b620e3261bef6864990db6ce9806f66b7970fdff8617187bb9fffdff")


def test_aes_128_ctr_through_openssl_and_cryptography_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    from r1os.identity import _keystore

    assert _keystore._openssl_aes_128_ctr(_SP800_38A_KEY, _SP800_38A_COUNTER, _SP800_38A_PLAIN) == (
        _SP800_38A_CIPHER
    )
    # the counter block wraps around at 2**128 the same way in both
    key, top = bytes(range(16)), b"\xff" * 16
    data = bytes(range(200))
    through_openssl = _keystore._aes_128_ctr(key, top, data)

    def unavailable(key: bytes, iv: bytes, data: bytes) -> bytes:
        raise _keystore._NoOpenSSL("not here")

    monkeypatch.setattr(_keystore, "_openssl_aes_128_ctr", unavailable)
    assert _keystore._aes_128_ctr(_SP800_38A_KEY, _SP800_38A_COUNTER, _SP800_38A_PLAIN) == _SP800_38A_CIPHER
    assert _keystore._aes_128_ctr(key, top, data) == through_openssl


def test_reading_a_keystore_leaves_cryptography_unloaded(tmp_path: Path) -> None:
    # a node reads its key at start; cryptography (~8 MiB) waits for a payload to encrypt, and neither
    # eth_keyfile nor pycryptodome's ciphers and KDFs are needed at all
    path = save_keystore(NodeKey.generate(), tmp_path / "k.json", PASSWORD, strength="light")
    probe = (
        "import sys, pathlib; from r1os.identity import load_keystore; "
        f"load_keystore(pathlib.Path({str(path)!r}), {PASSWORD!r}); "
        "unwanted = ('cryptography', 'eth_keyfile', 'Crypto.Cipher', 'Crypto.Protocol'); "
        "print(sorted(m for m in sys.modules if m.startswith(unwanted)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"
