"""Deeploy from outside a node: deploy, update, scale and delete apps, and read their state and logs.

Every change is an owner request the session's key signs (`r1os.deeploy._requests`): the key is the
app's owner, and only it changes or deletes the app. Secrets in a spec never leave the client in clear:
before a deploy or update the client asks the node which nodes run apps (`GET /v1/apps/nodes`) and seals
each secret to every node that could host the app (ECIES to the public key in the node's `0xai_`
address), so an app with secrets runs only on the nodes that were online when it was deployed or last
updated.

Reads (`list`, `status`, `nodes`) need no key. Logs come from the nodes that host a replica, each asked
directly and signed for that node (`R1OS-SIG`, as every request of a key), so only the owner (or a
node's own operator) reads them.

`AsyncApps` is `session.apps` of an `AsyncSession`; `Apps` its blocking twin on a `Session`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, Callable, Generator
from pathlib import Path
from typing import Any, TypeAlias

import httpx

from r1os.deeploy._models import AppList, AppView, HostList, HostNode, ReplicaView
from r1os.deeploy._placement import why_not
from r1os.deeploy._requests import Action, SignedAppRequest, sign_app_request
from r1os.deeploy._spec import AppSpec, load_spec, parse_spec
from r1os.errors import R1osError
from r1os.identity import NodeKey, address_from_public_key, normalize_address, public_key_from_ai_address
from r1os.sdk._auth import NodeAuth, NodeIdentity
from r1os.sdk._http import Api, AsyncApi, remote_error, unreachable
from r1os.sdk._specs import read_spec_like

SpecLike: TypeAlias = AppSpec | str | Path
"""An `AppSpec`, a spec file's path, or the spec's YAML/JSON text."""
Views: TypeAlias = list[AppView]
Lines: TypeAlias = list[str]
Hosts: TypeAlias = list[HostNode]
OnChange: TypeAlias = Callable[[AppView], None]

#: How often `wait` asks for the app's state.
WAIT_INTERVAL = 0.25
#: Time to connect to a node hosting a replica (reading a followed log has no time limit).
LOG_CONNECT_TIMEOUT = 10.0


class NoKey(R1osError):
    """A change to an app was asked of a session without the owner's key."""

    cause = "no_key"
    status = 401


class NoSuchApp(R1osError):
    """No app of that name (for that owner)."""

    cause = "no_app"
    status = 404


class AmbiguousApp(R1osError):
    """An app name that more than one owner uses, asked for without an owner."""

    cause = "ambiguous"
    status = 409


class NoHost(R1osError):
    """No node that runs apps could host this one (so its secrets have no one to be sealed to)."""

    cause = "no_host"
    status = 422


class NotReady(R1osError):
    """An app did not reach the wanted state (replicas healthy at its version) in time."""

    cause = "timeout"
    status = 504


# -- what both clients share: no I/O ------------------------------------------------------------------


def read_spec(spec: SpecLike) -> AppSpec:
    """An `AppSpec` from a spec, a path to a spec file, or spec text; `SpecError` naming the bad field."""
    return read_spec_like(spec, AppSpec, load_spec, parse_spec)


def sealing_targets(spec: AppSpec, hosts: Hosts) -> dict[str, bytes]:
    """Node address -> public key of every node that could ever host `spec` (its runtime, tags, placement
    and capacity on an empty node), from each node's `0xai_` address (checked against its address)."""
    out: dict[str, bytes] = {}
    for host in hosts:
        if not host.ai_address or why_not(spec, host, None) is not None:
            continue
        try:
            public_key = public_key_from_ai_address(host.ai_address)
        except R1osError:
            continue
        if address_from_public_key(public_key).lower() != host.address.lower():
            continue  # a node's key that is not its address's: seal nothing to it
        out[host.address.lower()] = public_key
    if spec.secrets and not out:
        raise NoHost(
            f"no node that could run {spec.name} ({spec.runtime}) is online to seal its secrets to",
            hint="`r1os app nodes` lists the nodes that run apps and what they offer",
        )
    return out


def is_ready(view: AppView, version: int) -> bool:
    """True once the app runs exactly the replicas it wants, all at `version` and healthy."""
    return (
        view.version == version
        and len(view.replicas) == view.replicas_wanted
        and all(r.version == version and r.healthy for r in view.replicas)
    )


class _Wait:
    """One `wait`: `check` each new state of the app until it is ready; `NotReady` once `timeout` passed."""

    def __init__(self, version: int | None, timeout: float, on_change: OnChange | None) -> None:
        self.version, self.timeout, self.on_change = version, timeout, on_change
        self.deadline = time.monotonic() + timeout
        self.last: AppView | None = None

    def check(self, view: AppView) -> AppView | None:
        """`view` if the app is ready; None to ask again later."""
        want = self.version if self.version is not None else view.version
        if self.on_change is not None and (self.last is None or view.replicas != self.last.replicas):
            self.on_change(view)
        self.last = view
        if is_ready(view, want):
            return view
        if time.monotonic() >= self.deadline:
            raise not_ready(view, want, self.timeout)
        return None


def _replica_line(r: ReplicaView) -> str:
    detail = f" ({r.detail})" if r.detail else ""
    return f"{r.node[:10]} v{r.version} {r.state}{' healthy' if r.healthy else ''}{detail}"


def not_ready(view: AppView, version: int, timeout: float) -> NotReady:
    at = sum(r.version == version and r.healthy for r in view.replicas)
    states = ", ".join(_replica_line(r) for r in view.replicas) or "no replica placed yet"
    note = f" ({view.note})" if view.note else ""
    return NotReady(
        f"{view.app}: {at} of {view.replicas_wanted} replica(s) healthy at version {version} after "
        f"{timeout:g} s{note}: {states}",
        hint=f"`r1os app status {view.name}` shows each replica; `r1os app logs {view.name}` their output",
    )


def _owner_address(owner: str) -> str:
    return normalize_address(owner).lower()


def _pick_owner(name: str, views: Views) -> str:
    owners = sorted({v.owner.lower() for v in views if v.name == name})
    if not owners:
        raise NoSuchApp(f"no app named {name}", hint="`r1os app ls` lists the apps")
    if len(owners) > 1:
        raise AmbiguousApp(
            f"{len(owners)} owners have an app named {name}: {', '.join(owners)}",
            hint="name the owner (--owner ADDRESS, owner=...)",
        )
    return owners[0]


def _logs_path(owner: str, name: str) -> str:
    return f"/v1/apps/{owner}/{name}/logs"


def _hosts(view: AppView, node: str | None) -> list[ReplicaView]:
    """The replicas to ask for logs: the one on `node`, else all (one per node)."""
    seen: dict[str, ReplicaView] = {}
    for r in view.replicas:
        seen.setdefault(r.node.lower(), r)
    if node is not None:
        wanted = _owner_address(node)
        if wanted not in seen:
            raise NoSuchApp(
                f"{node} hosts no replica of {view.app}",
                hint=f"`r1os app status {view.name}` names the nodes that do",
            )
        return [seen[wanted]]
    if not seen:
        raise NoSuchApp(f"{view.app} has no replica placed yet", hint="see `r1os app status`")
    return list(seen.values())


def _follow_target(view: AppView, node: str | None) -> ReplicaView:
    """The replica whose log `follow_logs` follows: on `node`, else the first healthy one, else the first."""
    replicas = _hosts(view, node)
    return next((r for r in replicas if r.healthy), replicas[0])


def _merge(per_node: dict[str, Lines | R1osError]) -> Lines:
    """One node's lines as they are; several nodes' lines each prefixed with its node's address, and a
    node that could not be read says why in one line (the others' lines are still worth having)."""
    answers = list(per_node.values())
    if all(isinstance(a, R1osError) for a in answers):
        raise next(a for a in answers if isinstance(a, R1osError))
    if len(per_node) == 1:
        lines = answers[0]
        assert not isinstance(lines, R1osError)
        return lines
    out: Lines = []
    for node, answer in per_node.items():
        if isinstance(answer, R1osError):
            out.append(f"{node}: [no logs from this node: {answer} ({answer.cause})]")
        else:
            out.extend(f"{node}: {line}" for line in answer)
    return out


class _Core:
    """Key, network and the request building both clients share."""

    def __init__(self, key: NodeKey | None, auth: NodeAuth) -> None:
        self.key = key
        self.auth = auth
        self.network: str | None = None

    def owner_key(self, what: str) -> NodeKey:
        if self.key is None:
            raise NoKey(
                f"{what} needs the owner's key: only the key that deployed an app changes it",
                hint="pass --key-file KEYSTORE or set $R1OS_PRIVATE_KEY (SDK: Session(url, key=...))",
            )
        return self.key

    def own_owner(self, owner: str | None) -> str | None:
        if owner is not None:
            return _owner_address(owner)
        return self.key.address.lower() if self.key is not None else None

    def request(
        self,
        action: Action,
        name: str,
        *,
        spec: AppSpec | None = None,
        nodes: dict[str, bytes] | None = None,
        replicas: int | None = None,
    ) -> bytes:
        assert self.network is not None
        signed: SignedAppRequest = sign_app_request(
            self.owner_key(f"{action} {name}"),
            network=self.network,
            action=action,
            name=name,
            spec=spec,
            nodes=nodes,
            replicas=replicas,
        )
        return signed.model_dump_json().encode()

    def log_auth(self, replica: ReplicaView) -> NodeAuth:
        """How a request to the node hosting `replica` proves its caller: signed for that node by the
        session's key (reads too), else the session's token (good only at the node that issued it)."""
        url = replica.url or ""
        auth = NodeAuth(url, key=self.key, token=self.auth.token, sign_reads=True)
        if self.key is not None and self.network is not None:
            auth.node = NodeIdentity(replica.node.lower(), self.network)
        return auth


def _view(data: dict[str, Any]) -> AppView:
    return AppView.model_validate(data)


def _no_url(replica: ReplicaView) -> R1osError:
    return R1osError(
        f"the node {replica.node} hosting a replica has no known URL",
        cause="unreachable",
        hint="is it online? see `r1os app status`",
        status=503,
    )


_JSON = {"content-type": "application/json"}


class AsyncApps:
    """`session.apps` of an `AsyncSession`: the apps of the network, and their owner's requests."""

    def __init__(self, api: AsyncApi, key: NodeKey | None, auth: NodeAuth) -> None:
        self._api = api
        self._c = _Core(key, auth)

    async def _network(self) -> str:
        if self._c.network is None:
            self._c.network = str((await self._api.get("/v1/node"))["network"])
        return self._c.network

    async def _submit(self, body: bytes) -> dict[str, Any]:
        return await self._api.request("POST", "/v1/apps/requests", content=body, headers=_JSON)

    async def nodes(self) -> Hosts:
        """Nodes that run apps: runtimes, tags, capacity and what is free."""
        return HostList.model_validate(await self._api.get("/v1/apps/nodes")).nodes

    async def _change(self, action: Action, spec: SpecLike) -> AppView:
        app = read_spec(spec)
        self._c.owner_key(f"{action} {app.name}")
        targets = sealing_targets(app, await self.nodes()) if app.secrets else {}
        await self._network()
        return _view(await self._submit(self._c.request(action, app.name, spec=app, nodes=targets)))

    async def deploy(self, spec: SpecLike) -> AppView:
        """Deploy a new app (an `AppSpec`, a spec file's path or spec text), its secrets sealed to the nodes
        that could host it; the app as the oracles accepted it (replicas not yet running: see `wait`)."""
        return await self._change("deploy", spec)

    async def update(self, spec: SpecLike) -> AppView:
        """Replace an app's spec (a new version, rolled out replica by replica)."""
        return await self._change("update", spec)

    async def scale(self, name: str, replicas: int) -> AppView:
        """Run `replicas` replicas of the session's key's app `name`."""
        self._c.owner_key(f"scale {name}")
        await self._network()
        return _view(await self._submit(self._c.request("scale", name, replicas=replicas)))

    async def delete(self, name: str) -> str:
        """Delete the session's key's app `name` (every replica stopped, its folder removed); its id."""
        self._c.owner_key(f"delete {name}")
        await self._network()
        return str((await self._submit(self._c.request("delete", name))).get("deleted", name))

    async def list(self, owner: str | None = None) -> Views:
        """Every app of the network, or of one owner."""
        params = {"owner": _owner_address(owner)} if owner else None
        return AppList.model_validate(await self._api.get("/v1/apps", params)).apps

    async def _owner(self, name: str, owner: str | None) -> str:
        found = self._c.own_owner(owner)
        return found if found is not None else _pick_owner(name, await self.list())

    async def status(self, name: str, owner: str | None = None) -> AppView:
        """One app and each replica's node, state and health. `owner` defaults to the session's key, and
        without a key to the one owner with an app of that name."""
        return _view(await self._api.get(f"/v1/apps/{await self._owner(name, owner)}/{name}"))

    async def wait(
        self,
        name: str,
        *,
        owner: str | None = None,
        version: int | None = None,
        timeout: float = 60.0,
        on_change: OnChange | None = None,
    ) -> AppView:
        """Wait until the app runs its wanted replicas, all at `version` (default: its current one) and
        healthy; `on_change` sees each new state. `NotReady` (with each replica's state) after `timeout`."""
        owner = await self._owner(name, owner)
        waiting = _Wait(version, timeout, on_change)
        while True:
            if (ready := waiting.check(await self.status(name, owner))) is not None:
                return ready
            await asyncio.sleep(WAIT_INTERVAL)

    async def _node_logs(self, owner: str, name: str, replica: ReplicaView, tail: int) -> Lines:
        if not replica.url:
            raise _no_url(replica)
        path, params = _logs_path(owner, name), {"tail": str(tail)}
        r = await self._api.fetch(path, base=replica.url, params=params, auth=self._c.log_auth(replica))
        return r.text.splitlines()

    async def logs(
        self, name: str, tail: int = 100, owner: str | None = None, node: str | None = None
    ) -> Lines:
        """The last `tail` lines of the app's output from each node that hosts a replica (or from `node`
        only); with several nodes each line starts with its node's address, and a node that could not be
        read gives one line saying why (if none could, its error is raised). The owner's key (or a node's
        operator token, at that node) is needed: logs are the owner's."""
        view = await self.status(name, owner)
        await self._network()
        per_node: dict[str, Lines | R1osError] = {}
        for replica in _hosts(view, node):
            try:
                per_node[replica.node] = await self._node_logs(view.owner.lower(), name, replica, tail)
            except R1osError as exc:
                per_node[replica.node] = exc
        return _merge(per_node)

    async def follow_logs(
        self, name: str, tail: int = 10, owner: str | None = None, node: str | None = None
    ) -> AsyncGenerator[str, None]:
        """The app's output as it comes, line by line, from one replica: on `node`, else a healthy one
        (the last `tail` lines first). Ends when the replica stops."""
        view = await self.status(name, owner)
        await self._network()
        replica = _follow_target(view, node)
        if not replica.url:
            raise _no_url(replica)
        url = replica.url + _logs_path(view.owner.lower(), name)
        params = {"tail": str(tail), "follow": "1"}
        timeout = httpx.Timeout(LOG_CONNECT_TIMEOUT, read=None)
        try:
            async with self._api.http.stream(
                "GET", url, params=params, auth=self._c.log_auth(replica), timeout=timeout
            ) as r:
                if r.status_code >= 400:
                    await r.aread()
                    raise remote_error(r)
                async for line in r.aiter_lines():
                    yield line
        except httpx.HTTPError as exc:
            raise unreachable(replica.url, exc) from None


class Apps:
    """`session.apps` of a `Session`: the blocking twin of `AsyncApps`."""

    def __init__(self, api: Api, key: NodeKey | None, auth: NodeAuth) -> None:
        self._api = api
        self._c = _Core(key, auth)

    def _network(self) -> str:
        if self._c.network is None:
            self._c.network = str(self._api.get("/v1/node")["network"])
        return self._c.network

    def _submit(self, body: bytes) -> dict[str, Any]:
        return self._api.request("POST", "/v1/apps/requests", content=body, headers=_JSON)

    def nodes(self) -> Hosts:
        """Nodes that run apps: runtimes, tags, capacity and what is free."""
        return HostList.model_validate(self._api.get("/v1/apps/nodes")).nodes

    def _change(self, action: Action, spec: SpecLike) -> AppView:
        app = read_spec(spec)
        self._c.owner_key(f"{action} {app.name}")
        targets = sealing_targets(app, self.nodes()) if app.secrets else {}
        self._network()
        return _view(self._submit(self._c.request(action, app.name, spec=app, nodes=targets)))

    def deploy(self, spec: SpecLike) -> AppView:
        """Deploy a new app (see `AsyncApps.deploy`)."""
        return self._change("deploy", spec)

    def update(self, spec: SpecLike) -> AppView:
        """Replace an app's spec (a new version, rolled out replica by replica)."""
        return self._change("update", spec)

    def scale(self, name: str, replicas: int) -> AppView:
        """Run `replicas` replicas of the session's key's app `name`."""
        self._c.owner_key(f"scale {name}")
        self._network()
        return _view(self._submit(self._c.request("scale", name, replicas=replicas)))

    def delete(self, name: str) -> str:
        """Delete the session's key's app `name`; its id."""
        self._c.owner_key(f"delete {name}")
        self._network()
        return str(self._submit(self._c.request("delete", name)).get("deleted", name))

    def list(self, owner: str | None = None) -> Views:
        """Every app of the network, or of one owner."""
        params = {"owner": _owner_address(owner)} if owner else None
        return AppList.model_validate(self._api.get("/v1/apps", params)).apps

    def _owner(self, name: str, owner: str | None) -> str:
        found = self._c.own_owner(owner)
        return found if found is not None else _pick_owner(name, self.list())

    def status(self, name: str, owner: str | None = None) -> AppView:
        """One app and each replica's node, state and health (see `AsyncApps.status`)."""
        return _view(self._api.get(f"/v1/apps/{self._owner(name, owner)}/{name}"))

    def wait(
        self,
        name: str,
        *,
        owner: str | None = None,
        version: int | None = None,
        timeout: float = 60.0,
        on_change: OnChange | None = None,
    ) -> AppView:
        """Wait until the app's wanted replicas are all at `version` and healthy (see `AsyncApps.wait`)."""
        owner = self._owner(name, owner)
        waiting = _Wait(version, timeout, on_change)
        while True:
            if (ready := waiting.check(self.status(name, owner))) is not None:
                return ready
            time.sleep(WAIT_INTERVAL)

    def _node_logs(self, owner: str, name: str, replica: ReplicaView, tail: int) -> Lines:
        if not replica.url:
            raise _no_url(replica)
        path, params = _logs_path(owner, name), {"tail": str(tail)}
        r = self._api.fetch(path, base=replica.url, params=params, auth=self._c.log_auth(replica))
        return r.text.splitlines()

    def logs(self, name: str, tail: int = 100, owner: str | None = None, node: str | None = None) -> Lines:
        """The last `tail` lines of the app's output from each node that hosts a replica (see
        `AsyncApps.logs`)."""
        view = self.status(name, owner)
        self._network()
        per_node: dict[str, Lines | R1osError] = {}
        for replica in _hosts(view, node):
            try:
                per_node[replica.node] = self._node_logs(view.owner.lower(), name, replica, tail)
            except R1osError as exc:
                per_node[replica.node] = exc
        return _merge(per_node)

    def follow_logs(
        self, name: str, tail: int = 10, owner: str | None = None, node: str | None = None
    ) -> Generator[str, None, None]:
        """The app's output as it comes from one replica (see `AsyncApps.follow_logs`)."""
        view = self.status(name, owner)
        self._network()
        replica = _follow_target(view, node)
        if not replica.url:
            raise _no_url(replica)
        url = replica.url + _logs_path(view.owner.lower(), name)
        params = {"tail": str(tail), "follow": "1"}
        timeout = httpx.Timeout(LOG_CONNECT_TIMEOUT, read=None)
        try:
            with self._api.http.stream(
                "GET", url, params=params, auth=self._c.log_auth(replica), timeout=timeout
            ) as r:
                if r.status_code >= 400:
                    r.read()
                    raise remote_error(r)
                yield from r.iter_lines()
        except httpx.HTTPError as exc:
            raise unreachable(replica.url, exc) from None


__all__ = [
    "AmbiguousApp",
    "Apps",
    "AsyncApps",
    "NoHost",
    "NoKey",
    "NoSuchApp",
    "NotReady",
    "is_ready",
    "read_spec",
    "sealing_targets",
]
