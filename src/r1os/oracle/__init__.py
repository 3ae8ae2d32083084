"""OracleSync and Proof-of-Availability: per-epoch availability, oracle consensus, signed claims.

`availability`/`HeartbeatLog` turn heartbeat times into the 0..255 byte; `propose`/`agree` are the
consensus steps (pure, deterministic); `OracleSyncService` runs them on oracle nodes and serves the
signatures nodes claim rewards with (`/v1/oracle/...`); `AutoClaimService` claims every K epochs.
"""

from r1os.oracle._availability import SLACK_S, HeartbeatLog, availability, covered_seconds, to_byte
from r1os.oracle._claims import AutoClaimService, NothingToClaim, fetch_signed, oracle_get
from r1os.oracle._consensus import (
    DISAGREE_BY,
    ELIGIBLE_FRACTION,
    EpochRecord,
    NoQuorum,
    OracleSignatures,
    Proposal,
    SignedTable,
    Table,
    agree,
    disagreements,
    eligible_oracles,
    median_table,
    propose,
    quorum,
    sign_table,
    table_hash,
    table_signer,
)
from r1os.oracle._epochs import EpochClock, parse_range
from r1os.oracle._service import (
    EPOCH_KEY,
    INDEX_KEY,
    MISBEHAVIOUR_KEY,
    POAI_JOB_PREFIX,
    OracleSettings,
    OracleSyncService,
    settings_from,
)

__all__ = [
    "AutoClaimService",
    "NothingToClaim",
    "fetch_signed",
    "oracle_get",
    "DISAGREE_BY",
    "ELIGIBLE_FRACTION",
    "EPOCH_KEY",
    "INDEX_KEY",
    "MISBEHAVIOUR_KEY",
    "POAI_JOB_PREFIX",
    "SLACK_S",
    "EpochClock",
    "EpochRecord",
    "HeartbeatLog",
    "NoQuorum",
    "OracleSettings",
    "OracleSignatures",
    "OracleSyncService",
    "Proposal",
    "SignedTable",
    "Table",
    "agree",
    "availability",
    "covered_seconds",
    "disagreements",
    "eligible_oracles",
    "median_table",
    "parse_range",
    "propose",
    "quorum",
    "settings_from",
    "sign_table",
    "table_hash",
    "table_signer",
    "to_byte",
]
