"""`r1os node admission` errors: one line and a hint, never a traceback."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from r1os.cli import app

runner = CliRunner()


def test_admission_of_an_unreachable_node_is_one_line() -> None:
    result = runner.invoke(app, ["node", "admission", "--node", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "cannot reach the node at http://127.0.0.1:9" in result.output
    assert "Traceback" not in result.output


def test_admission_without_a_devnet_says_how_to_start_one(tmp_path: Path) -> None:
    result = runner.invoke(app, ["node", "admission", "--dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "no devnet in" in result.output and "r1os devnet up" in result.output
