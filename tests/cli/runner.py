"""Running one `r1os` command group in a test (typer's CliRunner), as a user would: a fresh R1OS_HOME, no
caller from the environment unless the test gives a key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from r1os.cli import app as cli_app
from r1os.identity import NodeKey

#: Variables that would name a caller or a node for the CLI.
CALLER_ENV = ("R1OS_API_TOKEN", "R1OS_KEY", "R1OS_PRIVATE_KEY", "R1OS_API_URL")


def isolate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """R1OS_HOME in `tmp_path`, and none of `CALLER_ENV`."""
    monkeypatch.setenv("R1OS_HOME", str(tmp_path / "home"))
    for name in CALLER_ENV:
        monkeypatch.delenv(name, raising=False)


class Group:
    """`r1os <name> ...`, optionally as a key (R1OS_PRIVATE_KEY)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.runner = CliRunner()

    def run(self, args: list[str], key: NodeKey | None = None) -> Result:
        env = {"R1OS_PRIVATE_KEY": key.private_key_hex} if key is not None else None
        return self.runner.invoke(cli_app, [self.name, *args], env=env)

    def ok(self, args: list[str], key: NodeKey | None = None) -> str:
        result = self.run(args, key)
        assert result.exit_code == 0, f"r1os {self.name} {' '.join(args)}: {result.output}"
        return result.output

    def json(self, args: list[str], key: NodeKey | None = None) -> Any:
        result = self.run([*args, "--json"], key)
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    def error(self, args: list[str], key: NodeKey | None = None) -> str:
        """The error of a refused command: exit code 1, one `error:` line (and a hint), no traceback."""
        result = self.run(args, key)
        assert result.exit_code == 1, result.output
        assert "Traceback" not in result.output
        err = result.stderr
        # One error line and at most one hint (the console folds long lines at 200 columns when piped).
        assert err.startswith("error: ") and err.count("error: ") == 1 and err.count("hint: ") <= 1, err
        return " ".join(err.split())
