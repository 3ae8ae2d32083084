"""The app spec: what an owner asks the network to run, checked field by field.

A spec is YAML or JSON. Every error names the field it is about (`replicas: ...`, `files.../x: ...`),
so a user fixes the right line. Nothing here touches a node: the CLI and SDK check a spec before it is
signed, and the oracles check it again when it arrives.
"""

from __future__ import annotations

import json
import posixpath
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from r1os.errors import SpecError

RuntimeName = Literal["process", "docker", "plugin"]
RUNTIMES: tuple[str, ...] = ("process", "docker", "plugin")

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
PLUGIN_RE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")
CID_RE = re.compile(r"^(bafy|bafk|Qm)[A-Za-z0-9]{20,120}$")

#: Bounds on what one spec may carry (it travels in CSTORE and in heartbeats' neighbours).
MAX_FILES = 64
MAX_FILE_BYTES = 256 * 1024
MAX_FILES_BYTES = 512 * 1024
MAX_REPLICAS = 64
MAX_ENV = 128
MAX_VALUE_CHARS = 16 * 1024
MAX_COMMAND_ARGS = 128

#: Variables a node sets itself for every replica; a spec may not override them.
RESERVED_ENV = frozenset({"PORT", "R1OS_API_URL", "R1OS_PRIVATE_KEY", "R1OS_APP", "R1OS_OWNER", "R1OS_NODE"})


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Resources(_Strict):
    """What one replica is given (and what placement reserves for it on a node)."""

    cpu: float = Field(default=0.5, gt=0, le=256, description="cores")
    memory_mb: int = Field(default=256, ge=16, le=4 * 1024 * 1024)
    gpu: int = Field(default=0, ge=0, le=16)


class Placement(_Strict):
    """Where replicas may go: only `nodes` (if given), only nodes with all of `tags`, never `exclude`."""

    nodes: list[str] = Field(default_factory=list, max_length=256)
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=32
    )
    exclude: list[str] = Field(default_factory=list, max_length=256)

    @field_validator("nodes", "exclude", mode="before")
    @classmethod
    def _unquoted(cls, v: Any) -> Any:
        if isinstance(v, list) and any(isinstance(a, int) and not isinstance(a, bool) for a in v):
            raise ValueError("write addresses in quotes: YAML reads an unquoted 0x... as a number")
        return v

    @field_validator("nodes", "exclude")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        out = []
        for i, a in enumerate(v):
            if not re.fullmatch(r"0x[0-9a-fA-F]{40}", a):
                raise ValueError(f"item {i}: {a!r} is not a node address (0x and 40 hex digits)")
            out.append(a.lower())
        return out


class Health(_Strict):
    """A replica is healthy while GET `http` on its port answers 2xx/3xx; `failures` misses in a row
    (one every `interval_s`) make it unhealthy, and the node restarts it."""

    http: str | None = Field(default="/", max_length=512)
    interval_s: float = Field(default=2.0, ge=0.2, le=300)
    failures: int = Field(default=3, ge=1, le=100)
    timeout_s: float = Field(default=2.0, gt=0, le=60)
    grace_s: float = Field(default=60.0, ge=0, le=3600, description="time a new replica has to answer first")

    @field_validator("http")
    @classmethod
    def _path(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith("/"):
            raise ValueError("the health path starts with '/'")
        return v


def check_relative_path(name: str) -> str:
    """A file name inside the app folder: relative, no '..', no absolute path, no odd characters."""
    if not name or len(name) > 255 or "\x00" in name or "\\" in name:
        raise ValueError(f"{name!r} is not a usable file name")
    if name.startswith("/") or posixpath.isabs(name):
        raise ValueError(f"{name!r} is absolute: file names are relative to the app folder")
    norm = posixpath.normpath(name)
    if norm.startswith("..") or norm == "." or any(p == ".." for p in name.split("/")):
        raise ValueError(f"{name!r} escapes the app folder")
    return norm


class AppSpec(_Strict):
    """One app: what runs, how many copies, with what, where, and how its health is judged."""

    name: str = Field(description="[a-z0-9-], 1-40 characters, unique per owner")
    runtime: RuntimeName = "process"
    command: list[Annotated[str, Field(max_length=4096)]] = Field(
        default_factory=list, max_length=MAX_COMMAND_ARGS
    )
    image: str | None = Field(default=None, max_length=256)
    plugin: str | None = Field(default=None, max_length=256)
    files: dict[str, str] | str = Field(
        default_factory=dict, description="file name -> content, or the CID of an R1FS folder/file"
    )
    replicas: int = Field(default=1, ge=0, le=MAX_REPLICAS)
    resources: Resources = Field(default_factory=Resources)
    placement: Placement = Field(default_factory=Placement)
    env: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(
        default_factory=dict,
        description="in a spec file: values in clear; the client seals them to each target node before "
        "sending, and nodes refuse a request that carries them in clear",
    )
    health: Health = Field(default_factory=Health)
    job: int | None = Field(default=None, ge=0, description="the PoAI escrow job that pays for this app")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.fullmatch(v):
            raise ValueError(f"{v!r}: use 1-40 of a-z, 0-9 and '-', not starting or ending with '-'")
        if v.startswith("0x"):
            raise ValueError(f"{v!r}: a name may not start with '0x' (it would read as an owner address)")
        return v

    @field_validator("files")
    @classmethod
    def _files(cls, v: dict[str, str] | str) -> dict[str, str] | str:
        if isinstance(v, str):
            if not CID_RE.fullmatch(v):
                raise ValueError(f"{v[:60]!r} is not a CID (or give a mapping of file name -> content)")
            return v
        if len(v) > MAX_FILES:
            raise ValueError(f"{len(v)} files: at most {MAX_FILES} (put more in R1FS and give its CID)")
        total = 0
        out: dict[str, str] = {}
        for name, content in v.items():
            norm = check_relative_path(name)
            size = len(content.encode())
            if size > MAX_FILE_BYTES:
                raise ValueError(f"{name}: {size} bytes, at most {MAX_FILE_BYTES} per inline file")
            total += size
            out[norm] = content
        if total > MAX_FILES_BYTES:
            raise ValueError(f"{total} bytes of inline files, at most {MAX_FILES_BYTES}: use an R1FS CID")
        return out

    @field_validator("env", "secrets")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        if len(v) > MAX_ENV:
            raise ValueError(f"{len(v)} variables, at most {MAX_ENV}")
        for k, value in v.items():
            if not ENV_NAME_RE.fullmatch(k):
                raise ValueError(f"{k!r} is not a variable name")
            if k in RESERVED_ENV:
                raise ValueError(f"{k} is set by the node for every app")
            if len(value) > MAX_VALUE_CHARS:
                raise ValueError(f"{k}: value longer than {MAX_VALUE_CHARS} characters")
        return v

    @field_validator("plugin")
    @classmethod
    def _plugin(cls, v: str | None) -> str | None:
        if v is not None and not PLUGIN_RE.fullmatch(v):
            raise ValueError(f"{v!r}: write module.path:ClassName")
        return v

    @model_validator(mode="after")
    def _runtime_fields(self) -> AppSpec:
        if self.runtime == "process" and not self.command:
            raise ValueError("runtime 'process' needs a command")
        if self.runtime == "docker" and not self.image:
            raise ValueError("runtime 'docker' needs an image")
        if self.runtime == "plugin" and not self.plugin:
            raise ValueError("runtime 'plugin' needs plugin: module:ClassName")
        if self.runtime != "docker" and self.image:
            raise ValueError(f"image is for runtime 'docker', not {self.runtime!r}")
        if self.runtime != "plugin" and self.plugin:
            raise ValueError(f"plugin is for runtime 'plugin', not {self.runtime!r}")
        if self.runtime == "plugin" and self.command:
            raise ValueError("runtime 'plugin' runs the plugin class: leave command out")
        return self

    def public(self) -> dict[str, Any]:
        """The spec as it may be stored where anyone reads it: secrets replaced by their names."""
        data = self.model_dump(mode="json")
        data["secrets"] = {k: "<sealed>" for k in self.secrets}
        return data


def spec_from_data(data: Any) -> AppSpec:
    """An `AppSpec` from parsed YAML/JSON; `SpecError` naming the first bad field otherwise."""
    if not isinstance(data, dict):
        raise SpecError(f"an app spec is a mapping of fields, not {type(data).__name__}", path="spec")
    try:
        return AppSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError.from_validation(exc, hint="see docs/deeploy.md") from None


def parse_spec(text: str, *, source: str = "spec") -> AppSpec:
    """Parse YAML (a superset of JSON) text into an `AppSpec`."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError.from_yaml(exc, source) from None
    return spec_from_data(data)


def load_spec(path: str | Path) -> AppSpec:
    """Read a spec file; a `files` value `"@app.py"` is read from the file beside the spec."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise SpecError(f"cannot read {p}: {exc.strerror or exc}") from None
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return parse_spec(text, source=str(p))
    if isinstance(data, dict) and isinstance(data.get("files"), dict):
        files: dict[str, Any] = {}
        for name, content in data["files"].items():
            if isinstance(content, str) and content.startswith("@"):
                rel = content[1:]
                try:
                    check_relative_path(rel)
                    content = (p.parent / rel).read_text()
                except (ValueError, OSError) as exc:
                    raise SpecError(
                        f"cannot read {rel!r} beside {p.name}: {exc}", path=f"files.{name}"
                    ) from None
            files[name] = content
        data["files"] = files
    return spec_from_data(data)


def canonical_json(data: Any) -> bytes:
    """The one byte form of `data` that signatures and hashes cover."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
