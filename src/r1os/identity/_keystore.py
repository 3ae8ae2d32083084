"""Encrypted key files (Ethereum keystore v3), so a node's key never sits on disk in the clear."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

from r1os.errors import IdentityError, WrongPassword
from r1os.identity._keys import NodeKey

PASSWORD_ENV = "R1OS_PASSWORD"

# scrypt with n=2**18 is the standard; devnets that start dozens of nodes on one machine ask for "light".
KdfStrength = Literal["standard", "light"]
_SCRYPT_N = {"standard": 2**18, "light": 2**12}


def save_keystore(key: NodeKey, path: Path, password: str, *, strength: KdfStrength = "standard") -> Path:
    """Write `key` to `path` as keystore v3 (mode 0600), atomically."""
    from eth_account import Account  # heavy import (~1 s): only when a key file is written

    data: dict[str, Any] = Account.encrypt(
        key.private_key, password, kdf="scrypt", iterations=_SCRYPT_N[strength]
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return path


_NOT_A_KEYSTORE = "pass an encrypted keystore (JSON, keystore v3) such as `r1os keys new` writes"


def load_keystore(path: Path, password: str) -> NodeKey:
    """Read and decrypt a keystore v3 file."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise IdentityError(f"no key file at {path}", hint="create one with `r1os keys new`") from None
    except (OSError, ValueError) as exc:
        raise IdentityError(f"cannot read key file {path}: {exc}", hint=_NOT_A_KEYSTORE) from None
    from eth_keyfile.keyfile import decode_keyfile_json

    try:
        secret = decode_keyfile_json(data, password.encode())
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise WrongPassword(f"wrong password for {path}") from None
        raise IdentityError(f"malformed key file {path}: {exc}", hint=_NOT_A_KEYSTORE) from None
    except (KeyError, TypeError) as exc:
        raise IdentityError(f"malformed key file {path}: missing {exc}", hint=_NOT_A_KEYSTORE) from None
    return NodeKey(bytes(secret))


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
