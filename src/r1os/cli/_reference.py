"""The CLI reference (`docs/cli.md`), rendered from the typer app's command tree.

Everything comes from the command objects themselves (each command's help, arguments and options, with
their plain help records), never from the rich-formatted `--help` output, so the text is the same on
every terminal and every run. `tests/cli/test_reference.py` fails when `docs/cli.md` differs from what
this renders; regenerate it with:

    python -m r1os.cli._reference > docs/cli.md
"""

from __future__ import annotations

import inspect
import re
import sys
from typing import Any

import typer.main
from typer.core import TyperArgument, TyperGroup

REGENERATE = "python -m r1os.cli._reference > docs/cli.md"

_SPECIAL = re.compile(r"([<>*|\[\]])")


def _md(text: str) -> str:
    """`text` as Markdown prose: characters Markdown would read as markup are escaped outside `code`."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):  # even parts are outside backticks
        parts[i] = _SPECIAL.sub(r"\\\1", parts[i])
    return "`".join(parts)


def _help(cmd: Any) -> str:
    return inspect.cleandoc(cmd.help or cmd.short_help or "")


def _argument_name(param: Any) -> str:
    name = str(param.name or "").upper()
    if param.nargs == -1:
        name += "..."
    return name if param.required else f"[{name}]"


def _usage(cmd: Any, ctx: Any) -> str:
    pieces = [ctx.command_path]
    if any(not isinstance(p, TyperArgument) for p in cmd.params) or isinstance(cmd, TyperGroup):
        pieces.append("[OPTIONS]")
    pieces += [_argument_name(p) for p in cmd.params if isinstance(p, TyperArgument)]
    if isinstance(cmd, TyperGroup):
        pieces.append("COMMAND [ARGS]...")
    return " ".join(pieces)


def _params(cmd: Any, ctx: Any) -> list[str]:
    lines: list[str] = []
    arguments = [p for p in cmd.params if isinstance(p, TyperArgument)]
    options = [p for p in cmd.params if not isinstance(p, TyperArgument) and not getattr(p, "hidden", False)]
    if arguments:
        lines += ["", "Arguments:", ""]
        for p in arguments:
            record = p.get_help_record(ctx)
            what = record[1] if record else ""
            kind = p.display_type(ctx)
            lines.append(f"- `{_argument_name(p)} {kind}`" + (f": {_md(what)}" if what else ""))
    if options:
        lines += ["", "Options:", ""]
        for p in options:
            record = p.get_help_record(ctx)
            if record is None:
                continue
            flags, what = record
            lines.append(f"- `{flags}`" + (f": {_md(what)}" if what else ""))
    return lines


def _command(cmd: Any, ctx: Any, level: int) -> list[str]:
    heading = "#" * min(level, 6)
    lines = [f"{heading} `{ctx.command_path}`", "", "```text", _usage(cmd, ctx), "```"]
    text = _help(cmd)
    if text:
        lines += ["", _md(text)]
    lines += _params(cmd, ctx)
    if isinstance(cmd, TyperGroup):
        names = cmd.list_commands(ctx)
        subs: list[tuple[str, Any]] = []
        for name in names:
            sub = cmd.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                subs.append((name, sub))
        if subs:
            lines += ["", "Commands:", ""]
            for name, sub in subs:
                short = sub.get_short_help_str(limit=200)
                lines.append(f"- [`{name}`](#{_anchor(f'{ctx.command_path} {name}')}): {_md(short)}")
        for name, sub in subs:
            lines += ["", *_command(sub, type(ctx)(sub, info_name=name, parent=ctx), level + 1)]
    return lines


def _anchor(command_path: str) -> str:
    """GitHub's anchor for a heading `` `command path` ``."""
    return re.sub(r"[^a-z0-9 _-]", "", command_path.lower()).replace(" ", "-")


def render_reference() -> str:
    """The whole CLI reference as Markdown: every group and command of `r1os`, in the order `--help`
    lists them, each with its usage, help, arguments and options."""
    from r1os.cli.main import app

    root = typer.main.get_command(app)
    ctx_class = root.context_class
    ctx = ctx_class(root, info_name="r1os")
    head = [
        "# CLI reference",
        "",
        "Every command of `r1os`, generated from the command tree (do not edit by hand; regenerate with",
        f"`{REGENERATE}`). Every command and group also answers `--help`. Commands that talk to a node",
        "take `--node URL` (default `$R1OS_API_URL`, else `http://127.0.0.1:31234`); commands that sign",
        "take a keystore (`--key-file`, password from `$R1OS_PASSWORD` or a prompt). Guides:",
        "[operator-guide.md](operator-guide.md), [developer-guide.md](developer-guide.md).",
        "",
    ]
    return "\n".join(head + _command(root, ctx, 2)).rstrip() + "\n"


def main() -> None:
    sys.stdout.write(render_reference())


if __name__ == "__main__":
    main()
