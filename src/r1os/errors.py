"""One error hierarchy for all of r1os.

Every error a user can meet derives from `R1osError`; the CLI turns any of them into one line plus a
hint, so each carries an optional `hint` that says what to do about it.
"""

from __future__ import annotations


class R1osError(Exception):
    """Root of every r1os error."""

    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint


class ConfigError(R1osError):
    """A setting is missing or invalid."""


class IdentityError(R1osError):
    """A key or keystore cannot be created, read or used."""


class WrongPassword(IdentityError):
    """The keystore password does not decrypt the key."""

    hint = "set R1OS_PASSWORD to the password the key was created with"


class SignatureError(IdentityError):
    """A signature is malformed or does not match."""


class DecryptionError(IdentityError):
    """An encrypted payload cannot be decrypted (wrong key, or tampered data)."""


class WireError(R1osError):
    """A message was refused by the wire layer; `cause` names the reason for metrics."""

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message)
        self.cause = cause


class TransportError(R1osError):
    """The message transport (MQTT broker connection) failed."""


class NodeError(R1osError):
    """The node daemon cannot start or serve."""


class DevnetError(R1osError):
    """A local devnet cannot be started, found or stopped."""


class ChainError(R1osError):
    """A call to the chain or a contract failed."""


class AdmissionRefused(R1osError):
    """dAuth refused to admit a node."""


class SpecError(R1osError):
    """A spec (app, job, config) is invalid; `path` names the offending field."""

    def __init__(self, message: str, *, path: str = "", hint: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message, hint=hint)
        self.path = path
