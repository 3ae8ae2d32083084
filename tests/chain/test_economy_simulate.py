"""`r1os economy simulate` on a short scenario: the CSV's totals equal the contracts' balances."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from r1os.chain.economy import Scenario, load_scenario, schedule
from r1os.cli.main import app
from r1os.errors import ChainError

from ..contracts import model
from .conftest import _anvil_or_skip

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


@pytest.mark.parametrize("pool", [True, False], ids=["pool", "no-pool"])
def test_simulate_short_scenario(tmp_path: Path, pool: bool) -> None:
    _anvil_or_skip()
    path = tmp_path / "short.json"
    path.write_text(json.dumps({**SHORT, "pool": pool}))
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
    assert summary["pool"] is pool
    assert summary["minted_other_r1"] == (1_000_000 if pool else 0)
    assert (last["pool_price_usd"] != "") is pool and (last["pool_usdc"] != "") is pool
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
