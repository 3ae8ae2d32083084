"""The tree stays lint-clean, formatted and type-checked: the same checks a reviewer would run."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("check", [("check",), ("format", "--check")], ids=["lint", "format"])
def test_ruff(check: tuple[str, ...]) -> None:
    result = run(str(BIN / "ruff"), *check, "src", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_strict_on_the_package(tmp_path: Path) -> None:
    result = run(str(BIN / "mypy"), "--cache-dir", str(tmp_path / "mypy"))
    assert result.returncode == 0, result.stdout + result.stderr


# -- layering -------------------------------------------------------------------------------------------
#
# Dependencies point one way: a package may import packages of its own layer or of layers below it, never
# above; and packages of one layer import each other without a circle. Every import counts: at module
# level, inside functions (a lazy import is still a dependency) and under TYPE_CHECKING.

LAYERS: list[set[str]] = [
    {"errors", "paths", "__init__", "__main__", "identity"},
    {"wire"},
    {"transport"},
    {"node"},
    {"chain", "cstore", "r1fs", "dauth", "oracle", "deeploy", "edil"},
    {"devnet"},
    {"sdk"},
    {"cli", "dashboard"},
]
#: The root package's own modules: `r1os/__init__.py` offers the SDK lazily and `__main__` runs the CLI,
#: so they sit at the top as far as what they import goes (what imports them is checked like any module).
TOP_MODULES = {"__init__", "__main__"}


def _rank(part: str) -> int:
    for i, layer in enumerate(LAYERS):
        if part in layer:
            return i
    raise AssertionError(f"package r1os.{part} is in no layer: add it to LAYERS in {__file__}")


def _imported(tree: ast.AST, module: str, is_package: bool, root: Path) -> set[str]:
    """Fully qualified r1os modules that `tree` (the source of `module`) imports."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "r1os")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "r1os":
                found.add(target)
                if target == "r1os":  # `from r1os import sdk` imports a package; `__version__` is a name
                    found.update(
                        f"r1os.{a.name}"
                        for a in node.names
                        if (root / a.name).is_dir() or (root / f"{a.name}.py").is_file()
                    )
    return found


def layering_violations(src: Path) -> list[str]:
    """Upward imports and circles between packages of the tree under `src` (the folder holding `r1os/`)."""
    problems: list[str] = []
    edges: dict[str, set[str]] = {}
    for path in sorted((src / "r1os").rglob("*.py")):
        rel = path.relative_to(src).with_suffix("")
        is_package = rel.name == "__init__"
        parts = rel.parts[:-1] if is_package else rel.parts
        module = ".".join(parts)
        own = parts[1] if len(parts) > 1 else "__init__"
        own_rank = len(LAYERS) if own in TOP_MODULES else _rank(own)
        for target in _imported(ast.parse(path.read_text(), str(path)), module, is_package, src / "r1os"):
            names = target.split(".")
            other = names[1] if len(names) > 1 else "__init__"
            if other == own:
                continue
            if other in TOP_MODULES:
                # `import r1os` / `from r1os import __version__`: the root's light part (version, errors)
                continue
            if _rank(other) > own_rank:
                problems.append(f"upward import: {module} imports {target}")
            elif _rank(other) == own_rank:
                edges.setdefault(own, set()).add(other)
    # circles among packages of one layer
    state: dict[str, int] = {}

    def visit(pkg: str, trail: list[str]) -> None:
        state[pkg] = 1
        for nxt in sorted(edges.get(pkg, ())):
            if state.get(nxt) == 1:
                problems.append("import circle: " + " -> ".join([*trail[trail.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[pkg] = 2

    for pkg in sorted(edges):
        if pkg not in state:
            visit(pkg, [pkg])
    return problems


def test_layering_has_no_upward_import_and_no_circle() -> None:
    assert layering_violations(ROOT / "src") == []


def test_layering_check_catches_an_upward_import_and_a_circle(tmp_path: Path) -> None:
    """The check itself: a synthetic tree with one upward import (a lazy one, inside a function) and one
    circle between two services must be refused on both counts."""
    pkg = tmp_path / "r1os"
    for sub in ("identity", "cstore", "r1fs", "cli"):
        (pkg / sub).mkdir(parents=True)
        (pkg / sub / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "identity" / "_keys.py").write_text("def f():\n    from r1os.cli import main\n")
    (pkg / "cstore" / "_a.py").write_text("from r1os.r1fs import x\n")
    (pkg / "r1fs" / "_b.py").write_text("from ..cstore import _a\n")
    (pkg / "cli" / "main.py").write_text("import r1os.identity\nfrom r1os.cstore import _a\n")
    problems = layering_violations(tmp_path)
    assert "upward import: r1os.identity._keys imports r1os.cli" in problems
    assert any(p.startswith("import circle: cstore -> r1fs -> cstore") for p in problems), problems
    assert len(problems) == 2, problems


def test_sdk_import_loads_no_server() -> None:
    code = (
        "import r1os.sdk, sys; bad = [m for m in ('uvicorn', 'fastapi', 'r1os.node') if m in sys.modules]; "
        "assert not bad, bad"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
