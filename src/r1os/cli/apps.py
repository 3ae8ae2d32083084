"""`r1os app`: deploy and run apps on the network (Deeploy), through any node.

Changes (`deploy`, `update`, `scale`, `delete`) are requests signed by the app's owner: the key from
`--key-file` (a keystore), else $R1OS_KEY / $R1OS_PRIVATE_KEY, else your default key (`r1os keys new`).
Secrets in a spec are sealed to the nodes that could host the app before they leave this machine.
Reads (`ls`, `status`, `nodes`) need no key; `logs` needs the owner's key (or, on a node's machine, its
operator's token). See docs/deeploy-cli.md.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import typer
from rich.markup import escape
from rich.table import Table

from r1os.cli._access import (
    Access,
    CallerKeyOpt,
    NodeOpt,
    TokenOpt,
    access,
    load_key,
    node_session,
    node_url,
    open_session,
)
from r1os.cli._common import JsonOpt, console, handle_errors, print_json, print_listing, spinner, table

if TYPE_CHECKING:
    from r1os.deeploy._models import AppView, ReplicaView
    from r1os.identity import NodeKey
    from r1os.sdk import Session

app = typer.Typer(no_args_is_help=True)

SpecArg = typer.Argument(..., help="The app spec (YAML or JSON).", exists=True, dir_okay=False, readable=True)
NameArg = typer.Argument(..., help="The app's name.")
OwnerOpt = typer.Option(
    None, "--owner", help="The app's owner address (default: your key's, else the one owner of NAME)."
)
WaitOpt = typer.Option(True, "--wait/--no-wait", help="Wait until the replicas are healthy.")
TimeoutOpt = typer.Option(60.0, "--timeout", min=0, help="Seconds to wait for healthy replicas.")


# -- who signs ------------------------------------------------------------------------------------------


def _own_key(key_file: Path | None) -> NodeKey | None:
    """--key-file, else $R1OS_KEY / $R1OS_PRIVATE_KEY, else your default key (None without any)."""
    key = load_key(key_file)
    if key is None:
        from r1os.paths import default_key_path

        if default_key_path().exists():
            key = load_key(default_key_path())
    return key


def owner_key(key_file: Path | None) -> NodeKey:
    """The key that owns the app (see `_own_key`); `NoKey` without one."""
    key = _own_key(key_file)
    if key is None:
        from r1os.sdk._apps import NoKey

        raise NoKey(
            "an app's changes are signed by its owner's key, and none was given",
            hint="pass --key-file KEYSTORE, set $R1OS_PRIVATE_KEY, or make your key with `r1os keys new`",
        )
    return key


def _owner_session(node: str | None, key_file: Path | None) -> contextlib.AbstractContextManager[Session]:
    return open_session(Access(node_url(node), key=owner_key(key_file), writes=True))


def _read_session(
    node: str | None, key_file: Path | None, token: str | None
) -> contextlib.AbstractContextManager[Session]:
    return node_session(node, key_file, token)


# -- printing -------------------------------------------------------------------------------------------


def _state(r: ReplicaView) -> str:
    if r.healthy:
        return f"[green]{escape(r.state)}[/]"
    return f"[yellow]{escape(r.state)}[/]"


def replica_table(view: AppView) -> Table:
    return table(
        f"{view.app} v{view.version}: {view.healthy}/{view.replicas_wanted} healthy",
        ("node", "state", "healthy", "version", "restarts", "detail"),
        (
            (
                r.node,
                _state(r),
                "yes" if r.healthy else "no",
                str(r.version),
                str(r.restarts),
                escape(r.detail),
            )
            for r in view.replicas
        ),
    )


def app_urls(base: str, view: AppView) -> tuple[str, str]:
    """The app's URL on node `base` by name, and by owner and name (when a name is not unique)."""
    return f"{base}/apps/{view.name}/", f"{base}/apps/{view.owner.lower()}/{view.name}/"


def _wait(s: Session, view: AppView, timeout: float, what: str) -> AppView:
    """Wait for the app's replicas at `view.version` to be healthy, printing each one as it becomes so."""
    version = view.version
    seen: set[tuple[str, int]] = set()
    want = view.replicas_wanted
    with spinner(f"waiting for {want} healthy replica(s) of {view.name} v{version}") as say:

        def on_change(v: AppView) -> None:
            for r in v.replicas:
                if r.healthy and r.version == version and (r.node, r.version) not in seen:
                    seen.add((r.node, r.version))
                    console.print(f"  replica on {r.node} healthy (v{r.version})", highlight=False)
            pending = [r for r in v.replicas if not (r.healthy and r.version == version)]
            at = sum(r.healthy and r.version == version for r in v.replicas)
            say(
                f"{what}: {at}/{v.replicas_wanted} healthy at v{version}"
                + (f" ({pending[0].node[:10]}: {pending[0].state})" if pending else "")
            )

        return s.apps.wait(view.name, owner=view.owner, version=version, timeout=timeout, on_change=on_change)


def _accepted(s: Session, view: AppView, action: str, wait: bool, timeout: float) -> None:
    console.print(
        f"{action} accepted: [bold]{escape(view.app)}[/] v{view.version},"
        f" {view.replicas_wanted} replica(s) wanted ({escape(view.runtime)})",
        highlight=False,
    )
    if not wait:
        return
    final = _wait(s, view, timeout, action)
    by_name, by_owner = app_urls(s.url, final)
    console.print(
        f"ready: {final.healthy}/{final.replicas_wanted} replica(s) healthy at v{final.version}",
        highlight=False,
    )
    if final.replicas_wanted:
        console.print(f"URL: [bold]{by_name}[/]", highlight=False)
        console.print(f"[dim]also: {by_owner}[/]", highlight=False)


# -- commands -------------------------------------------------------------------------------------------


def _spec_command(action: Literal["deploy", "update"], doc: str) -> Callable[..., None]:
    """The command `action` (deploy or update an app from its spec file), with `doc` as its help."""

    def command(
        spec: Path = SpecArg,
        node: str | None = NodeOpt,
        key_file: Path | None = CallerKeyOpt,
        wait: bool = WaitOpt,
        timeout: float = TimeoutOpt,
    ) -> None:
        from r1os.sdk._apps import read_spec

        app_spec = read_spec(spec)  # a bad spec is named before a key is asked for
        with _owner_session(node, key_file) as s:
            view = s.apps.deploy(app_spec) if action == "deploy" else s.apps.update(app_spec)
            _accepted(s, view, action, wait, timeout)

    command.__doc__ = doc
    return app.command(action)(handle_errors(command))


deploy = _spec_command(
    "deploy", "Deploy a new app from its spec; wait until its replicas are healthy and print its URL."
)
update = _spec_command(
    "update",
    "Update an app to a new spec (a new version, rolled out replica by replica); wait for the rollout.",
)


@app.command("scale")
@handle_errors
def scale(
    name: str = NameArg,
    replicas: int = typer.Argument(..., min=0, max=64, help="How many replicas to run."),
    node: str | None = NodeOpt,
    key_file: Path | None = CallerKeyOpt,
    wait: bool = WaitOpt,
    timeout: float = TimeoutOpt,
) -> None:
    """Run N replicas of your app NAME; wait until they are healthy."""
    with _owner_session(node, key_file) as s:
        view = s.apps.scale(name, replicas)
        _accepted(s, view, "scale", wait, timeout)


@app.command("delete")
@handle_errors
def delete(name: str = NameArg, node: str | None = NodeOpt, key_file: Path | None = CallerKeyOpt) -> None:
    """Delete your app NAME: every replica is stopped and its folder removed."""
    with _owner_session(node, key_file) as s:
        app_id = s.apps.delete(name)
    console.print(f"deleted {app_id}", highlight=False)


@app.command("ls")
@handle_errors
def ls(
    owner: str | None = typer.Option(None, "--owner", help="Only this owner's apps."),
    node: str | None = NodeOpt,
    json_out: bool = JsonOpt,
    key_file: Path | None = CallerKeyOpt,
    token: str | None = TokenOpt,
) -> None:
    """List the network's apps (or one owner's): version, runtime and healthy replicas."""
    with _read_session(node, key_file, token) as s:
        views = s.apps.list(owner)
    print_listing(
        views,
        json_out,
        title="apps",
        columns=("name", "owner", "version", "runtime", "healthy", "note"),
        row=lambda v: (
            v.name,
            v.owner,
            str(v.version),
            v.runtime,
            f"{v.healthy}/{v.replicas_wanted}",
            escape(v.note),
        ),
        empty="no apps",
    )


@app.command("status")
@handle_errors
def status(
    name: str = NameArg,
    owner: str | None = OwnerOpt,
    node: str | None = NodeOpt,
    json_out: bool = JsonOpt,
    key_file: Path | None = CallerKeyOpt,
    token: str | None = TokenOpt,
) -> None:
    """Show an app's replicas: node address, state, health, version, restarts."""
    with _read_session(node, key_file, token) as s:
        view = s.apps.status(name, owner)
        base = s.url
    if json_out:
        print_json(view.model_dump(mode="json"))
        return
    console.print(replica_table(view))
    if view.note:
        console.print(f"[dim]{escape(view.note)}[/]", highlight=False)
    console.print(f"URL: {app_urls(base, view)[0]}", highlight=False)


@app.command("logs")
@handle_errors
def logs(
    name: str = NameArg,
    follow: bool = typer.Option(False, "--follow", "-f", help="Keep printing new lines (one replica)."),
    tail: int = typer.Option(100, "--tail", "-n", min=0, max=10_000, help="Lines to show from the end."),
    on: str | None = typer.Option(None, "--on", help="Only the replica on this node (its address)."),
    owner: str | None = OwnerOpt,
    node: str | None = NodeOpt,
    key_file: Path | None = CallerKeyOpt,
    token: str | None = TokenOpt,
) -> None:
    """Print an app's output from the nodes that run it (the owner's key, or a node operator's token)."""
    # The owner's key first: each hosting node checks its signature. Else (--token, or none) the node's
    # operator, who reads the logs of that node's replica only.
    key = _own_key(key_file) if token is None else None
    caller = (
        Access(node_url(node), key=key, sign_reads=True)
        if key is not None
        else access(node, key_file, token, writes=True)
    )
    with open_session(caller) as s:
        if not follow:
            for line in s.apps.logs(name, tail=tail, owner=owner, node=on):
                print(line)
            return
        for line in s.apps.follow_logs(name, tail=tail, owner=owner, node=on):
            print(line, flush=True)


@app.command("nodes")
@handle_errors
def nodes(
    node: str | None = NodeOpt,
    json_out: bool = JsonOpt,
    key_file: Path | None = CallerKeyOpt,
    token: str | None = TokenOpt,
) -> None:
    """List the nodes that run apps: runtimes, tags, capacity and what is free."""
    with _read_session(node, key_file, token) as s:
        hosts = s.apps.nodes()
    print_listing(
        hosts,
        json_out,
        title="nodes that run apps",
        columns=("address", "role", "runtimes", "tags", "cpu free", "memory free (MiB)", "gpu free"),
        row=lambda h: (
            h.address,
            "oracle" if h.oracle else "edge",
            ",".join(h.runtimes),
            ",".join(h.tags) or "-",
            f"{h.free_cpu:g}/{h.cpu:g}",
            f"{h.free_memory_mb}/{h.memory_mb}",
            f"{h.free_gpu}/{h.gpu}",
        ),
        empty="no node that runs apps is online",
    )
