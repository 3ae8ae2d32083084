"""The training-job spec: what an owner asks the network to train, checked field by field.

A spec is YAML or JSON. Every error names the field it is about (`participants.1.data: ...`), as app specs do
(r1os.deeploy._spec). Nothing here touches a node or a data set: data references are checked for form only;
whether a node offers a data set is known on that node.

Participants' `node` is a node address, or a placeholder `@edge1`, `@edge2`, ... meaning "the Nth node that is
not the owner's", in the order the client or service lists candidate nodes; `resolve_participants` replaces
the placeholders before the job is signed and submitted, so a stored job only names addresses. The aggregator
may be a placeholder too.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from r1os.edil._data import DataRef, known_shape, parse_ref
from r1os.edil._errors import EdilError
from r1os.errors import FieldError, SpecError

Family = Literal["logreg", "mlp", "cnn"]
Privacy = Literal["plain", "ckks", "masked", "ckks+masked"]
PRIVACY_MODES: tuple[str, ...] = ("plain", "ckks", "masked", "ckks+masked")

NAME_RE = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,38}[a-z0-9])?$")
ADDRESS_RE = re.compile(r"^0x[0-9a-fA-F]{40}$")
PLACEHOLDER_RE = re.compile(r"^@edge([1-9][0-9]?)$")

#: Bounds on one job.
MAX_PARTICIPANTS = 64
MAX_ROUNDS = 1000
MAX_LOCAL_EPOCHS = 100
MAX_HIDDEN_LAYERS = 8
MAX_HIDDEN_UNITS = 4096
MAX_PARAMS = 10_000_000
MAX_DEADLINE_S = 7 * 24 * 3600.0


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _node(v: Any, *, placeholders: bool = True) -> str:
    if isinstance(v, int) and not isinstance(v, bool):
        raise ValueError("write addresses in quotes: YAML reads an unquoted 0x... as a number")
    if not isinstance(v, str):
        raise ValueError("a node is an address (0x and 40 hex digits) or a placeholder @edgeN")
    if ADDRESS_RE.fullmatch(v):
        return v.lower()
    if placeholders and PLACEHOLDER_RE.fullmatch(v):
        return v
    raise ValueError(
        f"{v[:60]!r} is not a node address (0x and 40 hex digits) nor a placeholder @edge1..@edge64"
    )


class ModelSpec(_Strict):
    """A model family r1os implements (no user code runs on participants)."""

    family: Family = "logreg"
    hidden: list[Annotated[int, Field(ge=1, le=MAX_HIDDEN_UNITS)]] = Field(
        default_factory=list, max_length=MAX_HIDDEN_LAYERS, description="units per hidden layer (mlp)"
    )
    features: int | None = Field(default=None, ge=1, le=65_536, description="inputs, if not an example's")
    classes: int | None = Field(default=None, ge=2, le=1000, description="labels, if not an example's")

    @model_validator(mode="after")
    def _hidden(self) -> ModelSpec:
        if self.family == "logreg" and self.hidden:
            raise ValueError("logreg has no hidden layers: use family mlp")
        if self.family == "mlp" and not self.hidden:
            raise ValueError("mlp needs hidden: [units, ...]")
        return self


class Participant(_Strict):
    """A node that trains on a data set of its own; the data never leaves it."""

    node: str
    data: str = Field(description="example:..., data:NAME or path:/abs/file.npz, on that node")

    @field_validator("node", mode="before")
    @classmethod
    def _node(cls, v: Any) -> str:
        return _node(v)

    @field_validator("data")
    @classmethod
    def _data(cls, v: str) -> str:
        ref = _ref(v)
        if ref.is_test:
            raise ValueError("the held-out test split is the owner's (owner_data), never a participant's")
        return v


class StrategySpec(_Strict):
    """How the owner combines updates: FedAvg weighted by samples; FedProx adds mu/2 ||w - w_global||^2
    to each participant's local loss."""

    name: Literal["fedavg", "fedprox"] = "fedavg"
    mu: float = Field(default=0.0, ge=0.0, le=100.0)

    @model_validator(mode="after")
    def _mu(self) -> StrategySpec:
        if self.name == "fedavg" and self.mu:
            raise ValueError("mu is FedProx's: use name fedprox, or leave mu out")
        if self.name == "fedprox" and not self.mu:
            raise ValueError("fedprox needs mu > 0 (0 would be fedavg)")
        return self


class EncoderSpec(_Strict):
    """The Domain Auto-Encoder: models train and serve on `dim` values per example instead of raw inputs."""

    dim: int = Field(ge=1, le=4096)
    hidden: int = Field(default=64, ge=1, le=MAX_HIDDEN_UNITS)
    epochs: int = Field(default=60, ge=1, le=1000)
    lr: float = Field(default=0.003, gt=0, le=1.0)


class JobSpec(_Strict):
    """One federated-learning job."""

    name: str = Field(description="[a-z0-9-], 1-40 characters")
    model: ModelSpec = Field(default_factory=ModelSpec)
    participants: list[Participant] = Field(min_length=1, max_length=MAX_PARTICIPANTS)
    owner_data: str | None = Field(default=None, description="the owner's held-out test set, on its node")
    rounds: int = Field(default=10, ge=1, le=MAX_ROUNDS)
    local_epochs: int = Field(default=1, ge=1, le=MAX_LOCAL_EPOCHS)
    lr: float = Field(default=0.1, gt=0, le=10.0)
    batch_size: int = Field(default=32, ge=1, le=65_536)
    strategy: StrategySpec = Field(default_factory=StrategySpec)
    privacy: Privacy = "ckks"
    aggregator: str | None = Field(default=None, description="the node that adds updates (not the owner's)")
    deadline_s: float = Field(default=300.0, ge=1.0, le=MAX_DEADLINE_S, description="per round")
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    encoder: EncoderSpec | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.fullmatch(v):
            raise ValueError(f"{v!r}: use 1-40 of a-z, 0-9 and '-', not starting or ending with '-'")
        return v

    @field_validator("aggregator", mode="before")
    @classmethod
    def _aggregator(cls, v: Any) -> str | None:
        return None if v is None else _node(v)

    @field_validator("owner_data")
    @classmethod
    def _owner_data(cls, v: str | None) -> str | None:
        if v is not None:
            ref = _ref(v)
            if ref.kind == "example" and ref.split != "test":
                raise ValueError(
                    "an example's test set is split=test (a part would overlap the training data)"
                )
        return v

    @model_validator(mode="after")
    def _whole(self) -> JobSpec:
        nodes = [p.node for p in self.participants]
        for i, node in enumerate(nodes):
            if node in nodes[:i]:
                raise FieldError(f"participants.{i}.node", f"{node} is listed twice")
        refs = [_ref(p.data) for p in self.participants]
        first: dict[str, DataRef] = {}
        for i, ref in enumerate(refs):
            if ref.kind != "example":
                continue
            if ref in refs[:i]:
                raise FieldError(f"participants.{i}.data", f"{ref} is already another participant's")
            other = first.setdefault(ref.name, ref)
            if (ref.split, ref.of, ref.skew, ref.major, ref.seed) != (
                other.split, other.of, other.skew, other.major, other.seed,
            ):  # fmt: skip
                raise FieldError(
                    f"participants.{i}.data",
                    f"{ref} splits {ref.name} unlike {other}: parts of different splits overlap",
                )
        if self.privacy in ("masked", "ckks+masked") and len(self.participants) < 2:
            raise FieldError(
                "privacy", f"{self.privacy} hides each update in a sum: it needs 2+ participants"
            )
        if self.model.family == "cnn" and self.encoder is not None:
            raise FieldError("encoder", "a cnn trains on images, not on encodings: use logreg or mlp")
        shapes = {known_shape(r) for r in refs}
        if self.owner_data is not None:
            shapes.add(known_shape(self.owner_data))
        known = {s for s in shapes if s is not None}
        if len(known) > 1:
            raise FieldError(
                "participants", "the data sets differ in shape: " + ", ".join(map(str, sorted(known)))
            )
        if None in shapes and (self.model.features is None or self.model.classes is None):
            raise FieldError(
                "model.features" if self.model.features is None else "model.classes",
                "needed when a data set is a node's own (its shape is known only on that node)",
            )
        if known and (self.model.features, self.model.classes) != (None, None):
            (f, c) = known.pop()
            if self.model.features not in (None, f) or self.model.classes not in (None, c):
                raise FieldError("model", f"the example data has {f} features and {c} classes")
        return self

    def data_shape(self) -> tuple[int, int]:
        """(features, classes) of the raw data the participants hold."""
        for p in self.participants:
            shape = known_shape(p.data)
            if shape is not None:
                return shape
        assert self.model.features is not None and self.model.classes is not None  # checked above
        return self.model.features, self.model.classes

    def model_shape(self) -> tuple[int, int]:
        """(inputs, classes) of the shared model: the encoder's `dim` inputs when there is an encoder."""
        features, classes = self.data_shape()
        return (self.encoder.dim if self.encoder else features), classes

    def placeholders(self) -> list[str]:
        """The @edgeN placeholders still in the spec, in order of N."""
        names = {p.node for p in self.participants} | {self.aggregator or ""}
        return sorted((n for n in names if PLACEHOLDER_RE.fullmatch(n)), key=lambda n: int(n[5:]))


def _ref(text: str) -> DataRef:
    try:
        return parse_ref(text)
    except EdilError as exc:
        raise ValueError(str(exc)) from None


def spec_from_data(data: Any) -> JobSpec:
    """A `JobSpec` from parsed YAML/JSON; `SpecError` naming the first bad field otherwise."""
    if not isinstance(data, dict):
        raise SpecError(f"a job spec is a mapping of fields, not {type(data).__name__}", path="spec")
    try:
        return JobSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError.from_validation(exc, hint="see docs/edil.md") from None


def parse_spec(text: str, *, source: str = "spec") -> JobSpec:
    """Parse YAML (a superset of JSON) text into a `JobSpec`."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError.from_yaml(exc, source) from None
    return spec_from_data(data)


def load_spec(path: str | Path) -> JobSpec:
    """Read a job spec file."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise SpecError(f"cannot read {p}: {exc.strerror or exc}") from None
    return parse_spec(text, source=str(p))


def resolve_participants(spec: JobSpec, candidates: list[str], *, owner: str | None = None) -> JobSpec:
    """Replace each placeholder `@edgeN` by the Nth of `candidates` (node addresses, in the order the caller
    lists them, e.g. the network map's) that is not the owner's node and not already named in the spec.

    Deterministic: the same spec and candidates give the same job. `SpecError` if there are too few nodes."""
    wanted = spec.placeholders()
    if not wanted:
        return spec
    taken = {p.node for p in spec.participants} | {spec.aggregator or ""}
    if owner is not None:
        taken.add(owner.lower())
    pool: list[str] = []
    for i, c in enumerate(candidates):
        try:
            addr = _node(c, placeholders=False)
        except ValueError as exc:
            raise SpecError(str(exc), path=f"candidates.{i}") from None
        if addr not in taken and addr not in pool:
            pool.append(addr)
    top = max(int(n[5:]) for n in wanted)
    if top > len(pool):
        raise SpecError(
            f"@edge{top} needs {top} nodes besides the owner's and those named; {len(pool)} are available",
            path="participants",
            hint="start more nodes, or name participants by address",
        )
    chosen = {n: pool[int(n[5:]) - 1] for n in wanted}
    data = spec.model_dump(mode="json")
    for p in data["participants"]:
        p["node"] = chosen.get(p["node"], p["node"])
    if data["aggregator"] is not None:
        data["aggregator"] = chosen.get(data["aggregator"], data["aggregator"])
    return spec_from_data(data)
