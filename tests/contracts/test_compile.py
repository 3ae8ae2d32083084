"""The compile helper: real compiles, the on-disk cache, and clear errors for bad input."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from r1os.chain import compile as cc
from r1os.errors import ChainError


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("R1OS_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "contracts"


def test_compile_and_cache(tmp_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    c = cc.compile_contract("MockUSDC")
    assert c.name == "MockUSDC"
    assert c.bytecode[:1] != b"" and len(c.bytecode) > 1000
    assert {f["name"] for f in c.abi if f["type"] == "function"} >= {"mint", "transfer", "burn"}
    entries = list(tmp_cache.glob("*.json"))
    assert len(entries) == 1

    def no_compile(*_: object) -> None:
        raise AssertionError("should have hit the cache")

    monkeypatch.setattr(cc, "_compile", no_compile)
    again = cc.compile_contract("MockUSDC")
    assert again == c


def test_compile_all_names() -> None:
    out = cc.compile_all()
    assert set(out) == set(cc.CONTRACT_NAMES)
    for name, c in out.items():
        assert c.bytecode and c.abi, name


def test_unknown_and_bad_names() -> None:
    with pytest.raises(ChainError, match="no contract named 'Nope'") as exc:
        cc.compile_contract("Nope")
    assert exc.value.hint and "R1" in exc.value.hint
    for bad in ("../R1", "", ".hidden", "a/b"):
        with pytest.raises(ChainError, match="invalid contract name"):
            cc.compile_contract(bad)


def test_broken_source_is_a_chain_error(
    tmp_path: Path, tmp_cache: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    src = tmp_path / "src"
    shutil.copytree(cc.CONTRACTS_DIR, src)
    (src / "Broken.vy").write_text("# pragma version ~=0.4.3\n@external\ndef f() -> uint256:\n    return x\n")
    monkeypatch.setattr(cc, "CONTRACTS_DIR", src)
    with caplog.at_level(logging.ERROR), pytest.raises(ChainError, match="cannot compile Broken.vy"):
        cc.compile_contract("Broken")
    assert any("Broken.vy" in r.getMessage() for r in caplog.records)


def test_corrupt_cache_entry_recompiles(tmp_cache: Path, caplog: pytest.LogCaptureFixture) -> None:
    first = cc.compile_contract("MockUSDC")
    (entry,) = tmp_cache.glob("*.json")
    entry.write_text("{not json")
    with caplog.at_level(logging.WARNING):
        again = cc.compile_contract("MockUSDC")
    assert again == first
    assert any("unreadable contract cache" in r.getMessage() for r in caplog.records)


def test_source_change_changes_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    shutil.copytree(cc.CONTRACTS_DIR, src)
    monkeypatch.setattr(cc, "CONTRACTS_DIR", src)
    path = src / "MockUSDC.vy"
    before = cc._cache_key(path)
    path.write_text(path.read_text() + "\n# changed\n")
    assert cc._cache_key(path) != before


def test_search_paths_find_snekmate() -> None:
    paths = [Path(p) for p in cc.search_paths()]
    assert (paths[1] / "snekmate" / "tokens" / "erc20.vy").is_file()
    assert cc.source_path("R1").name == "R1.vy"
