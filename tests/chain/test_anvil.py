"""anvil process control: context manager, detached with pid file and saved state, bad binary."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from r1os.chain.anvil import Anvil, detached_info, find_anvil, stop_detached, wait_rpc
from r1os.chain.provider import RpcProvider
from r1os.errors import ChainError

from .conftest import _anvil_or_skip


async def _balance(url: str, address: str) -> int:
    body = {"jsonrpc": "2.0", "id": 1, "method": "eth_getBalance", "params": [address, "latest"]}
    async with httpx.AsyncClient() as http:
        return int((await http.post(url, json=body)).json()["result"], 16)


async def test_context_manager_starts_and_stops() -> None:
    _anvil_or_skip()
    async with Anvil() as node:
        assert await wait_rpc(node.rpc_url, 5) == 31337
        proc = node.proc
        assert proc is not None and proc.poll() is None
    assert proc.poll() is not None
    with pytest.raises(ChainError, match="no RPC answer"):
        await wait_rpc(node.rpc_url, 0.3)


async def test_detached_keeps_state_across_restart(tmp_path: Path) -> None:
    _anvil_or_skip()
    who = "0x00000000000000000000000000000000000000aa"
    info = await Anvil(state_dir=tmp_path).start_detached()
    assert detached_info(tmp_path) == info
    assert (tmp_path / "anvil.pid").read_text().strip() == str(info["pid"])
    with pytest.raises(ChainError, match="already runs"):
        await Anvil(state_dir=tmp_path).start_detached()
    await RpcProvider(info["rpc"], devnet=True).set_balance(who, 12345)
    assert stop_detached(tmp_path) is True
    assert detached_info(tmp_path) is None and not (tmp_path / "anvil.pid").exists()
    assert (tmp_path / "state.json").exists()

    again = await Anvil(state_dir=tmp_path).start_detached()
    try:
        assert await _balance(again["rpc"], who) == 12345
    finally:
        assert stop_detached(tmp_path) is True
    assert stop_detached(tmp_path) is False


async def test_bad_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("R1OS_ANVIL", str(tmp_path / "nope"))
    with pytest.raises(ChainError, match="R1OS_ANVIL"):
        find_anvil()
    fake = tmp_path / "anvil"
    fake.write_text("#!/bin/sh\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("R1OS_ANVIL", str(fake))
    with pytest.raises(ChainError, match="exited with code 3"):
        await Anvil().start()


async def test_public_rpc_cannot_travel_in_time() -> None:
    with pytest.raises(ChainError, match="not a local devnet"):
        await RpcProvider("http://127.0.0.1:9").advance_time(60)


async def test_port_taken_is_retried_on_another() -> None:
    _anvil_or_skip()
    async with Anvil() as first:
        second = Anvil()
        second.port = first.port  # as if another process took the chosen port meanwhile
        async with second:
            assert second.port != first.port
            assert await wait_rpc(second.rpc_url, 5) == 31337
        with pytest.raises(ChainError, match="exited"):
            await Anvil(port=first.port).start()  # an explicit port is not changed
