"""`r1os node admission`: a node's dAuth state (admitted or waiting, why, until when)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.table import Table

from r1os.cli._common import console, handle_errors, print_json


def _fetch(url: str) -> dict[str, Any]:
    import httpx

    from r1os.errors import NodeError

    try:
        r = httpx.get(f"{url.rstrip('/')}/v1/dauth/status", timeout=5)
    except httpx.HTTPError as exc:
        raise NodeError(
            f"cannot reach the node at {url}: {type(exc).__name__}", hint="is it running?"
        ) from None
    if r.status_code == 404:
        raise NodeError(f"the node at {url} has no dAuth service", hint="it runs an older r1os")
    data: dict[str, Any] = r.json()
    return data


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
    why = f"{refusal.get('cause')}: {refusal.get('detail')}" if refusal else "asking an oracle"
    return f"waiting ({s.get('attempts', 0)} attempts) - {why}"


def _retry(urls: list[str]) -> None:
    """Make waiting nodes ask an oracle now, and wait (up to 10 s) for their answers."""
    import httpx

    asked_at = time.time()
    kicked: list[str] = []
    for u in urls:
        try:
            if httpx.post(f"{u.rstrip('/')}/v1/dauth/retry", timeout=5).json().get("retrying"):
                kicked.append(u)
        except (httpx.HTTPError, ValueError):
            continue

    def answered(u: str) -> bool:
        try:
            s = _fetch(u)
        except Exception:
            return True
        refusal = s.get("last_refusal") or {}
        return bool(s["state"] != "waiting" or refusal.get("at", 0) >= asked_at)

    deadline = time.monotonic() + 10
    while kicked and time.monotonic() < deadline:
        kicked = [u for u in kicked if not answered(u)]
        time.sleep(0.1)


@handle_errors
def admission(
    node_ref: str | None = typer.Argument(
        None, help="Devnet node (name, number or address prefix) with --dir."
    ),
    url: str | None = typer.Option(None, "--node", help="The node's HTTP API URL."),
    dir: Path | None = typer.Option(None, "--dir", help="A devnet folder: show its nodes."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    retry: bool = typer.Option(
        False, "--retry", help="Make a waiting node ask an oracle now (e.g. right after linking)."
    ),
) -> None:
    """Show whether a node is admitted by dAuth (and if not, why)."""
    targets: list[tuple[str, str]] = []
    if url is None and (dir is not None or node_ref is not None):
        from r1os.devnet import Devnet
        from r1os.paths import default_devnet_dir

        state = Devnet(dir or default_devnet_dir()).state()
        nodes = [state.node(node_ref)] if node_ref else state.nodes
        targets = [(n.name, n.url) for n in nodes]
    else:
        targets = [("node", url or "http://127.0.0.1:31234")]
    results: list[dict[str, Any]] = []
    if retry:
        _retry([u for _, u in targets])
    for name, u in targets:
        try:
            results.append({"name": name, "url": u, **_fetch(u)})
        except Exception as exc:
            if len(targets) == 1:
                raise
            results.append({"name": name, "url": u, "state": "unreachable", "error": str(exc)})
    if json_out:
        print_json(results[0] if url is not None or len(results) == 1 and node_ref else results)
        return
    if len(results) == 1 and results[0]["state"] != "unreachable":
        s = results[0]
        console.print(f"[bold]{s['address']}[/] {_summary(s)}", highlight=False)
        refusal = s.get("last_refusal")
        if s["state"] == "waiting" and refusal and refusal.get("hint"):
            console.print(f"[dim]hint:[/] {refusal['hint']}", highlight=False)
        return
    table = Table(title="dAuth admission")
    for col in ("node", "address", "state", "details"):
        table.add_column(col)
    for s in results:
        colour = {"admitted": "green", "oracle": "cyan", "off": "dim", "waiting": "yellow"}.get(
            s["state"], "red"
        )
        detail = s.get("error") or _summary(s)
        table.add_row(s["name"], s.get("address", "-"), f"[{colour}]{s['state']}[/]", detail)
    console.print(table)
