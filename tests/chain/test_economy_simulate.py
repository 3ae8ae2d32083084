"""`r1os economy simulate` on a short scenario: the CSV's totals equal the contracts' balances."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from r1os.chain.economy import Scenario, SimulationAnvil, calldata, load_scenario, schedule, simulate
from r1os.cli.main import app
from r1os.errors import ChainError

from ..contracts import model
from .conftest import R1, USDC, _anvil_or_skip

SHORT = {
    "name": "short",
    "epochs": 30,
    "nd_sold": [[1, 0], [20, 120]],
    "poai_usd_per_epoch": [[1, 0], [10, 20000]],
    "availability": [[255, 0.7], [100, 0.2], [0, 0.1]],
    "mnd_percent": [2, 0.5],
    "claim_every": 7,
    "mnd_cliff_epochs": 5,
}


def test_simulate_short_scenario(tmp_path: Path) -> None:
    _anvil_or_skip()
    path = tmp_path / "short.json"
    path.write_text(json.dumps(SHORT))  # with the R1/USDC pool (the default)
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["economy", "simulate", "--scenario", str(path), "--out", str(out), "--json"]
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output)
    with (out / "economy.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["epoch"]) for r in rows] == list(range(1, 31))
    last = rows[-1]
    # the simulation checked its event totals against the contracts (claimed amounts, totalSupply)
    # before writing; the CSV's last row carries those same figures
    assert float(last["minted_nd"]) == summary["minted_nd_r1"] > 0
    assert float(last["minted_mnd"]) == summary["minted_mnd_r1"] > 0
    assert float(last["minted_gnd"]) == summary["minted_gnd_r1"] > 0
    assert float(last["burned"]) == summary["burned_r1"] > 0
    assert float(last["total_supply"]) == summary["circulating_r1"]
    minted = summary["minted_nd_r1"] + summary["minted_mnd_r1"] + summary["minted_gnd_r1"]
    assert minted + summary["minted_other_r1"] - summary["burned_r1"] == pytest.approx(
        summary["circulating_r1"]
    )
    assert int(last["nd_sold"]) == summary["nd_sold"] == 120
    # with a pool: its seed is the only R1 not mined, and the pool's price and reserves are recorded
    assert summary["pool"] is True and summary["minted_other_r1"] == 1_000_000
    assert float(last["pool_price_usd"]) > 0 and float(last["pool_usdc"]) > 0 and float(last["pool_r1"]) > 0
    # the adoption the contract reports is the paper's formula over the final counters (~0.056)
    volume = round(summary["poai_volume_usd"] * 10**6)
    assert summary["adoption"] == model.adoption(120, volume) / 10**18
    assert 0.03 < summary["adoption"] < 0.1
    # adoption far below 1: most of what the MNDs earned is withheld
    assert float(last["mnd_withheld"]) > 10 * summary["minted_mnd_r1"]
    assert (out / "supply.png").stat().st_size > 10_000 and (out / "market.png").exists()
    # supply only grows by claims and shrinks by burns: the CSV is monotone where it must be
    for a, b in zip(rows, rows[1:], strict=False):
        for col in ("minted_nd", "minted_mnd", "minted_gnd", "burned", "nd_sold", "poai_volume_usd"):
            assert float(b[col]) >= float(a[col])


async def _read(url: str, to: str, signature: str, *args: object) -> int:
    """One uint256 view of a contract, read straight from the node."""
    data = "0x" + calldata(signature, *args).hex()
    async with httpx.AsyncClient() as http:
        reply = await http.post(
            url,
            json={
                "jsonrpc": "2.0",
                "id": 1,
                "method": "eth_call",
                "params": [{"to": to, "data": data}, "latest"],
            },
        )
    return int(reply.json()["result"], 16)


async def test_csv_totals_equal_contract_balances(tmp_path: Path) -> None:
    """The core on an anvil the test keeps (no pool: the owner-set ND price, the GND holder sells
    the buyers their R1): the CSV's last row against the contracts' own state."""
    _anvil_or_skip()
    out = tmp_path / "out"
    async with SimulationAnvil() as node:
        result = await simulate(
            Scenario.model_validate({**SHORT, "pool": False}), out, epochs=25, plot=False, anvil=node
        )
        c, url = result.contracts, node.rpc_url
        sold = await _read(url, c["NDLicence"], "total_minted()")
        claimed_nd = sum(
            [await _read(url, c["NDLicence"], "claimed_amount(uint256)", t) for t in range(1, sold + 1)]
        )
        gnd = await _read(url, c["MNDLicence"], "claimed_amount(uint256)", 1)
        mnd = sum([await _read(url, c["MNDLicence"], "claimed_amount(uint256)", t) for t in (2, 3)])
        withheld = sum([await _read(url, c["MNDLicence"], "withheld_amount(uint256)", t) for t in (2, 3)])
        supply = await _read(url, c["R1"], "totalSupply()")
        volume = await _read(url, c["PoAIEscrow"], "total_volume()")
        adoption = await _read(url, c["MNDLicence"], "adoption()")
    with (out / "economy.csv").open() as f:
        last = list(csv.DictReader(f))[-1]
    assert last["epoch"] == "25" and int(last["nd_sold"]) == sold > 0
    assert float(last["minted_nd"]) == claimed_nd / R1 > 0
    assert float(last["minted_gnd"]) == gnd / R1 > 0
    assert float(last["minted_mnd"]) == mnd / R1 > 0
    assert float(last["mnd_withheld"]) == withheld / R1 > 0
    assert float(last["total_supply"]) == supply / R1
    assert float(last["poai_volume_usd"]) == volume / USDC > 0
    assert float(last["adoption"]) == adoption / 10**18 == model.adoption(sold, volume) / 10**18
    assert result.total_supply == supply and result.totals.minted - result.totals.burned == supply
    assert not (out / "supply.png").exists()  # plot=False
    assert result.totals.minted_other == 0 and last["pool_price_usd"] == ""  # no pool, no seed


def test_scenarios_load_and_bad_input(tmp_path: Path) -> None:
    for name in ("paper", "low-adoption"):
        sc = load_scenario(name)
        assert sc.epochs == 1080 and sc.name == name
    assert schedule([(0, 0), (10, 100)], 5) == 50 and schedule([(0, 0), (10, 100)], 99) == 100
    with pytest.raises(ChainError, match="no scenario 'nope'"):
        load_scenario("nope")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**SHORT, "epochs": -3}))
    with pytest.raises(ChainError, match="epochs"):
        load_scenario(bad)
    bad.write_text("{not json")
    with pytest.raises(ChainError, match="bad.json"):
        load_scenario(bad)
    for change, why in [
        ({"availability": [[256, 1.0]]}, "availability"),
        ({"availability": [[255, 0.0]]}, "add up to 0"),
        ({"mnd_percent": [2.5]}, "mnd_percent"),
        ({"mnd_percent": [2] * 14}, "26.1%"),
        ({"nd_sold": [[1, 50_000]]}, "nd_sold"),
        ({"poai_usd_per_epoch": [[1, -5]]}, "poai_usd_per_epoch"),
        ({"nd_sell_share": 1.5}, "nd_sell_share"),
        ({"surprise": 1}, "surprise"),
    ]:
        bad.write_text(json.dumps({**SHORT, **change}))
        with pytest.raises(ChainError, match=why):
            load_scenario(bad)
    bad.write_bytes(b"\xff\xfe" * 10)
    with pytest.raises(ChainError, match="cannot read scenario"):
        load_scenario(bad)
    bad.write_text(" " * 1_000_001)
    with pytest.raises(ChainError, match="larger than"):
        load_scenario(bad)
    with pytest.raises(ChainError, match="no scenario"):
        load_scenario("../economy/paper")  # names are plain words, not paths
    with pytest.raises(ChainError, match="no scenario"):
        load_scenario(tmp_path)  # a folder is not a scenario
    res = CliRunner().invoke(app, ["economy", "simulate", "--scenario", "nope"])
    assert res.exit_code != 0 and "no scenario" in res.output
    assert Scenario.model_validate(SHORT).claim_every == 7
