"""`r1os fs`: add, get, pin and inspect files in R1FS through a node's HTTP API.

Adds, pins and unpins are signed by your key (`--key-file`, $R1OS_KEY, ...: your pins, your quota), or
made as the node's operator with its API token (`--token`, or found by itself on the node's machine);
`gc` is the operator's only. See `_access.py`. (`--key` here is a file's encryption key.)
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from r1os.cli._access import Access, FsCallerKeyOpt, NodeOpt, TokenOpt, access, explained, load_key
from r1os.cli._common import console, err_console, fail, handle_errors, print_json, run

if TYPE_CHECKING:
    from r1os.sdk import R1fsClient

app = typer.Typer(no_args_is_help=True, add_completion=False)
T = TypeVar("T")

#: Files at least this big get a progress bar (when stderr is a terminal).
PROGRESS_MIN = 8 * 1024 * 1024


@contextmanager
def _progress(label: str, total: int | None) -> Iterator[Callable[[int], None]]:
    """A rich progress bar on stderr for big transfers; a no-op callback otherwise."""
    if not err_console.is_terminal or (total is not None and total < PROGRESS_MIN):
        yield lambda _n: None
        return
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def _client(caller: Access) -> R1fsClient:
    from r1os.sdk import R1fsClient

    return R1fsClient(caller.url, key=caller.key, token=caller.token)


def _run(caller: Access, coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's requests; a node's refusal of the caller comes with what to do about it."""
    with explained(caller):
        return run(coro)


def _parse_key(text: str) -> bytes:
    try:
        key = bytes.fromhex(text.removeprefix("0x"))
    except ValueError:
        key = b""
    if len(key) != 32:
        fail("--key must be 64 hex characters (the key printed by `r1os fs add --encrypt`)")
    return key


@app.command("add")
@handle_errors
def add(
    file: Path = typer.Argument(
        ..., help="The file (or, with -r, the folder) to add.", exists=True, readable=True
    ),
    recursive: bool = typer.Option(
        False,
        "-r",
        "--recursive",
        help="Add a folder and all in it (as `ipfs add -r --cid-version=1`).",
    ),
    hidden: bool = typer.Option(False, "-H", "--hidden", help="With -r: include names starting with '.'."),
    pin: int = typer.Option(1, "--pin", min=0, max=64, help="Copies to keep on distinct nodes (0: no pin)."),
    encrypt: bool = typer.Option(
        False, "--encrypt", help="Encrypt (AES-256-GCM) before upload; prints the key."
    ),
    only_hash: bool = typer.Option(
        False, "--only-hash", help="Print the CID only; store nothing, no node needed (as `ipfs add -n -Q`)."
    ),
    share_with: list[str] = typer.Option(
        [], "--share-with", help="With --encrypt: also print the key encrypted to this node (0xai_ address)."
    ),
    node: str | None = NodeOpt,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    key_file: Path | None = FsCallerKeyOpt,
    token: str | None = TokenOpt,
) -> None:
    """Add a file, or a folder with -r; prints its CID (the same as `ipfs add [-r] --cid-version=1`)."""
    if file.is_dir():
        if not recursive:
            fail(f"{file} is a folder: add it with -r")
        if encrypt:
            fail("--encrypt takes a file, not a folder (pack it first: tar)")
        _add_tree(file, hidden, pin, only_hash, json_out, node, key_file, token)
        return
    size = file.stat().st_size
    if only_hash:
        if encrypt:
            fail("--only-hash and --encrypt do not mix: every encryption uses a fresh key and nonce")
        from r1os.r1fs import import_file

        result = import_file(file)
        sys.stdout.write(f"{result.cid}\n")
        return
    from r1os.identity import public_key_from_ai_address
    from r1os.r1fs import new_key, wrap_key

    if share_with and not encrypt:
        fail("--share-with needs --encrypt")
    recipients = {r: public_key_from_ai_address(r) for r in share_with}
    key = new_key() if encrypt else None
    caller = access(node, key_file, token, writes=True)

    async def go() -> dict[str, Any]:
        async with _client(caller) as client:
            with _progress(f"adding {file.name}", size) as advance:
                out: dict[str, Any] = await client.add_file(
                    file, pin=pin > 0, replicas=max(pin, 1), key=key, progress=advance
                )
                return out

    out = _run(caller, go())
    if key is not None:
        out["key"] = key.hex()
        if recipients:
            out["shared"] = {r: wrap_key(key, pub).hex() for r, pub in recipients.items()}
    if json_out:
        print_json(out)
        return
    console.print(f"added [bold]{out['cid']}[/] {file.name} ({out['size']} bytes)", highlight=False)
    if key is not None:
        console.print(f"key {key.hex()}", highlight=False)
        for r, blob in out.get("shared", {}).items():
            console.print(f"key for {r}: {blob}", highlight=False)
        err_console.print("[dim]keep the key: `r1os fs get CID --key KEY` needs it; the node never saw it[/]")


def _add_tree(
    folder: Path, hidden: bool, pin: int, only_hash: bool, json_out: bool,
    node: str | None, key_file: Path | None, token: str | None,
) -> None:  # fmt: skip
    from r1os.r1fs._unixfs_dir import import_tree

    total = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file() and not p.is_symlink())
    if only_hash:
        with _progress(f"hashing {folder.name}", total) as advance:
            result = import_tree(folder, hidden=hidden, progress=advance)
        sys.stdout.write(f"{result.cid}\n")
        return
    caller = access(node, key_file, token, writes=True)

    async def go() -> dict[str, Any]:
        async with _client(caller) as client:
            with _progress(f"adding {folder.name}", total) as advance:
                out: dict[str, Any] = await client.add_tree(
                    folder, pin=pin > 0, replicas=max(pin, 1), hidden=hidden, progress=advance
                )
                return out

    out = _run(caller, go())
    if json_out:
        print_json(out)
        return
    console.print(
        f"added [bold]{out['cid']}[/] {folder.name}/ ({out['files']} files, {out['dirs']} folders, "
        f"{out['size']} bytes)",
        highlight=False,
    )


@app.command("get")
@handle_errors
def get(
    cid: str = typer.Argument(..., help="The file's or folder's CID."),
    output: str | None = typer.Option(
        None,
        "-o",
        "--output",
        help="Where to write it ('-' = stdout; a folder: its folder); default: ./CID.",
    ),
    key: str | None = typer.Option(
        None, "--key", help="Decrypt with this key (hex) from `fs add --encrypt`."
    ),
    key_blob: str | None = typer.Option(
        None,
        "--key-blob",
        help="Decrypt with a key shared to you (`fs add --share-with`), opened with your key.",
    ),
    key_file: Path | None = FsCallerKeyOpt,
    node: str | None = NodeOpt,
    token: str | None = TokenOpt,
) -> None:
    """Fetch a file (from any node that has it) and write it out (--key-file: also opens --key-blob)."""
    from r1os.r1fs import parse_cid

    cid = str(parse_cid(cid))
    file_key = _parse_key(key) if key else None
    if key_blob:
        from r1os.r1fs import unwrap_key

        me = load_key(key_file)
        if me is None:
            fail("--key-blob needs your key: --key-file KEYSTORE or $R1OS_PRIVATE_KEY")
        try:
            blob = bytes.fromhex(key_blob.removeprefix("0x"))
        except ValueError:
            fail("--key-blob must be hex (as printed by `fs add --share-with`)")
        file_key = unwrap_key(me, blob)

    caller = access(node, None, token)  # a read: no signature, so no key needed for it

    async def go() -> int:
        async with _client(caller) as client:
            if file_key is None and await _is_folder(client, cid):
                if output == "-":
                    fail(f"{cid} is a folder: write it to a folder with -o DIR (or list it: r1os fs ls)")
                dest = Path(output) if output else Path(cid)
                with _progress(f"getting {cid[-12:]}/", None) as advance:
                    counts = await client.get_tree(cid, dest, progress=advance)
                if counts["skipped"]:
                    err_console.print(
                        f"[yellow]skipped {counts['skipped']} symbolic link(s) pointing outside the folder[/]"
                    )
                err_console.print(
                    f"wrote {counts['files']} files in {counts['dirs']} folders to {dest}", highlight=False
                )
                return -1
            if output == "-":
                total = 0
                async for piece in client.stream(cid, key=file_key):
                    sys.stdout.buffer.write(piece)
                    total += len(piece)
                sys.stdout.buffer.flush()
                return total
            stat = await client.stat(cid)
            dest = Path(output) if output else Path(cid)
            with _progress(f"getting {cid[-12:]}", stat.get("size")) as advance:
                n: int = await client.get_to(cid, dest, key=file_key, progress=advance)
                return n

    total = _run(caller, go())
    if output != "-" and total >= 0:
        err_console.print(f"wrote {total} bytes to {output or cid}", highlight=False)


async def _is_folder(client: R1fsClient, cid: str) -> bool:
    from r1os.r1fs import R1fsError

    try:
        await client.list_dir(cid)
    except R1fsError as exc:
        if exc.cause == "not_a_directory":
            return False
        raise
    return True


@app.command("pin")
@handle_errors
def pin(
    cid: str = typer.Argument(..., help="The file's CID."),
    replicas: int = typer.Option(1, "--replicas", "-n", min=1, max=64, help="Copies on distinct nodes."),
    node: str | None = NodeOpt,
    key_file: Path | None = FsCallerKeyOpt,
    token: str | None = TokenOpt,
) -> None:
    """Keep a file on the node and ask the network for N copies in all (your pin: only you, or the
    node's operator, can release it)."""
    caller = access(node, key_file, token, writes=True)

    async def go() -> dict[str, Any]:
        async with _client(caller) as client:
            out: dict[str, Any] = await client.pin(cid, replicas)
            return out

    out = _run(caller, go())
    console.print(
        f"pinned {out['cid']} ({out['size']} bytes), {out['replicas']} replica(s) wanted", highlight=False
    )


@app.command("unpin")
@handle_errors
def unpin(
    cid: str = typer.Argument(..., help="The file's CID."),
    node: str | None = NodeOpt,
    pinner: str | None = typer.Option(
        None, "--pinner", help="The node's operator only: release this address's pin (default: every pin)."
    ),
    key_file: Path | None = FsCallerKeyOpt,
    token: str | None = TokenOpt,
) -> None:
    """Release your pin (or, as the node's operator, any) and its replication request; blocks no pin
    needs go at the next GC."""
    caller = access(node, key_file, token, writes=True)

    async def go() -> dict[str, Any]:
        async with _client(caller) as client:
            out: dict[str, Any] = await client.unpin(cid, pinner=pinner)
            return out

    out = _run(caller, go())
    console.print(f"{'unpinned' if out['unpinned'] else 'was not pinned:'} {out['cid']}", highlight=False)


@app.command("ls")
@handle_errors
def ls(
    cid: str | None = typer.Argument(None, help="A folder's CID (or CID/path) to list; none: the pins."),
    node: str | None = NodeOpt,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    token: str | None = TokenOpt,
) -> None:
    """A folder's entries, or without a CID the files pinned on the node (by a user, or as a replica)."""
    caller = access(node, None, token)
    if cid is not None:
        root, _, path = cid.removeprefix("/ipfs/").partition("/")

        async def listing() -> list[dict[str, Any]]:
            async with _client(caller) as client:
                return await client.list_dir(root, path)

        entries = _run(caller, listing())
        if json_out:
            print_json(entries)
            return
        for e in entries:
            size = e["size"] if e["size"] is not None else "-"
            name = e["name"] + ("/" if e["type"] == "directory" else "")
            console.print(f"{e['cid']}  {size:>12}  {name}", highlight=False)
        return

    async def go() -> list[dict[str, Any]]:
        async with _client(caller) as client:
            out: list[dict[str, Any]] = await client.ls()
            return out

    pins = _run(caller, go())
    if json_out:
        print_json(pins)
        return
    if not pins:
        console.print("[dim]no pins[/]")
    for p in pins:
        console.print(
            f"{p['cid']}  {p.get('size', '?'):>12}  {p.get('kind')}  x{p.get('replicas', 1)}", highlight=False
        )


@app.command("stat")
@handle_errors
def stat(
    cid: str = typer.Argument(..., help="The file's CID."),
    node: str | None = NodeOpt,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    token: str | None = TokenOpt,
) -> None:
    """Size, local state, providers and replica count of a file."""
    caller = access(node, None, token)

    async def go() -> dict[str, Any]:
        async with _client(caller) as client:
            out: dict[str, Any] = await client.stat(cid)
            return out

    out = _run(caller, go())
    if json_out:
        print_json(out)
        return
    for k in ("cid", "codec", "size", "local", "complete", "pinned", "replicas_wanted", "replicas_live"):
        if k in out:
            console.print(f"[dim]{k:>16}[/] {out[k]}", highlight=False)
    for p in out.get("providers", []):
        state = "online" if p["alive"] else "gone"
        console.print(f"[dim]{'provider':>16}[/] {p['address']} {state}", highlight=False)


@app.command("gc")
@handle_errors
def gc(
    node: str | None = NodeOpt,
    token: str | None = TokenOpt,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Remove the blocks no pin needs (the node's operator only: its API token, found by itself on the
    node's machine)."""
    caller = access(node, None, token, operator=True)

    async def go() -> dict[str, Any]:
        async with _client(caller) as client:
            out: dict[str, Any] = await client.gc()
            return out

    out = _run(caller, go())
    if json_out:
        print_json(out)
        return
    console.print(
        f"removed {out['removed']} block(s) ({out['freed']} bytes), kept {out['kept']}"
        + (" [yellow](busy: a write was in progress, run it again later)[/]" if out.get("busy") else ""),
        highlight=False,
    )


@app.command("import")
@handle_errors
def import_car(
    file: Path = typer.Argument(..., help="A CARv1 file.", exists=True, dir_okay=False, readable=True),
    pin: int = typer.Option(1, "--pin", min=0, max=64, help="Copies to keep on distinct nodes (0: no pin)."),
    node: str | None = NodeOpt,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    key_file: Path | None = FsCallerKeyOpt,
    token: str | None = TokenOpt,
) -> None:
    """Import a CAR (as `ipfs dag import`): the node checks every block against its CID, then pins the
    CAR's roots; prints the root CIDs."""
    caller = access(node, key_file, token, writes=True)
    size = file.stat().st_size

    async def go() -> dict[str, Any]:
        async with _client(caller) as client:
            with _progress(f"importing {file.name}", size) as advance:
                out: dict[str, Any] = await client.import_car(
                    file, pin=pin > 0, replicas=max(pin, 1), progress=advance
                )
                return out

    out = _run(caller, go())
    if json_out:
        print_json(out)
        return
    for root in out["roots"]:
        sys.stdout.write(f"{root}\n")
    err_console.print(
        f"imported {out['blocks']} block(s) from {file.name}" + (", roots pinned" if out["pinned"] else ""),
        highlight=False,
    )


@app.command("export")
@handle_errors
def export_car(
    cid: str = typer.Argument(..., help="The root CID (a file or a folder)."),
    output: Path | None = typer.Option(
        None, "-o", "--output", help="Where to write the CAR; default: ./CID.car."
    ),
    node: str | None = NodeOpt,
    token: str | None = TokenOpt,
) -> None:
    """Write the whole DAG under CID as a CARv1 (as `ipfs dag export`), from any node that has it; every
    block is checked against its CID on the way."""
    from r1os.r1fs import parse_cid

    cid = str(parse_cid(cid))
    dest = output or Path(f"{cid}.car")
    caller = access(node, None, token)

    async def go() -> int:
        async with _client(caller) as client:
            with _progress(f"exporting {cid[-12:]}", None) as advance:
                return await client.export_car(cid, dest, progress=advance)

    total = _run(caller, go())
    err_console.print(f"wrote {total} bytes to {dest}", highlight=False)
