"""dAuth: licensed admission. Oracles admit nodes with a licence linked on chain; every node drops
messages from senders that are neither oracles nor admitted (see docs/dauth.md)."""

from r1os.dauth._models import (
    AdmissionRecord,
    AdmissionRequest,
    DauthError,
    NetworkConfig,
    SignedRecord,
    make_request,
)
from r1os.dauth._service import ADMITTED_KEY, CONFIG_KEY, DauthService
from r1os.transport.auth import broker_client_id, broker_password, check_broker_login

__all__ = [
    "ADMITTED_KEY",
    "CONFIG_KEY",
    "AdmissionRecord",
    "AdmissionRequest",
    "DauthError",
    "DauthService",
    "NetworkConfig",
    "SignedRecord",
    "broker_client_id",
    "broker_password",
    "check_broker_login",
    "make_request",
]
