"""One error hierarchy for all of r1os.

Every error a user can meet derives from `R1osError`; the CLI turns any of them into one line plus a
hint, so each carries an optional `hint` that says what to do about it. Each also carries `cause`, one
machine word for metrics, logs and programs (`too_large`, `not_admitted`, ...), and `status`, the HTTP
status a node answers with when the error ends a request.

On the HTTP API every error has one shape, `{"error": message, "cause": word, "hint": text or null}`
(`error_body`); clients turn it back into an exception with `error_from_body`.
"""

from __future__ import annotations

from typing import Any


class R1osError(Exception):
    """Root of every r1os error."""

    hint: str | None = None
    cause: str = "error"
    status: int = 500

    def __init__(
        self, message: str, *, hint: str | None = None, cause: str | None = None, status: int | None = None
    ) -> None:
        super().__init__(message)
        if hint is not None:
            self.hint = hint
        if cause is not None:
            self.cause = cause
        if status is not None:
            self.status = status

    @property
    def message(self) -> str:
        return str(self)


class ConfigError(R1osError):
    """A setting is missing or invalid."""

    cause = "bad_config"
    status = 400


class IdentityError(R1osError):
    """A key or keystore cannot be created, read or used."""

    cause = "identity"
    status = 400


class WrongPassword(IdentityError):
    """The keystore password does not decrypt the key."""

    hint = "set R1OS_PASSWORD to the password the key was created with"
    cause = "wrong_password"
    status = 401


class SignatureError(IdentityError):
    """A signature is malformed or does not match."""

    cause = "bad_signature"
    status = 400


class DecryptionError(IdentityError):
    """An encrypted payload cannot be decrypted (wrong key, or tampered data)."""

    cause = "decryption_failed"
    status = 400


class WireError(R1osError):
    """A message was refused by the wire layer; `cause` names the reason for metrics."""

    status = 400

    def __init__(self, cause: str, message: str) -> None:
        super().__init__(message, cause=cause)


class TransportError(R1osError):
    """The message transport (MQTT broker connection) failed."""

    cause = "transport"
    status = 503


class NodeError(R1osError):
    """The node daemon cannot start or serve."""

    cause = "node"
    status = 500


class DevnetError(R1osError):
    """A local devnet cannot be started, found or stopped."""

    cause = "devnet"
    status = 500


class ChainError(R1osError):
    """A call to the chain or a contract failed."""

    cause = "chain"
    status = 502


class AdmissionRefused(R1osError):
    """dAuth refused to admit a node."""

    cause = "not_admitted"
    status = 403


def first_invalid(exc: Any, default: str = "") -> tuple[str, str]:
    """The field path (`participants.1.data`, else `default`) and the message of the first error a pydantic
    `ValidationError` lists (duck-typed on its `errors()`: this module does not import pydantic)."""
    err = exc.errors()[0]
    return ".".join(str(p) for p in err.get("loc", ())) or default, str(err.get("msg", "invalid"))


class FieldError(ValueError):
    """Raised by a whole-spec check (a model validator) to name the field it is about; `SpecError.
    from_validation` reports that field's path instead of the spec's."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(message)
        self.path = path


class SpecError(R1osError):
    """A spec (app, job, config) is invalid; `path` names the offending field."""

    def __init__(self, message: str, *, path: str = "", hint: str | None = None) -> None:
        super().__init__(f"{path}: {message}" if path else message, hint=hint)
        self.path = path

    cause = "bad_spec"
    status = 422

    @classmethod
    def from_validation(cls, exc: Any, *, hint: str | None = None) -> SpecError:
        """The first error of a pydantic `ValidationError` `exc` (duck-typed: `errors()`, `error_count()`)
        naming its field (`spec` for the whole spec, or the field a `FieldError` names), and how many
        more errors there are."""
        err = exc.errors()[0]
        count = exc.error_count()
        path, msg = first_invalid(exc, "spec")
        msg = msg.removeprefix("Value error, ")
        inner = (err.get("ctx") or {}).get("error")
        if isinstance(inner, FieldError):
            path = inner.path if path == "spec" else f"{path}.{inner.path}"
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        more = f" (and {count - 1} more)" if count > 1 else ""
        return cls(msg + more, path=path, hint=hint)

    @classmethod
    def from_yaml(cls, exc: Exception, source: str = "spec") -> SpecError:
        """A YAML parse error `exc` of the text from `source`, with the line it is at (duck-typed on
        PyYAML's `problem_mark` and `problem`)."""
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        return cls(f"{source} is not YAML/JSON{where}: {getattr(exc, 'problem', exc)}")


class RemoteError(R1osError):
    """A node answered a request with an error; `status`, `cause` and `hint` are the node's own."""


#: Machine words for HTTP statuses that come without an `R1osError` (routing, validation, limits).
STATUS_CAUSES: dict[int, str] = {
    400: "bad_request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "timeout",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    416: "bad_range",
    422: "invalid_request",
    429: "too_many_requests",
    500: "internal",
    502: "bad_gateway",
    503: "unavailable",
    504: "gateway_timeout",
}


def error_body(message: str, cause: str, hint: str | None = None) -> dict[str, Any]:
    """The one JSON shape of an error answer on every route of a node."""
    return {"error": message, "cause": cause, "hint": hint}


def error_from_body(status: int, body: Any, *, fallback: str = "") -> RemoteError:
    """The error a node's answer describes. Takes the standard shape; anything else (a proxy's HTML, an
    older node) still gives a readable error with the status."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        cause = body.get("cause")
        hint = body.get("hint")
        return RemoteError(
            body["error"],
            cause=cause if isinstance(cause, str) else STATUS_CAUSES.get(status, "error"),
            hint=hint if isinstance(hint, str) else None,
            status=status,
        )
    text = fallback.strip()[:200] or f"HTTP {status}"
    return RemoteError(text, cause=STATUS_CAUSES.get(status, "error"), status=status)
