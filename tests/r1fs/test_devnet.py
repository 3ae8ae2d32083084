"""End to end on a devnet of real node processes (no chain): R1FS across nodes with CSTORE providers.

Add on one node, get on another byte-identical; a corrupted block at one provider is detected and fetched
from another; a killed holder of a pinned file is replaced within the grace period plus 30 s.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from r1os.devnet import Devnet
from r1os.devnet._state import DevnetState, pid_alive
from r1os.identity import NodeKey
from r1os.r1fs import CHUNK_SIZE, BlockNotFound, R1fs, R1fsClient, import_bytes, parse_cid
from r1os.r1fs._store import BlockStore
from tests.conftest import async_wait_for, wait_for
from tests.r1fs._content import mod251, rot
from tests.r1fs.conftest import devnet_with

JS = json.loads((Path(__file__).parent / "vectors" / "js_importer.json").read_text())["vectors"]
HB = 1.0
GRACE = 4.0
ENV = {"R1OS_R1FS__GRACE": str(GRACE), "R1OS_R1FS__RECONCILE_INTERVAL": "0.5"}
#: A user of the network: adds and pins are signed by its key (and count against its quota).
USER = NodeKey.generate()


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Devnet, DevnetState]]:
    with devnet_with(tmp_path_factory, "r1fs-devnet", ENV, nodes=5) as net:
        yield net


def store_of(state: DevnetState, i: int) -> BlockStore:
    return BlockStore(Path(state.nodes[i].home) / "services" / "r1fs" / "blocks", readonly=True)


async def stat(url: str, cid: str) -> dict[str, Any]:
    async with R1fsClient(url) as c:  # a read: anonymous
        return await c.stat(cid)


async def stats(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as c:
        return (await c.get(f"{url}/v1/r1fs/stats")).json()  # type: ignore[no-any-return]


async def test_add_on_one_node_get_on_another(devnet: tuple[Devnet, DevnetState]) -> None:
    _, state = devnet
    a, c = state.nodes[0], state.nodes[2]
    data = mod251(20 * 1024 * 1024 + 123)
    async with R1fsClient(a.url, key=USER) as ca:
        out = await ca.add_bytes(data)
    assert out["cid"] == str(import_bytes(data).cid)

    async def announced() -> bool:
        return bool((await stat(c.url, out["cid"]))["providers"])

    await async_wait_for(announced, 15, "the provider record to reach node C")
    async with R1fsClient(c.url, key=USER) as cc:
        got = await cc.get_bytes(out["cid"])
    assert got == data
    assert (await stats(c.url))["fetched_blocks"] >= 81
    # The gateway on C now serves it from C's own store, ranges included.
    async with httpx.AsyncClient(timeout=30) as h:
        r = await h.get(
            f"{c.url}/ipfs/{out['cid']}", headers={"Range": f"bytes={CHUNK_SIZE - 5}-{CHUNK_SIZE + 4}"}
        )
    assert r.status_code == 206 and r.content == data[CHUNK_SIZE - 5 : CHUNK_SIZE + 5]


async def test_corrupted_block_at_a_provider_is_fetched_from_another(
    devnet: tuple[Devnet, DevnetState],
) -> None:
    _, state = devnet
    a, d = state.nodes[0], state.nodes[3]
    data = mod251(6 * CHUNK_SIZE, start=99)
    async with R1fsClient(a.url, key=USER) as ca:
        out = await ca.add_bytes(data, replicas=2)
    cid = out["cid"]

    async def two_live() -> bool:
        s = await stat(a.url, cid)
        return s["replicas_live"] >= 2 and all(p.get("size") == len(data) for p in s["providers"])

    await async_wait_for(two_live, 30, "a second copy")
    holders = [p["address"] for p in (await stat(a.url, cid))["providers"]]
    # Rot every leaf on the original holder's disk: whichever block D asks it for is bad.
    store = store_of(state, 0)
    leaves = [x for x in store.dag_blocks(parse_cid(cid)) if x.codec == 0x55]
    for leaf in leaves:  # one flipped bit per block, in place in the node's pack file
        rot(store, leaf)
    if d.address.lower() in holders:  # D must fetch, not read its own copy
        d = state.nodes[4] if state.nodes[4].address.lower() not in holders else state.nodes[1]
    before = (await stats(d.url))["corrupt_from_peer"]
    async with R1fsClient(d.url, key=USER) as cd:
        got = await cd.get_bytes(cid)
    assert got == data
    assert (await stats(d.url))["corrupt_from_peer"] > before


async def test_killed_holder_is_replaced(devnet: tuple[Devnet, DevnetState]) -> None:
    dn, state = devnet
    a = state.nodes[1]
    data = mod251(3 * CHUNK_SIZE + 7, start=5)
    async with R1fsClient(a.url, key=USER) as ca:
        out = await ca.add_bytes(data, replicas=3)
    cid = out["cid"]

    async def live_holders(want: int, url: str = a.url, exclude: str = "") -> list[str]:
        s = await stat(url, cid)
        alive = [p["address"] for p in s["providers"] if p["alive"] and p["address"] != exclude]
        return alive if len(alive) >= want else []

    holders = await async_wait_for(lambda: live_holders(3), 30, "3 replicas")
    victim = next(n for n in state.nodes if n.address.lower() in holders and n.address != a.address)
    dn.stop_node(victim.name, kill=True)
    t0 = time.monotonic()
    replaced = await async_wait_for(
        lambda: live_holders(3, exclude=victim.address.lower()), GRACE + 30, "a replacement replica"
    )
    assert victim.address.lower() not in replaced and len(replaced) == 3
    assert time.monotonic() - t0 <= GRACE + 30
    # The newcomer really holds every block.
    newcomer = next(n for n in state.nodes if n.address.lower() in set(replaced) - set(holders))
    idx = state.nodes.index(newcomer)
    assert store_of(state, idx).is_complete(parse_cid(cid), verify=True)
    # The victim comes back with its copy: one replica too many, so the last in rendezvous order drops it.
    victim = dn.start_node(victim.name)  # its URL may change if its port was taken meanwhile

    async def back_to_three() -> bool:
        # Settled: A counts 3 live copies, and the victim's own pins agree with what A sees of it
        # (it either announced its copy again and someone else dropped one, or it dropped its own).
        s = await stat(a.url, cid)
        alive = {p["address"] for p in s["providers"] if p["alive"]}
        async with R1fsClient(victim.url, key=USER) as cv:
            keeps = cid in {p["cid"] for p in await cv.ls()}
        return len(alive) == 3 and keeps == (victim.address.lower() in alive)

    await async_wait_for(back_to_three, 40, "the surplus replica to be dropped")


@pytest.mark.slow
async def test_200_mib_added_on_a_fetched_on_c(devnet: tuple[Devnet, DevnetState], tmp_path: Path) -> None:
    """The issue's size: 200 MiB added on node A, fetched on node C, byte-identical."""
    dn, _ = devnet
    running = [n for n in dn.state().nodes if pid_alive(n.pid)]  # another test may have killed one
    a, c = running[0], running[2]
    src, dst = tmp_path / "in.bin", tmp_path / "out.bin"
    with open(src, "wb") as fh:  # noqa: ASYNC230 (test setup)
        for i in range(200):
            fh.write(mod251(1024 * 1024, start=i * 1024 * 1024 + 3))
    before = [(await stats(n.url))["local_served"] for n in (a, c)]
    async with R1fsClient(a.url, key=USER) as ca:  # a node on this machine: the file goes by its descriptor
        out = await ca.add_file(src)
    assert out["size"] == 200 * 1024 * 1024

    async def announced() -> bool:
        return bool((await stat(c.url, out["cid"]))["providers"])

    await async_wait_for(announced, 15, "the provider record to reach node C")
    async with R1fsClient(c.url, key=USER) as cc:
        assert await cc.get_to(out["cid"], dst) == out["size"]
    assert sha256_file(dst) == sha256_file(src)
    assert [(await stats(n.url))["local_served"] for n in (a, c)] == [before[0] + 1, before[1] + 1]


async def test_files_over_http_when_the_local_socket_is_not_used(
    devnet: tuple[Devnet, DevnetState], tmp_path: Path
) -> None:
    """Clients elsewhere (or with `local=False`) stream through HTTP: same CIDs, same bytes."""
    _, state = devnet
    a, c = state.nodes[0], state.nodes[3]
    src, dst = tmp_path / "in.bin", tmp_path / "out.bin"
    src.write_bytes(mod251(5 * CHUNK_SIZE + 17, start=11))
    before = (await stats(a.url))["local_served"]
    async with R1fsClient(a.url, key=USER, local=False) as ca:
        out = await ca.add_file(src)
    assert out["cid"] == str(import_bytes(src.read_bytes()).cid)

    async def announced() -> bool:
        return bool((await stat(c.url, out["cid"]))["providers"])

    await async_wait_for(announced, 15, "the provider record to reach node D")
    seen: list[int] = []
    async with R1fsClient(c.url, key=USER, local=False) as cc:
        assert await cc.get_to(out["cid"], dst, progress=seen.append) == out["size"]
        assert sum(seen) == out["size"]
        nobody = str(import_bytes(os.urandom(64)).cid)
        with pytest.raises(BlockNotFound):
            await cc.get_to(nobody, tmp_path / "nothing.bin")
    assert dst.read_bytes() == src.read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["in.bin", "out.bin"]  # no .part files left
    with R1fs(c.url, local=False) as blocking:  # a read: anonymous
        assert blocking.get_to(out["cid"], tmp_path / "again.bin") == out["size"]
    assert (tmp_path / "again.bin").read_bytes() == src.read_bytes()  # noqa: ASYNC240
    assert (await stats(a.url))["local_served"] == before


def sha256_file(path: Path) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while piece := fh.read(1 << 20):
            h.update(piece)
    return h.hexdigest()


# -- the CLI against the same devnet --------------------------------------------------------------


def cli(*args: str) -> Any:
    from typer.testing import CliRunner

    from r1os.cli import app

    return CliRunner().invoke(app, ["fs", *args])


def test_cli_add_get_stat_ls_pin_unpin(devnet: tuple[Devnet, DevnetState], tmp_path: Path) -> None:
    dn, _ = devnet
    running = [n for n in dn.state().nodes if pid_alive(n.pid)]
    a, b = running[0].url, running[1].url
    src = tmp_path / "f.bin"
    src.write_bytes(mod251(CHUNK_SIZE + 1))
    want = next(v["cid"] for v in JS if v["name"] == "256KiB+1")  # from the JS importer, not r1os

    only = cli("add", "--only-hash", str(src))
    assert only.exit_code == 0 and only.output.strip() == want
    added = cli("add", str(src), "--node", a, "--json")
    assert added.exit_code == 0, added.output
    assert json.loads(added.output)["cid"] == want
    got = cli("get", want, "-o", str(tmp_path / "g.bin"), "--node", b)
    assert got.exit_code == 0, got.output
    assert (tmp_path / "g.bin").read_bytes() == src.read_bytes()
    st = cli("stat", want, "--node", b, "--json")
    assert json.loads(st.output)["size"] == CHUNK_SIZE + 1
    assert want in cli("ls", "--node", a).output
    pinned = cli("pin", want, "--node", b)
    assert pinned.exit_code == 0 and "pinned" in pinned.output
    assert "unpinned" in cli("unpin", want, "--node", b).output


def test_cli_encrypted_round_trip(devnet: tuple[Devnet, DevnetState], tmp_path: Path) -> None:
    dn, _ = devnet
    running = [n for n in dn.state().nodes if pid_alive(n.pid)]
    src = tmp_path / "secret.txt"
    src.write_bytes(b"the launch codes " * 1000)
    added = cli("add", str(src), "--encrypt", "--node", running[0].url, "--json")
    assert added.exit_code == 0, added.output
    out = json.loads(added.output)
    # The node stores only ciphertext: its gateway does not serve the plaintext.
    raw = httpx.get(f"{running[1].url}/ipfs/{out['cid']}", timeout=30).content
    assert b"launch codes" not in raw and len(raw) > src.stat().st_size
    got = cli("get", out["cid"], "--key", out["key"], "-o", str(tmp_path / "p.txt"), "--node", running[1].url)
    assert got.exit_code == 0, got.output
    assert (tmp_path / "p.txt").read_bytes() == src.read_bytes()
    wrong = cli(
        "get", out["cid"], "--key", "00" * 32, "-o", str(tmp_path / "w.txt"), "--node", running[1].url
    )
    assert wrong.exit_code == 1 and "authentication" in wrong.output
    assert not (tmp_path / "w.txt").exists()  # no half-written plaintext left behind


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    bad = cli("get", "not-a-cid")
    assert bad.exit_code == 1 and "not a CID" in bad.output and "Traceback" not in bad.output
    down = cli(
        "stat", "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku", "--node", "http://127.0.0.1:9"
    )
    assert down.exit_code == 1 and "cannot reach the node" in down.output
    f = tmp_path / "x"
    f.write_bytes(b"x")
    mixed = cli("add", str(f), "--only-hash", "--encrypt")
    assert mixed.exit_code == 1 and "do not mix" in mixed.output


def test_blocking_client(devnet: tuple[Devnet, DevnetState], tmp_path: Path) -> None:
    from r1os.r1fs import R1fs, new_key

    dn, _ = devnet
    running = [n for n in dn.state().nodes if pid_alive(n.pid)]
    data = mod251(CHUNK_SIZE * 2, start=17)
    with R1fs(running[0].url, key=USER) as fa, R1fs(running[3].url) as fb:
        out = fa.add_bytes(data)
        assert fb.get_bytes(out["cid"]) == data
        assert fb.stat(out["cid"])["size"] == len(data)
        src = tmp_path / "s.bin"
        src.write_bytes(data)
        key = new_key()
        enc = fa.add_file(src, key=key)
        assert fb.get_to(enc["cid"], tmp_path / "o.bin", key=key) == len(data)
        assert (tmp_path / "o.bin").read_bytes() == data


def test_cli_key_shared_with_another_node(
    devnet: tuple[Devnet, DevnetState], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from r1os.identity import NodeKey

    dn, _ = devnet
    running = [n for n in dn.state().nodes if pid_alive(n.pid)]
    friend = NodeKey.generate()
    src = tmp_path / "for-friend.txt"
    src.write_bytes(b"only for you " * 100)
    added = cli(
        "add", str(src), "--encrypt", "--share-with", friend.ai_address, "--node", running[0].url, "--json"
    )
    assert added.exit_code == 0, added.output
    out = json.loads(added.output)
    blob = out["shared"][friend.ai_address]
    monkeypatch.setenv("R1OS_PRIVATE_KEY", friend.private_key_hex)
    got = cli("get", out["cid"], "--key-blob", blob, "-o", str(tmp_path / "o.txt"), "--node", running[2].url)
    assert got.exit_code == 0, got.output
    assert (tmp_path / "o.txt").read_bytes() == src.read_bytes()
    monkeypatch.setenv("R1OS_PRIVATE_KEY", NodeKey.generate().private_key_hex)  # someone else
    denied = cli(
        "get", out["cid"], "--key-blob", blob, "-o", str(tmp_path / "x.txt"), "--node", running[2].url
    )
    assert denied.exit_code == 1 and not (tmp_path / "x.txt").exists()


def test_upload_cut_off_mid_body_pins_nothing(devnet: tuple[Devnet, DevnetState]) -> None:
    import socket
    from urllib.parse import urlsplit

    from r1os.wire import sign_request

    dn, _ = devnet
    node = next(n for n in dn.state().nodes if pid_alive(n.pid))
    before = {p["cid"] for p in httpx.get(f"{node.url}/v1/r1fs/ls", timeout=10).json()["pins"]}
    u = urlsplit(node.url)
    auth = sign_request(USER, network=dn.state().network, target=node.address, method="POST",
                        path="/v1/r1fs/add", body=None)  # fmt: skip
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(
            b"POST /v1/r1fs/add HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
            b"Authorization: " + auth.encode() + b"\r\n"
            b"Content-Length: 1000000\r\n\r\n" + b"q" * 300_000
        )
    # The node notices the cut, keeps serving, and pinned nothing from the broken upload.
    r = httpx.get(f"{node.url}/v1/r1fs/ls", timeout=10)
    assert r.status_code == 200 and {p["cid"] for p in r.json()["pins"]} == before
    assert httpx.get(f"{node.url}/v1/health", timeout=10).status_code == 200
    wait_for(lambda: "upload ended early" in node.log_path.read_text(), 10, "the refusal in the node's log")


async def test_a_failed_local_get_leaves_no_file(devnet: tuple[Devnet, DevnetState], tmp_path: Path) -> None:
    _, state = devnet
    nobody = str(import_bytes(b"no node holds these bytes " + os.urandom(16)).cid)
    dst = tmp_path / "out.bin"
    before = (await stats(state.nodes[0].url))["local_refused"]
    async with R1fsClient(state.nodes[0].url) as c:
        with pytest.raises(BlockNotFound):
            await c.get_to(nobody, dst)
    assert os.listdir(tmp_path) == []  # neither the file nor its .part
    assert (await stats(state.nodes[0].url))["local_refused"] == before + 1


async def test_a_range_or_head_on_a_node_without_the_file_fetches_only_what_it_needs(
    devnet: tuple[Devnet, DevnetState],
) -> None:
    _, state = devnet
    a, c = state.nodes[0], state.nodes[2]
    data = os.urandom(40 * CHUNK_SIZE + 77)  # 41 leaves under one root, none on any node yet
    async with R1fsClient(a.url, key=USER) as ca:
        cid = (await ca.add_bytes(data))["cid"]

    async def announced() -> bool:
        return bool((await stat(c.url, cid))["providers"])

    await async_wait_for(announced, 15, "the provider record to reach node C")
    before = (await stats(c.url))["fetched_blocks"]
    async with httpx.AsyncClient(timeout=30) as h:
        head = await h.head(f"{c.url}/ipfs/{cid}")
        assert head.status_code == 200 and head.headers["content-length"] == str(len(data))
        assert (await stats(c.url))["fetched_blocks"] == before + 1  # the root alone
        lo = 10 * CHUNK_SIZE + 5
        r = await h.get(f"{c.url}/ipfs/{cid}", headers={"Range": f"bytes={lo}-{lo + 99}"})
    assert r.status_code == 206 and r.content == data[lo : lo + 100]
    assert (await stats(c.url))["fetched_blocks"] == before + 2  # and the one leaf holding the bytes
    assert not (await stat(c.url, cid))["complete"]
