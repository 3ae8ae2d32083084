"""Node identity: secp256k1 keys, Ethereum addresses, keystores, signatures and ECIES."""

from r1os.identity._ecies import encrypt_to
from r1os.identity._keys import (
    AI_PREFIX,
    NodeKey,
    address_from_public_key,
    ai_address,
    eip191_digest,
    keccak256,
    normalize_address,
    public_key_from_ai_address,
    recover_address,
    recover_public_key,
    verify_signature,
)
from r1os.identity._keystore import (
    PASSWORD_ENV,
    keystore_address,
    load_keystore,
    load_or_create,
    password_from_env_or_prompt,
    save_keystore,
)

__all__ = [
    "AI_PREFIX",
    "PASSWORD_ENV",
    "NodeKey",
    "address_from_public_key",
    "ai_address",
    "eip191_digest",
    "encrypt_to",
    "keccak256",
    "keystore_address",
    "load_keystore",
    "load_or_create",
    "normalize_address",
    "password_from_env_or_prompt",
    "public_key_from_ai_address",
    "recover_address",
    "recover_public_key",
    "save_keystore",
    "verify_signature",
]
