"""The local fast path: clients on the node's machine hand it open files over a Unix socket."""

from __future__ import annotations

import array
import asyncio
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest

from r1os.r1fs import CHUNK_SIZE, BlockNotFound, R1fsError, R1fsService, import_bytes
from r1os.r1fs._local import _raw, local_call
from tests.conftest import async_wait_for
from tests.r1fs._content import mod251
from tests.r1fs.conftest import Served

DATA = mod251(3 * CHUNK_SIZE + 999, start=3)
CID = str(import_bytes(DATA).cid)


def name_of(svc: R1fsService) -> str:
    assert svc.local is not None, "the local socket did not open"
    return svc.local.name


def operator(svc: R1fsService, request: dict[str, Any]) -> dict[str, Any]:
    """An add as the node's operator (its API token in `auth`); a get needs nobody."""
    if request.get("op") != "add" or "auth" in request:
        return request
    return {**request, "auth": f"Bearer {svc.ctx.auth.token}"}


async def call(svc: R1fsService, request: dict[str, Any], fd: int) -> dict[str, Any]:
    seen: list[int] = []
    request = operator(svc, request)
    out = await asyncio.to_thread(local_call, name_of(svc), request, fd, timeout=10, progress=seen.append)
    assert sum(seen) == out.get("size", 0)  # progress adds up to the whole file
    return out


async def test_add_and_get_through_handed_over_files(served: Served, tmp_path: Path) -> None:
    assert (await served.client.get("/v1/r1fs/local")).json() == {"socket": name_of(served.svc)}
    src = tmp_path / "in.bin"
    src.write_bytes(DATA)
    fd = os.open(src, os.O_RDONLY)
    os.lseek(fd, 12345, os.SEEK_SET)  # the node reads by position: the client's offset does not matter
    try:
        out = await call(served.svc, {"op": "add", "pin": True}, fd)
        assert os.lseek(fd, 0, os.SEEK_CUR) == 12345  # and is left alone
    finally:
        os.close(fd)
    assert out["cid"] == CID and out["size"] == len(DATA) and out["pinned"] is True
    assert CID in served.svc.pins
    dest = tmp_path / "out.bin"
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    try:
        got = await call(served.svc, {"op": "get", "cid": CID}, fd)
    finally:
        os.close(fd)
    assert got["size"] == len(DATA) and dest.read_bytes() == DATA


async def test_refusals_are_clear_and_the_socket_keeps_serving(served: Served, tmp_path: Path) -> None:
    name = name_of(served.svc)
    src = tmp_path / "in.bin"
    src.write_bytes(b"x" * 100)
    reader = os.open(src, os.O_RDONLY)
    writer = os.open(tmp_path / "out.bin", os.O_WRONLY | os.O_CREAT)
    r, w = os.pipe()
    try:
        cases: list[tuple[dict[str, Any], int, type[Exception], str]] = [
            ({"op": "get", "cid": CID}, writer, BlockNotFound, "no online node"),  # not here, no peers
            ({"op": "get", "cid": "not-a-cid"}, writer, R1fsError, "not a CID"),
            ({"op": "get"}, writer, R1fsError, "no cid"),
            ({"op": "delete"}, reader, R1fsError, "op"),
            ({"op": "add", "replicas": 1000}, reader, R1fsError, "replicas"),
            ({"op": "add", "extra": 1}, reader, R1fsError, "extra"),
            ({"op": "add"}, r, R1fsError, "not a regular file"),
            ({"op": "add"}, writer, R1fsError, "Bad file descriptor"),  # opened write-only
        ]
        for request, fd, exc, text in cases:
            with pytest.raises(exc, match=text):
                await asyncio.to_thread(local_call, name, operator(served.svc, request), fd, timeout=10)

        def raw(payload: bytes, fds: list[int]) -> dict[str, Any]:
            with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
                s.settimeout(10)
                s.connect(_raw(name))
                s.sendmsg(
                    [payload], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))] if fds else []
                )
                return json.loads(s.recv(65536))  # type: ignore[no-any-return]

        assert "exactly one" in (await asyncio.to_thread(raw, b'{"op": "add"}', []))["error"]
        assert "exactly one" in (await asyncio.to_thread(raw, b'{"op": "add"}', [reader, reader]))["error"]
        assert "bad local request" in (await asyncio.to_thread(raw, b"\xff garbage", [reader]))["error"]
        assert "bad local request" in (await asyncio.to_thread(raw, b"[1, 2]", [reader]))["error"]
    finally:
        for fd in (reader, writer, r, w):
            os.close(fd)
    assert served.svc.local is not None and served.svc.local.refused == 12
    ok = await call(served.svc, {"op": "add", "pin": False}, os.open(src, os.O_RDONLY))
    assert ok["size"] == 100


async def test_a_file_over_the_limit_is_refused(served: Served, tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with open(big, "wb") as fh:  # noqa: ASYNC230
        fh.truncate(served.svc.settings.max_upload + 1)  # sparse: costs no disk
    fd = os.open(big, os.O_RDONLY)
    try:
        with pytest.raises(R1fsError, match="exceeds the limit"):
            request = operator(served.svc, {"op": "add"})
            await asyncio.to_thread(local_call, name_of(served.svc), request, fd, timeout=10)
    finally:
        os.close(fd)
    assert served.svc.pins == {}


async def test_a_client_that_hangs_up_mid_request_does_not_hurt_the_node(
    served: Served, tmp_path: Path
) -> None:
    name = name_of(served.svc)

    def hang_up() -> None:
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as s:
            s.connect(_raw(name))  # and close without a word

    await asyncio.to_thread(hang_up)

    async def refused() -> bool:
        return served.svc.local is not None and served.svc.local.refused >= 1

    await async_wait_for(refused, 5, "a refusal")
    src = tmp_path / "in.bin"
    src.write_bytes(DATA)
    fd = os.open(src, os.O_RDONLY)
    try:
        assert (await call(served.svc, {"op": "add"}, fd))["cid"] == CID
    finally:
        os.close(fd)


def test_no_listener_is_a_connection_error(tmp_path: Path) -> None:
    src = tmp_path / "in.bin"
    src.write_bytes(b"x")
    fd = os.open(src, os.O_RDONLY)
    try:
        with pytest.raises(ConnectionError):
            local_call("@r1os-r1fs-nobody-listens-here", {"op": "add"}, fd, timeout=5)
    finally:
        os.close(fd)


async def test_silent_clients_hold_no_threads(served: Served, tmp_path: Path) -> None:
    """Clients that connect and say nothing are waited for on the loop: many of them at once do not
    stop an honest request (the node's thread pool has only a few threads)."""
    name = name_of(served.svc)
    silent = []
    for _ in range(20):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(_raw(name))
        silent.append(s)
    try:
        src = tmp_path / "in.bin"
        src.write_bytes(DATA)
        fd = os.open(src, os.O_RDONLY)
        try:
            out = await asyncio.wait_for(call(served.svc, {"op": "add"}, fd), 5)
        finally:
            os.close(fd)
        assert out["cid"] == CID
    finally:
        for s in silent:
            s.close()
