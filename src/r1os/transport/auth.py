"""Broker credentials: MQTT username = node address, password = its signature over a fixed text.

The broker can check such a password without talking to anyone (recover the signer, compare with the
username), then look the address up in the admitted set. The text names the network, so a password for
one network does not open another. It is static per node and network: anyone who can read the CONNECT
packet (plain MQTT) could reuse it, but never sign a message, so the message-level check still holds;
use `mqtts://` where that matters.
"""

from __future__ import annotations

from r1os.errors import R1osError
from r1os.identity import NodeKey, eip191_digest, normalize_address, recover_address

PASSWORD_PREFIX = "r1os-dauth-v1:"


def _login_text(network: str, address: str) -> bytes:
    return f"r1os broker login\nnetwork: {network}\naddress: {address.lower()}".encode()


def broker_password(key: NodeKey, network: str) -> str:
    sig = key.sign_digest(eip191_digest(_login_text(network, key.address)))
    return PASSWORD_PREFIX + sig.hex()


def broker_client_id(address: str) -> str:
    """The MQTT client id a node uses (the broker requires it, so no one can take over another's id)."""
    return f"r1os-{address.lower()}"


def check_broker_login(
    network: str, client_id: str, username: str | None, password: str | bytes | None
) -> str:
    """The EIP-55 address these credentials prove, or raise `ValueError` saying why not."""
    if not username:
        raise ValueError("no username (expected the node address)")
    try:
        address = normalize_address(username)
    except (R1osError, ValueError):
        raise ValueError(f"username {username[:64]!r} is not an address") from None
    if client_id != broker_client_id(address):
        raise ValueError(f"client id {client_id[:80]!r} is not {broker_client_id(address)!r}")
    if isinstance(password, bytes):
        password = password.decode(errors="replace")
    if not password or not password.startswith(PASSWORD_PREFIX):
        raise ValueError("no dAuth password")
    try:
        sig = bytes.fromhex(password[len(PASSWORD_PREFIX) :])
        signer = recover_address(eip191_digest(_login_text(network, address)), sig)
    except (R1osError, ValueError):
        raise ValueError("password is not a valid signature") from None
    if signer != address:
        raise ValueError("password is not signed by the username's key")
    return address
