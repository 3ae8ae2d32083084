"""dAuth: licensed admission. Oracles admit nodes with a licence linked on chain; every node drops
messages from senders that are neither oracles nor admitted (see docs/dauth.md).

The signed objects and the answers of the HTTP API load with the package; the service (which needs the
node and its web server) loads on first use of `DauthService`, so clients can import `r1os.dauth` cheaply.
"""

from typing import TYPE_CHECKING, Any

from r1os.dauth._models import (
    ADMITTED_KEY,
    CONFIG_KEY,
    AdmissionRecord,
    AdmissionRequest,
    AdmitAnswer,
    AdmittedAnswer,
    DauthError,
    DauthStatus,
    NetworkConfig,
    Refusal,
    SignedRecord,
    make_request,
)
from r1os.transport.auth import broker_client_id, broker_password, check_broker_login

if TYPE_CHECKING:
    from r1os.dauth._service import DauthService


def __getattr__(name: str) -> Any:
    if name == "DauthService":
        from r1os.dauth._service import DauthService

        return DauthService
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ADMITTED_KEY",
    "CONFIG_KEY",
    "AdmissionRecord",
    "AdmissionRequest",
    "AdmitAnswer",
    "AdmittedAnswer",
    "DauthError",
    "DauthService",
    "DauthStatus",
    "NetworkConfig",
    "Refusal",
    "SignedRecord",
    "broker_client_id",
    "broker_password",
    "check_broker_login",
    "make_request",
]
