"""Encrypted key files (Ethereum keystore v3), so a node's key never sits on disk in the clear."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from pathlib import Path
from typing import Any, Literal

from r1os.errors import IdentityError, WrongPassword
from r1os.identity._keys import NodeKey, keccak256

PASSWORD_ENV = "R1OS_PASSWORD"

# scrypt with n=2**18 is the standard; devnets that start dozens of nodes on one machine ask for "light".
KdfStrength = Literal["standard", "light"]
_SCRYPT_N = {"standard": 2**18, "light": 2**12}


def save_keystore(key: NodeKey, path: Path, password: str, *, strength: KdfStrength = "standard") -> Path:
    """Write `key` to `path` as keystore v3 (scrypt, AES-128-CTR; mode 0600), atomically."""
    data = encrypt_keystore(key, password, scrypt_n=_SCRYPT_N[strength])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


# Keystore v3 (the format of geth, eth_account and wallets) is read and written here with the standard
# library's scrypt/PBKDF2, AES-CTR from `cryptography` and the keccak of `r1os.identity`, all of which a
# node has loaded anyway. eth_keyfile does the same but imports py_ecc and most of pycryptodome: 3.4 MiB
# that a node process would keep for the rest of its life after reading its key once at start.
_DKLEN = 32
_SCRYPT_R, _SCRYPT_P = 8, 1
# scrypt needs 128 * r * n bytes; above this the file asks for more memory than a node should spend on
# opening its key (the standard n=2**18, r=8 needs 256 MiB).
_SCRYPT_MAX_MEMORY = 2**31
_PBKDF2_MAX_ROUNDS = 10**8


def encrypt_keystore(key: NodeKey, password: str, *, scrypt_n: int = _SCRYPT_N["standard"]) -> dict[str, Any]:
    """`key` as a keystore v3 JSON object (scrypt with `scrypt_n`, r=8, p=1; AES-128-CTR)."""
    salt, iv = os.urandom(32), os.urandom(16)
    derived = _scrypt(password.encode(), salt, scrypt_n, _SCRYPT_R, _SCRYPT_P, _DKLEN)
    ciphertext = _aes_128_ctr(derived[:16], iv, key.private_key)
    return {
        "address": key.address[2:].lower(),
        "crypto": {
            "cipher": "aes-128-ctr",
            "cipherparams": {"iv": iv.hex()},
            "ciphertext": ciphertext.hex(),
            "kdf": "scrypt",
            "kdfparams": {"dklen": _DKLEN, "n": scrypt_n, "p": _SCRYPT_P, "r": _SCRYPT_R, "salt": salt.hex()},
            "mac": keccak256(derived[16:32] + ciphertext).hex(),
        },
        "id": str(uuid.uuid4()),
        "version": 3,
    }


_NOT_A_KEYSTORE = "pass an encrypted keystore (JSON, keystore v3) such as `r1os keys new` writes"


class _Malformed(Exception):
    """A keystore field is missing or unusable (the message names it)."""


def decrypt_keystore(data: object, password: str) -> bytes:
    """The private key in a keystore v3 JSON object. Raises `WrongPassword` when the MAC does not match
    (a wrong password, or a file altered after it was written) and `ValueError` naming the bad field when
    the object is not a keystore v3 this can read."""
    try:
        return _decrypt_v3(_lower_keys(data), password.encode())
    except _Malformed as exc:
        raise ValueError(str(exc)) from None


def _lower_keys(value: object) -> Any:
    # field names are case-insensitive in practice: early geth wrote "Crypto"
    if isinstance(value, dict):
        return {k.lower() if isinstance(k, str) else k: _lower_keys(v) for k, v in value.items()}
    return value


def _field(obj: Any, name: str, kind: type) -> Any:
    if not isinstance(obj, dict) or name not in obj:
        raise _Malformed(f"missing '{name}'")
    value = obj[name]
    # bool is an int to Python, never a valid count or version here
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _Malformed(f"'{name}' is not {'a number' if kind is int else 'a ' + kind.__name__}")
    return value


def _hex(obj: Any, name: str) -> bytes:
    text = _field(obj, name, str)
    try:
        return bytes.fromhex(text[2:] if text[:2] in ("0x", "0X") else text)
    except ValueError:
        raise _Malformed(f"'{name}' is not hex") from None


def _decrypt_v3(data: Any, password: bytes) -> bytes:
    version = _field(data, "version", int)
    if version != 3:
        raise _Malformed(f"keystore version {version} (only version 3 holds a node key)")
    crypto = _field(data, "crypto", dict)
    cipher = _field(crypto, "cipher", str)
    if cipher != "aes-128-ctr":
        raise _Malformed(f"cipher '{cipher}' (keystore v3 uses aes-128-ctr)")
    ciphertext = _hex(crypto, "ciphertext")
    iv = _hex(_field(crypto, "cipherparams", dict), "iv")
    if len(iv) > 16:
        raise _Malformed(f"'iv' is {len(iv)} bytes (AES-CTR takes 16)")
    mac = _hex(crypto, "mac")
    derived = _derive(_field(crypto, "kdf", str), _field(crypto, "kdfparams", dict), password)
    if not hmac.compare_digest(keccak256(derived[16:32] + ciphertext), mac):
        raise WrongPassword("MAC mismatch")
    # a shorter iv is the same 128-bit counter without its leading zero bytes
    return _aes_128_ctr(derived[:16], iv.rjust(16, b"\0"), ciphertext)


def _derive(kdf: str, params: dict[str, Any], password: bytes) -> bytes:
    salt = _hex(params, "salt")
    dklen = _field(params, "dklen", int)
    if not 32 <= dklen <= 64:
        raise _Malformed(f"'dklen' {dklen} (32 bytes: an AES key and a MAC key)")
    if kdf == "scrypt":
        n, r, p = (_field(params, name, int) for name in ("n", "r", "p"))
        return _scrypt(password, salt, n, r, p, dklen)
    if kdf == "pbkdf2":
        prf = _field(params, "prf", str)
        rounds = _field(params, "c", int)
        if prf != "hmac-sha256":
            raise _Malformed(f"'prf' '{prf}' (keystore v3 uses hmac-sha256)")
        if not 1 <= rounds <= _PBKDF2_MAX_ROUNDS:
            raise _Malformed(f"'c' {rounds} rounds (1 to {_PBKDF2_MAX_ROUNDS})")
        return hashlib.pbkdf2_hmac("sha256", password, salt, rounds, dklen)
    raise _Malformed(f"kdf '{kdf}' (keystore v3 uses scrypt or pbkdf2)")


def _scrypt(password: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    if n < 2 or n & (n - 1) or r < 1 or p < 1:
        raise _Malformed(f"scrypt n={n}, r={r}, p={p} (n a power of 2 above 1, r and p from 1)")
    memory = 128 * r * (n + p + 2)
    if memory > _SCRYPT_MAX_MEMORY:
        raise _Malformed(
            f"scrypt n={n}, r={r}, p={p} needs {memory >> 20} MiB (at most {_SCRYPT_MAX_MEMORY >> 20})"
        )
    try:
        # hashlib refuses past `maxmem` (32 MiB by default, less than the standard n=2**18 needs)
        return hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=memory + 2**20)
    except ValueError as exc:
        raise _Malformed(f"scrypt n={n}, r={r}, p={p}: {exc}") from None


def _aes_128_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    """AES-128-CTR (encryption and decryption are the same), through the OpenSSL that Python's hashlib has
    loaded already, else through cryptography. A node decrypts its key once at start and, unless it
    encrypts payloads, never needs cryptography otherwise: importing it costs ~8 MiB (its own OpenSSL)."""
    try:
        return _openssl_aes_128_ctr(key, iv, data)
    except _NoOpenSSL:
        from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

        encryptor = Cipher(algorithms.AES(key), modes.CTR(iv)).encryptor()
        return encryptor.update(data) + encryptor.finalize()


class _NoOpenSSL(Exception):
    """Python's OpenSSL (libcrypto) cannot be reached or refused the operation."""


def _openssl_aes_128_ctr(key: bytes, iv: bytes, data: bytes) -> bytes:
    import ctypes

    try:
        import _hashlib

        # the hashlib module's library handle also resolves the libcrypto it is linked with
        lib = ctypes.CDLL(_hashlib.__file__)
        cipher, new_ctx, free_ctx = lib.EVP_aes_128_ctr, lib.EVP_CIPHER_CTX_new, lib.EVP_CIPHER_CTX_free
        init, update = lib.EVP_EncryptInit_ex, lib.EVP_EncryptUpdate
    except (ImportError, AttributeError, OSError) as exc:  # a Python without a shared libcrypto
        raise _NoOpenSSL(str(exc)) from None
    cipher.restype, new_ctx.restype = ctypes.c_void_p, ctypes.c_void_p
    free_ctx.argtypes, free_ctx.restype = [ctypes.c_void_p], None
    init.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p]
    update.argtypes = [
        ctypes.c_void_p,
        ctypes.c_char_p,
        ctypes.POINTER(ctypes.c_int),
        ctypes.c_char_p,
        ctypes.c_int,
    ]
    if len(key) != 16 or len(iv) != 16:
        raise ValueError("AES-128-CTR takes a 16-byte key and a 16-byte counter block")
    ctx = new_ctx()
    if not ctx:
        raise _NoOpenSSL("EVP_CIPHER_CTX_new failed")
    try:
        out, written = ctypes.create_string_buffer(len(data) + 16), ctypes.c_int(0)
        if (
            init(ctx, cipher(), None, key, iv) != 1
            or update(ctx, out, ctypes.byref(written), data, len(data)) != 1
        ):
            raise _NoOpenSSL("EVP AES-128-CTR failed")
        # a stream mode: every byte comes out of the update, the final step adds none
        if written.value != len(data):
            raise _NoOpenSSL(f"EVP AES-128-CTR gave {written.value} bytes for {len(data)}")
        return out.raw[: written.value]
    finally:
        free_ctx(ctx)


def load_keystore(path: Path, password: str) -> NodeKey:
    """Read and decrypt a keystore v3 file."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise IdentityError(f"no key file at {path}", hint="create one with `r1os keys new`") from None
    except (OSError, ValueError) as exc:
        raise IdentityError(f"cannot read key file {path}: {exc}", hint=_NOT_A_KEYSTORE) from None
    try:
        secret = decrypt_keystore(data, password)
    except WrongPassword:
        raise WrongPassword(f"wrong password for {path}") from None
    except ValueError as exc:
        raise IdentityError(f"malformed key file {path}: {exc}", hint=_NOT_A_KEYSTORE) from None
    try:
        return NodeKey(secret)
    except IdentityError as exc:
        raise IdentityError(f"malformed key file {path}: {exc}", hint=_NOT_A_KEYSTORE) from None


def keystore_address(path: Path) -> str | None:
    """The address a keystore file declares (readable without the password), if any."""
    try:
        raw = json.loads(path.read_text()).get("address")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(raw, str):
        return None
    from r1os.identity._keys import normalize_address

    try:
        return normalize_address(raw if raw.startswith("0x") else "0x" + raw)
    except IdentityError:
        return None


def password_from_env_or_prompt(*, confirm: bool = False) -> str:
    """Password from R1OS_PASSWORD, else an interactive prompt; refuses to wait on a closed stdin."""
    pw = os.environ.get(PASSWORD_ENV)
    if pw is not None:
        return pw
    import sys

    if not sys.stdin or not sys.stdin.isatty():
        raise IdentityError(
            "no password: R1OS_PASSWORD is not set and there is no terminal to ask",
            hint=f"export {PASSWORD_ENV}=...",
        )
    import getpass

    pw = getpass.getpass("key password: ")
    if confirm and getpass.getpass("repeat password: ") != pw:
        raise IdentityError("passwords do not match")
    return pw


def load_or_create(path: Path, password: str, *, strength: KdfStrength = "standard") -> tuple[NodeKey, bool]:
    """Load the key at `path`, or create and save a new one there; returns (key, created)."""
    if path.exists():
        return load_keystore(path, password), False
    key = NodeKey.generate()
    save_keystore(key, path, password, strength=strength)
    return key, True
