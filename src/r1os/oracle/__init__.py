"""OracleSync and Proof-of-Availability: per-epoch availability, oracle consensus, signed claims.

`availability`/`HeartbeatLog` turn heartbeat times into the 0..255 byte; `ReplicaHealth` folds the
replica health nodes report into which nodes served a paid job (PoAI), `job_standing` says whether a
job can pay; `propose`/`agree`/`majority_served` are the
consensus steps (pure, deterministic); `OracleSyncService` runs them on oracle nodes and serves the
signatures nodes claim rewards with (`/v1/oracle/...`); `AutoClaimService` claims every K epochs;
`oracle_get`/`fetch_signed` are the client side.

The two services (and with them the node) are imported on first use only, so a client importing this
package loads no server.
"""

from typing import TYPE_CHECKING, Any

from r1os.oracle._availability import SLACK_S, HeartbeatLog, availability, covered_seconds, to_byte
from r1os.oracle._client import NothingToClaim, fetch_signed, oracle_get
from r1os.oracle._consensus import (
    DISAGREE_BY,
    ELIGIBLE_FRACTION,
    Attestation,
    EpochRecord,
    NoQuorum,
    OracleSignatures,
    Proposal,
    SignedTable,
    Table,
    agree,
    check_served,
    claim_digests,
    claims_signed_by,
    disagreements,
    eligible_oracles,
    majority_served,
    median_table,
    propose,
    quorum,
    sign_claims,
    sign_table,
    table_hash,
    table_signer,
)
from r1os.oracle._epochs import EpochClock, parse_range
from r1os.oracle._errors import BadEpochRange, BadNodeAddress, EpochNotAgreed, EpochNotEnded, OracleError
from r1os.oracle._models import (
    ClaimSignatures,
    ClosedEpoch,
    EpochAvailability,
    MisbehaviourEntry,
    MisbehaviourList,
    NodeAvailability,
    OracleStatus,
    RangeSignature,
)
from r1os.oracle._poai import POAI_JOB_PREFIX, JobStanding, job_standing
from r1os.oracle._records import EPOCH_KEY, INDEX_KEY, MISBEHAVIOUR_KEY, compact
from r1os.oracle._replica_health import ReplicaHealth, healthy_jobs
from r1os.oracle._settings import OracleSettings, settings_from

if TYPE_CHECKING:
    from r1os.oracle._autoclaim import AutoClaimService
    from r1os.oracle._service import OracleSyncService

_SERVICES = {"OracleSyncService": "r1os.oracle._service", "AutoClaimService": "r1os.oracle._autoclaim"}


def __getattr__(name: str) -> Any:
    # The services import the node (FastAPI, uvicorn): loaded when asked for, not with the package.
    if name in _SERVICES:
        import importlib

        return getattr(importlib.import_module(_SERVICES[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DISAGREE_BY",
    "ELIGIBLE_FRACTION",
    "EPOCH_KEY",
    "INDEX_KEY",
    "MISBEHAVIOUR_KEY",
    "POAI_JOB_PREFIX",
    "SLACK_S",
    "Attestation",
    "AutoClaimService",
    "BadEpochRange",
    "BadNodeAddress",
    "ClaimSignatures",
    "ClosedEpoch",
    "EpochAvailability",
    "EpochClock",
    "EpochNotAgreed",
    "EpochNotEnded",
    "EpochRecord",
    "HeartbeatLog",
    "JobStanding",
    "MisbehaviourEntry",
    "MisbehaviourList",
    "NoQuorum",
    "NodeAvailability",
    "NothingToClaim",
    "OracleError",
    "OracleSettings",
    "OracleSignatures",
    "OracleStatus",
    "OracleSyncService",
    "Proposal",
    "RangeSignature",
    "ReplicaHealth",
    "SignedTable",
    "Table",
    "agree",
    "availability",
    "check_served",
    "claim_digests",
    "claims_signed_by",
    "compact",
    "covered_seconds",
    "disagreements",
    "eligible_oracles",
    "fetch_signed",
    "healthy_jobs",
    "job_standing",
    "majority_served",
    "median_table",
    "oracle_get",
    "parse_range",
    "propose",
    "quorum",
    "settings_from",
    "sign_claims",
    "sign_table",
    "table_hash",
    "table_signer",
    "to_byte",
]
