"""docs/cli.md is the CLI reference rendered from the typer app as it is now."""

from __future__ import annotations

from pathlib import Path

from r1os.cli._reference import REGENERATE, render_reference

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_cli_reference_is_current() -> None:
    rendered = render_reference()
    current = DOC.read_text() if DOC.is_file() else ""
    assert current == rendered, f"docs/cli.md is out of date with the CLI: regenerate it with `{REGENERATE}`"


def test_reference_is_deterministic_and_complete() -> None:
    text = render_reference()
    assert text == render_reference()
    for heading in (
        "## `r1os`",
        "#### `r1os node start`",
        "#### `r1os app deploy`",
        "#### `r1os devnet demo`",
    ):
        assert heading in text
    assert "\x1b[" not in text and "╭" not in text  # plain text, no terminal styling
