"""Stand-ins for the chain and CSTORE, so dAuth's oracle side runs in a test without anvil or a node."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from r1os.chain.deployment import Deployment
from r1os.cstore import Op
from r1os.errors import ChainError


@dataclass
class FakeLicence:
    type: str
    token_id: int


@dataclass
class FakeChain:
    """The contracts as far as dAuth reads them: the oracle registry and which node has which licence."""

    oracle_addresses: list[str] = field(default_factory=list)
    licences: dict[str, FakeLicence] = field(default_factory=dict)  # lower-case node -> licence
    down: bool = False
    reads: int = 0

    def link(self, address: str, token_id: int, type: str = "ND") -> None:
        self.licences[address.lower()] = FakeLicence(type, token_id)

    def unlink(self, address: str) -> None:
        self.licences.pop(address.lower(), None)

    def _read(self) -> None:
        self.reads += 1
        if self.down:
            raise ChainError("connection refused (fake chain is down)")

    async def oracles(self) -> list[str]:
        self._read()
        return list(self.oracle_addresses)

    async def is_node_active(self, node: str) -> bool:
        self._read()
        return node.lower() in self.licences

    async def licence_of(self, node: str) -> FakeLicence | None:
        self._read()
        return self.licences.get(node.lower())


class MemoryStore:
    """The part of CSTORE the oracle side uses, as plain dicts (TTLs kept, not enforced)."""

    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.hashes: dict[str, dict[str, Any]] = {}
        self.ttls: dict[tuple[str, str | None], float | None] = {}
        self.writes = 0

    async def get(self, key: str) -> Any | None:
        return self.values.get(key)

    async def set(self, key: str, value: Any, ttl: float | None = None) -> None:
        self.writes += 1
        self.values[key] = value
        self.ttls[(key, None)] = ttl

    async def hget(self, key: str, field: str) -> Any | None:
        return self.hashes.get(key, {}).get(field)

    async def hset(self, key: str, field: str, value: Any, ttl: float | None = None) -> None:
        self.writes += 1
        self.hashes.setdefault(key, {})[field] = value
        self.ttls[(key, field)] = ttl

    async def hgetall(self, key: str) -> dict[str, Any]:
        return dict(self.hashes.get(key, {}))

    async def write(self, ops: list[Op]) -> object:
        self.writes += 1
        for op in ops:
            assert op.field is not None
            if op.kind == "hdel":
                self.hashes.get(op.key, {}).pop(op.field, None)
            elif op.kind == "hset":
                self.hashes.setdefault(op.key, {})[op.field] = op.value
            else:
                raise AssertionError(f"unexpected op {op}")
        return None


def deployment_file(tmp: Path, *, epoch_seconds: int = 60, genesis_time: int | None = None) -> Path:
    """A deployment JSON as `r1os chain deploy` writes it (its RPC is never called when a test hands the
    service a `FakeChain`)."""
    dep = Deployment(
        rpc="http://127.0.0.1:9",
        chain_id=31337,
        contracts={"Controller": "0x" + "11" * 20},
        genesis_time=int(time.time()) - 10 * epoch_seconds if genesis_time is None else genesis_time,
        epoch_seconds=epoch_seconds,
        deployer="0x" + "22" * 20,
    )
    return dep.save(tmp / "deployment.json")
