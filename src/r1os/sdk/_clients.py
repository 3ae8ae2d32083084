"""Small read-mostly clients of a node's services (dAuth, the oracle): one method per route, JSON back,
the node's error (`RemoteError`) raised as it answered it."""

from __future__ import annotations

from typing import Any

from r1os.sdk._http import Api, AsyncApi


def _range(epochs: str | None) -> dict[str, str]:
    return {"epochs": epochs} if epochs else {}


class Dauth:
    """A node's dAuth admission: whether the oracles admitted it, and why not."""

    def __init__(self, api: Api) -> None:
        self._api = api

    def status(self) -> dict[str, Any]:
        """`state` (off, oracle, admitted, waiting), the admission record, the last refusal."""
        return self._api.get("/v1/dauth/status")

    def retry(self) -> bool:
        """Ask a waiting node to ask an oracle now; False if it was not waiting."""
        return bool(self._api.post("/v1/dauth/retry").get("retrying"))

    def admitted(self) -> dict[str, Any]:
        """Every node this node knows to be admitted, with its record."""
        return self._api.get("/v1/dauth/admitted")


class AsyncDauth:
    """The async twin of `Dauth`."""

    def __init__(self, api: AsyncApi) -> None:
        self._api = api

    async def status(self) -> dict[str, Any]:
        return await self._api.get("/v1/dauth/status")

    async def retry(self) -> bool:
        return bool((await self._api.post("/v1/dauth/retry")).get("retrying"))

    async def admitted(self) -> dict[str, Any]:
        return await self._api.get("/v1/dauth/admitted")


class Oracle:
    """What an oracle node serves: the epochs the oracles agreed, a node's signed availability."""

    def __init__(self, api: Api) -> None:
        self._api = api

    def epochs(self) -> dict[str, Any]:
        """The closed epochs (voters, signers, table hash, CID), the current one and the quorum."""
        return self._api.get("/v1/oracle/epochs")

    def epoch(self, epoch: int) -> dict[str, Any]:
        """One epoch's agreed table with the oracles' signatures."""
        return self._api.get(f"/v1/oracle/epochs/{epoch}")

    def availability(self, node: str, epochs: str | None = None) -> dict[str, Any]:
        """`node`'s availability per epoch (`epochs` "A:B" inclusive, default all closed) and the
        signed claim for that range."""
        return self._api.get(f"/v1/oracle/availability/{node}", _range(epochs))

    def misbehaviour(self) -> dict[str, Any]:
        """Oracles recorded as misbehaving (`entries`)."""
        return self._api.get("/v1/oracle/misbehaviour")


class AsyncOracle:
    """The async twin of `Oracle`."""

    def __init__(self, api: AsyncApi) -> None:
        self._api = api

    async def epochs(self) -> dict[str, Any]:
        return await self._api.get("/v1/oracle/epochs")

    async def epoch(self, epoch: int) -> dict[str, Any]:
        return await self._api.get(f"/v1/oracle/epochs/{epoch}")

    async def availability(self, node: str, epochs: str | None = None) -> dict[str, Any]:
        return await self._api.get(f"/v1/oracle/availability/{node}", _range(epochs))

    async def misbehaviour(self) -> dict[str, Any]:
        return await self._api.get("/v1/oracle/misbehaviour")
