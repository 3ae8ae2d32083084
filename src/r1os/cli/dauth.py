"""`r1os node admission`: a node's dAuth state (admitted or waiting, why, until when)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.markup import escape
from rich.table import Table

from r1os.cli._access import Access, CallerKeyOpt, NodeOpt, TokenOpt, access, node_url, open_session
from r1os.cli._common import console, error_line, handle_errors, print_json
from r1os.errors import NodeError, R1osError, RemoteError

if TYPE_CHECKING:
    from r1os.sdk import Session


@contextmanager
def _sessions(callers: list[Access]) -> Iterator[list[Session]]:
    """One SDK session per node, open for the whole command (the retry polls them)."""
    with ExitStack() as stack:
        yield [stack.enter_context(open_session(c, timeout=5)) for c in callers]


def _fetch(s: Session) -> dict[str, Any]:
    try:
        return s.dauth.status()
    except RemoteError as exc:
        if exc.status == 404:
            raise NodeError(
                f"the node at {s.url} has no dAuth service", hint="it runs an older r1os"
            ) from None
        raise


def _summary(s: dict[str, Any]) -> str:
    if s["state"] == "off":
        return "dAuth off (no chain): everyone admitted"
    if s["state"] == "oracle":
        return "oracle (admitted by the on-chain registry)"
    if s["state"] == "admitted":
        rec = s.get("record") or {}
        r = rec.get("record", {})
        lic = r.get("licence", {})
        left = r.get("expires", 0) - time.time()
        signers = len(rec.get("signatures", {}))
        return (
            f"admitted: {lic.get('type')} #{lic.get('token_id')}, epoch {r.get('epoch')}, "
            f"renewal due in {left:.0f} s, {signers} oracle signature(s)"
        )
    refusal = s.get("last_refusal") or {}
    # `error` is the message in the one error shape; older nodes called it `detail`.
    why = f"{refusal.get('cause')}: {refusal.get('error') or refusal.get('detail')}" if refusal else ""
    return f"waiting ({s.get('attempts', 0)} attempts) - {why or 'asking an oracle'}"


def _retry(sessions: list[Session]) -> None:
    """Make waiting nodes ask an oracle now, and wait (up to 10 s) for their answers."""
    asked_at = time.time()
    kicked: list[Session] = []
    for s in sessions:
        try:
            if s.dauth.retry():
                kicked.append(s)
        except R1osError as exc:
            if exc.status in (401, 403):
                raise  # not this node's operator: say so (with how to become it), not a silent no-op
            continue  # unreachable or without dAuth: the status below says so

    def answered(s: Session) -> bool:
        try:
            status = _fetch(s)
        except R1osError:
            return True
        refusal = status.get("last_refusal") or {}
        return bool(status["state"] != "waiting" or refusal.get("at", 0) >= asked_at)

    deadline = time.monotonic() + 10
    while kicked and time.monotonic() < deadline:
        kicked = [s for s in kicked if not answered(s)]
        if kicked:
            time.sleep(0.1)  # polling the nodes' state until each answered, or the deadline


@handle_errors
def admission(
    node_ref: str | None = typer.Argument(
        None, help="Devnet node (name, number or address prefix) with --dir."
    ),
    url: str | None = NodeOpt,
    dir: Path | None = typer.Option(None, "--dir", help="A devnet folder: show its nodes."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    retry: bool = typer.Option(
        False,
        "--retry",
        help="Make a waiting node ask an oracle now (e.g. right after linking); the node's operator only "
        "(its API token, read by itself on the node's machine).",
    ),
    key_file: Path | None = CallerKeyOpt,
    token: str | None = TokenOpt,
) -> None:
    """Show whether a node is admitted by dAuth (and if not, why)."""
    targets: list[tuple[str, str]] = []
    homes: list[Path | None] = []
    from_devnet = url is None and (dir is not None or node_ref is not None)
    if from_devnet:
        from r1os.devnet import load_state
        from r1os.paths import default_devnet_dir

        state = load_state(dir or default_devnet_dir())
        nodes = [state.node(node_ref)] if node_ref else state.nodes
        targets = [(n.name, n.url) for n in nodes]
        homes = [Path(n.home) for n in nodes]
    else:
        targets = [("node", node_url(url))]
        homes = [None]
    # The retry is the operator's; the status is anyone's.
    callers = [
        access(u, key_file, token, operator=retry, home=h) for (_, u), h in zip(targets, homes, strict=True)
    ]
    results: list[dict[str, Any]] = []
    with _sessions(callers) as sessions:
        if retry:
            _retry(sessions)
        for (name, u), session in zip(targets, sessions, strict=True):
            try:
                results.append({"name": name, "url": u, **_fetch(session)})
            except Exception as exc:
                if len(targets) == 1:
                    raise
                error = error_line(exc) if isinstance(exc, R1osError) else str(exc)
                results.append({"name": name, "url": u, "state": "unreachable", "error": error})
    if json_out:
        # One node (by URL, or one devnet node by name) is one object; a whole devnet is a list.
        print_json(results if from_devnet and node_ref is None else results[0])
        return
    if len(results) == 1 and results[0]["state"] != "unreachable":
        s = results[0]
        console.print(f"[bold]{s['address']}[/] {escape(_summary(s))}", highlight=False)
        refusal = s.get("last_refusal")
        if s["state"] == "waiting" and refusal and refusal.get("hint"):
            console.print(f"[dim]hint:[/] {escape(refusal['hint'])}", highlight=False)
        return
    table = Table(title="dAuth admission")
    for col in ("node", "address", "state", "details"):
        table.add_column(col)
    for s in results:
        colour = {"admitted": "green", "oracle": "cyan", "off": "dim", "waiting": "yellow"}.get(
            s["state"], "red"
        )
        detail = s.get("error") or _summary(s)
        table.add_row(s["name"], s.get("address", "-"), f"[{colour}]{s['state']}[/]", escape(detail))
    console.print(table)
