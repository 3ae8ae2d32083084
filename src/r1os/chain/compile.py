"""Compile the r1os Vyper contracts, with an on-disk cache.

The project ships contract sources, never bytecode: tests, the devnet and `r1os chain deploy` all
compile `contracts/<name>.vy` here with the pinned Vyper compiler, with snekmate's modules on the
search path. Compiling takes seconds, so results are cached in
`~/.cache/r1os/contracts/<sha256>.json`, keyed by the sources (the contract and every local module
it can import), the compiler version and the snekmate version, so a changed source or compiler never
hits a stale entry.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from dataclasses import dataclass
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

from r1os.errors import ChainError

log = logging.getLogger(__name__)

CONTRACTS_DIR = Path(__file__).resolve().parent / "contracts"
"""Where the `.vy` sources live (the repository's top-level `contracts` links here)."""

CONTRACT_NAMES = ("R1", "MockUSDC", "Controller", "NDLicence", "MNDLicence", "PoAIEscrow")
"""Deployable contracts, in deploy order (see docs/chain-interface.md)."""


@dataclass(frozen=True)
class CompiledContract:
    """What a deployer needs: the ABI and the creation bytecode (constructor args are appended)."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes


def cache_dir() -> Path:
    """The cache directory; `R1OS_CACHE_DIR` overrides the default `~/.cache/r1os`."""
    base = os.environ.get("R1OS_CACHE_DIR")
    root = Path(base) if base else Path.home() / ".cache" / "r1os"
    return root / "contracts"


@cache
def _snekmate_root() -> Path:
    """The directory holding the `snekmate` package, so `from snekmate... import` works."""
    try:
        import snekmate
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise ChainError(
            "snekmate is not installed", hint="pip install snekmate==0.1.2 (a project dependency)"
        ) from exc
    paths = list(snekmate.__path__)
    if not paths:  # pragma: no cover
        raise ChainError("cannot locate the snekmate package directory")
    return Path(paths[0]).resolve().parent


def _versions() -> str:
    import vyper

    try:
        snek = metadata.version("snekmate")
    except metadata.PackageNotFoundError:  # pragma: no cover
        snek = "unknown"
    return f"vyper={vyper.__version__};snekmate={snek}"


def _source_path(name: str) -> Path:
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ChainError(f"invalid contract name {name!r}")
    path = CONTRACTS_DIR / f"{name}.vy"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in CONTRACTS_DIR.glob("*.vy")))
        raise ChainError(f"no contract named {name!r}", hint=f"known contracts: {known}")
    return path


def _cache_key(path: Path) -> str:
    """Hash of the contract, every local `.vy` module it may import, and the tool versions."""
    h = hashlib.sha256()
    h.update(_versions().encode())
    h.update(b"\0" + path.name.encode() + b"\0" + path.read_bytes())
    for module in sorted(CONTRACTS_DIR.glob("*.vy*")):
        if module != path:
            h.update(b"\0" + module.name.encode() + b"\0" + module.read_bytes())
    return h.hexdigest()


def _read_cache(file: Path, name: str) -> CompiledContract | None:
    try:
        data = json.loads(file.read_text())
        return CompiledContract(name=name, abi=data["abi"], bytecode=bytes.fromhex(data["bytecode"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring unreadable contract cache entry %s: %s", file, exc)
        return None


def _write_cache(file: Path, compiled: CompiledContract) -> None:
    """Write atomically so that concurrent compilers never read a half-written entry."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        payload = json.dumps(
            {"name": compiled.name, "abi": compiled.abi, "bytecode": compiled.bytecode.hex()}
        )
        fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w") as fh:
            fh.write(payload)
        os.replace(tmp, file)
    except OSError as exc:  # a read-only home must not stop compilation
        log.warning("cannot write contract cache %s: %s", file, exc)


def _compile(path: Path, name: str) -> CompiledContract:
    from vyper.compiler import compile_code
    from vyper.compiler.input_bundle import FilesystemInputBundle
    from vyper.exceptions import VyperException

    bundle = FilesystemInputBundle([CONTRACTS_DIR, _snekmate_root()])
    try:
        out = compile_code(
            path.read_text(),
            contract_path=path.name,
            resolved_path=path,
            input_bundle=bundle,
            output_formats=["abi", "bytecode"],
        )
    except VyperException as exc:
        log.error("vyper failed to compile %s: %s", path, exc)
        raise ChainError(f"cannot compile {path.name}: {exc}") from exc
    code = str(out["bytecode"])
    return CompiledContract(name=name, abi=list(out["abi"]), bytecode=bytes.fromhex(code[2:]))


def compile_contract(name: str) -> CompiledContract:
    """Compile `contracts/<name>.vy` (cached); ChainError on a bad name or source."""
    path = _source_path(name)
    file = cache_dir() / f"{_cache_key(path)}.json"
    hit = _read_cache(file, name)
    if hit is not None:
        return hit
    log.info("compiling %s", path.name)
    compiled = _compile(path, name)
    _write_cache(file, compiled)
    return compiled


def compile_all() -> dict[str, CompiledContract]:
    """Compile every deployable contract (see `CONTRACT_NAMES`)."""
    return {name: compile_contract(name) for name in CONTRACT_NAMES}


def source_path(name: str) -> Path:
    """Path of a contract's source, for tools (such as boa) that load from source."""
    return _source_path(name)


def search_paths() -> list[str]:
    """Module search paths for tools that compile the sources themselves (boa)."""
    return [str(CONTRACTS_DIR), str(_snekmate_root())]
