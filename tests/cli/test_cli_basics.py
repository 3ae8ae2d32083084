"""The CLI as a user meets it: help, keys, and one-line errors with hints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from r1os.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("R1OS_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("R1OS_PASSWORD", "pw")


def test_help_lists_groups() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for group in ("keys", "node", "devnet", "broker"):
        assert group in result.output


def test_keys_new_show_address() -> None:
    result = runner.invoke(app, ["keys", "new", "--light"])
    assert result.exit_code == 0, result.output
    addr = runner.invoke(app, ["keys", "address"]).output.strip()
    assert addr.startswith("0x") and len(addr) == 42
    shown = json.loads(runner.invoke(app, ["keys", "show", "--json"]).output)
    assert shown["address"] == addr and shown["ai_address"].startswith("0xai_")
    again = runner.invoke(app, ["keys", "new"])
    assert again.exit_code == 1 and "already exists" in again.output and "--force" in again.output


def test_wrong_password_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert runner.invoke(app, ["keys", "new", "--light"]).exit_code == 0
    monkeypatch.setenv("R1OS_PASSWORD", "wrong")
    result = runner.invoke(app, ["keys", "show"])
    assert result.exit_code == 1
    assert "wrong password" in result.output and "Traceback" not in result.output


def test_missing_key_and_devnet_give_hints(tmp_path: Path) -> None:
    result = runner.invoke(app, ["keys", "address", "--key-file", str(tmp_path / "nope.json")])
    assert result.exit_code == 1 and "r1os keys new" in result.output
    result = runner.invoke(app, ["devnet", "status", "--dir", str(tmp_path / "none")])
    assert result.exit_code == 1 and "no devnet" in result.output and "devnet up" in result.output


def test_node_start_rejects_bad_settings() -> None:
    result = runner.invoke(app, ["node", "start", "--http", "nonsense"])
    assert result.exit_code == 1 and "HOST:PORT" in result.output
    result = runner.invoke(app, ["node", "start", "--network", "bad/name"])
    assert result.exit_code == 1 and "network" in result.output
