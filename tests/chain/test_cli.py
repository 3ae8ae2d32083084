"""The chain commands as a user runs them, on a devnet chain: the issue's demo through the CLI
(fresh key: faucet, licence buy + link, an epoch later rewards claim with oracle signatures), PoAI
jobs, `chain deploy` on any RPC, and bad input giving one readable line."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from r1os.chain.devnet import ChainInfo, setup_devnet_chain, stop_devnet_chain
from r1os.chain.digests import SignedAvailability
from r1os.chain.provider import RpcProvider
from r1os.cli.main import app
from r1os.identity import NodeKey, save_keystore

from .conftest import _anvil_or_skip

RELEASE_PER_EPOCH = 161_803_398 * 10**18 * 4500 // 10000 // 46224 // 1080
runner = CliRunner()


class Devnet:
    def __init__(self, dir: Path, info: ChainInfo, oracles: list[NodeKey]) -> None:
        self.dir, self.info, self.oracles = dir, info, oracles

    def r1os(self, *args: str, key: NodeKey | None = None, ok: bool = True) -> Any:
        env = {"R1OS_PRIVATE_KEY": key.private_key_hex} if key else {"R1OS_PRIVATE_KEY": ""}
        result = runner.invoke(app, [*args, "--dir", str(self.dir)], env=env)
        if ok:
            assert result.exit_code == 0, (args, result.output, result.stderr)
        return result

    def json(self, *args: str, key: NodeKey | None = None) -> Any:
        return json.loads(self.r1os(*args, "--json", key=key).stdout)

    def advance_epochs(self, n: int) -> None:
        asyncio.run(RpcProvider(self.info.rpc, devnet=True).advance_time(n * self.info.epoch_seconds))


@pytest.fixture(scope="module")
def devnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Devnet]:
    _anvil_or_skip()
    dir = tmp_path_factory.mktemp("devnet")
    oracles = [NodeKey.generate() for _ in range(3)]
    edge = NodeKey.generate()
    try:
        info = setup_devnet_chain(dir, [edge.private_key_hex], [o.address for o in oracles])
        yield Devnet(dir, info, oracles)
    finally:
        stop_devnet_chain(dir)


def test_demo_buy_link_claim(devnet: Devnet, tmp_path: Path) -> None:
    me = NodeKey.generate()
    devnet.r1os("token", "faucet", me.address)
    before = devnet.json("token", "balance", key=me)
    assert before["ETH"] == 10 * 10**18 and before["R1"] > 0

    bought = devnet.json("licence", "buy", "--link", me.address, key=me)
    token = bought["token_id"]
    assert devnet.json("token", "balance", key=me)["R1"] == before["R1"] - bought["price"]
    [lic] = devnet.json("licence", "ls", key=me)
    assert (lic["type"], lic["token_id"], lic["node"]) == ("ND", token, me.address)
    assert "ND" in devnet.r1os("licence", "ls", key=me).stdout  # the table

    devnet.advance_epochs(1)
    shown = devnet.json("rewards", "show", str(token))
    assert shown["claimable_epochs"] == 1 and shown["epoch_release"] == RELEASE_PER_EPOCH
    # Two oracles sign, each with its own key file (the oracle service will do this over HTTP).
    sig_file = tmp_path / "sigs.json"
    for oracle in devnet.oracles[1:]:
        key_file = save_keystore(oracle, tmp_path / f"{oracle.address}.json", "o", strength="light")
        sign = ["rewards", "sign", "--node", me.address, "--first-epoch", str(shown["next_claim_epoch"])]
        result = runner.invoke(
            app, [*sign, "-a", "255", "-o", str(sig_file), "-k", str(key_file)], env={"R1OS_PASSWORD": "o"}
        )
        assert result.exit_code == 0, result.output
    assert len(SignedAvailability.model_validate_json(sig_file.read_text()).signatures) == 2

    claimed = devnet.json("rewards", "claim", "--signatures", str(sig_file), key=me)
    assert claimed["amount"] == RELEASE_PER_EPOCH
    assert claimed["balance"] - claimed["balance_before"] == RELEASE_PER_EPOCH
    after = devnet.json("token", "balance", key=me)
    assert after["R1"] == before["R1"] - bought["price"] + RELEASE_PER_EPOCH

    again = devnet.r1os("rewards", "claim", "--signatures", str(sig_file), key=me, ok=False)
    assert again.exit_code == 1 and "nd: epochs already claimed" in again.stderr
    assert "Traceback" not in again.output


def test_bad_input_is_one_line(devnet: Devnet, tmp_path: Path) -> None:
    me = NodeKey.generate()
    bad = tmp_path / "bad.json"
    bad.write_text('{"node": "0x12"}')
    r = devnet.r1os("rewards", "claim", "--signatures", str(bad), key=me, ok=False)
    assert r.exit_code == 1 and "invalid signatures file" in r.stderr
    r = devnet.r1os("licence", "buy", ok=False)
    assert r.exit_code == 1 and "needs a key" in r.stderr and "R1OS_PRIVATE_KEY" in r.stderr
    r = devnet.r1os("licence", "buy", key=me, ok=False)  # no ETH for gas
    assert r.exit_code == 1 and "error:" in r.stderr
    r = devnet.r1os("token", "transfer", me.address, "1.0000000000000000001", key=me, ok=False)
    assert r.exit_code == 1 and "at most 18 decimals" in r.stderr
    r = runner.invoke(app, ["token", "balance", me.address, "--dir", str(tmp_path / "none")])
    assert r.exit_code == 1 and "no deployment file" in r.stderr and "devnet up" in r.stderr

    # Signatures from keys that are not oracles.
    devnet.r1os("token", "faucet", me.address)
    token = devnet.json("licence", "buy", "--link", me.address, key=me)["token_id"]
    devnet.advance_epochs(1)
    first = devnet.json("rewards", "show", str(token))["next_claim_epoch"]
    forged = SignedAvailability.make([NodeKey.generate(), NodeKey.generate()], me.address, first, [9])
    (tmp_path / "forged.json").write_text(forged.model_dump_json())
    r = devnet.r1os("rewards", "claim", "-s", str(tmp_path / "forged.json"), key=me, ok=False)
    assert r.exit_code == 1 and "controller: signer is not an oracle" in r.stderr


def test_keystore_key_and_unlink(devnet: Devnet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    me = NodeKey.generate()
    key_file = save_keystore(me, tmp_path / "k.json", "secret", strength="light")
    monkeypatch.setenv("R1OS_PASSWORD", "secret")
    devnet.r1os("token", "faucet", me.address)
    token = devnet.json("licence", "buy", "--key-file", str(key_file))["token_id"]
    node = NodeKey.generate().address
    devnet.r1os("licence", "link", str(token), node, "--key-file", str(key_file))
    assert devnet.json("licence", "ls", "--owner", me.address)[0]["node"] == node
    devnet.r1os("licence", "unlink", str(token), "--key-file", str(key_file))
    assert devnet.json("licence", "ls", "--owner", me.address)[0]["node"] is None
    monkeypatch.setenv("R1OS_PASSWORD", "wrong")
    r = devnet.r1os("licence", "unlink", str(token), "--key-file", str(key_file), ok=False)
    assert r.exit_code == 1 and "wrong password" in r.stderr


def test_job_commands(devnet: Devnet) -> None:
    me = NodeKey.generate()
    devnet.r1os("token", "faucet", me.address)
    devnet.r1os("job", "fund", "100", key=me)
    job = devnet.json("job", "create", "--nodes", "2", "--epochs", "2", "--price", "1.5", key=me)
    assert job["paid_in"] == 6_000_000
    status = devnet.json("job", "status", str(job["job_id"]))
    assert status["balance"] == 6_000_000 and status["owner"] == me.address
    assert "in escrow 6 USDC" in devnet.r1os("job", "status", str(job["job_id"])).stdout
    extended = devnet.json("job", "extend", str(job["job_id"]), "--epochs", "3", key=me)
    assert extended["end_epoch"] == status["end_epoch"] + 3
    assert devnet.json("job", "status", str(job["job_id"]))["balance"] == 15_000_000  # 2 x 5 x 1.5
    stranger = NodeKey.generate()
    devnet.r1os("token", "faucet", stranger.address)
    r = devnet.r1os("job", "extend", str(job["job_id"]), "--epochs", "1", key=stranger, ok=False)
    assert r.exit_code == 1 and "escrow: not the job owner" in r.stderr
    devnet.r1os("job", "end", str(job["job_id"]), key=me)
    r = devnet.r1os("job", "refund", str(job["job_id"]), key=me, ok=False)
    assert r.exit_code == 1 and "escrow: settlement window open" in r.stderr
    devnet.advance_epochs(2)
    assert devnet.json("job", "refund", str(job["job_id"]), key=me)["refunded"] == 15_000_000
    assert devnet.json("token", "balance", key=me)["USDC"] == 100_000_000


def test_chain_deploy_and_info(devnet: Devnet, tmp_path: Path) -> None:
    from r1os.chain.anvil import dev_private_key

    out = tmp_path / "dep.json"
    oracle = NodeKey.generate().address
    args = ["chain", "deploy", "--rpc", devnet.info.rpc, "--epoch-seconds", "120", "--oracle", oracle]
    result = runner.invoke(app, [*args, "--out", str(out)], env={"R1OS_PRIVATE_KEY": dev_private_key(1)})
    assert result.exit_code == 0, result.output
    dep = json.loads(out.read_text())
    assert dep["epoch_seconds"] == 120 and set(dep["contracts"]) >= {"R1", "NDLicence", "PoAIEscrow"}
    info = runner.invoke(app, ["chain", "info", "--deployment", str(out), "--json"])
    data = json.loads(info.stdout)
    assert data["oracles"] == [oracle] and data["min_signatures"] == 1 and data["current_epoch"] == 0
    # The faucet refuses a deployment it cannot mint on (deployed by another account).
    r = runner.invoke(app, ["token", "faucet", oracle, "--deployment", str(out)])
    assert r.exit_code == 1 and "only works on a local devnet" in r.stderr
