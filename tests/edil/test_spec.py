"""The job spec: every field checked with its path, placeholders resolved deterministically."""

from __future__ import annotations

from pathlib import Path

import pytest

from r1os.edil import JobSpec, load_spec, parse_spec, resolve_participants
from r1os.errors import SpecError

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "edil" / "digits.yaml"

BASE = """
name: job
participants:
  - {node: "@edge1", data: "example:digits?part=0&of=2"}
  - {node: "@edge2", data: "example:digits?part=1&of=2"}
owner_data: "example:digits?split=test"
"""

A = [f"0x{i:040x}" for i in range(1, 9)]


def test_the_issue_example_parses() -> None:
    spec = load_spec(EXAMPLE)
    assert spec.name == "digits" and spec.privacy == "ckks" and len(spec.participants) == 3
    assert spec.model.family == "mlp" and spec.model.hidden == [32]
    assert spec.data_shape() == (64, 10) and spec.model_shape() == (64, 10)
    assert spec.placeholders() == ["@edge1", "@edge2", "@edge3"]


def test_defaults() -> None:
    spec = parse_spec(BASE)
    assert (spec.rounds, spec.local_epochs, spec.strategy.name, spec.privacy) == (10, 1, "fedavg", "ckks")
    assert spec.aggregator is None and spec.encoder is None and spec.seed == 0


@pytest.mark.parametrize(
    ("patch", "path"),
    [
        ("name: Bad_Name", "name"),
        ("rounds: 0", "rounds"),
        ("rounds: 1001", "rounds"),
        ("local_epochs: 101", "local_epochs"),
        ("lr: 0", "lr"),
        ("batch_size: 0", "batch_size"),
        ("deadline_s: 0.5", "deadline_s"),
        ("seed: -1", "seed"),
        ("privacy: secret", "privacy"),
        ("model: {family: svm}", "model.family"),
        ("model: {family: mlp}", "model"),
        ("model: {family: logreg, hidden: [8]}", "model"),
        ("model: {family: mlp, hidden: [0]}", "model.hidden.0"),
        ("model: {family: mlp, hidden: [8, 8, 8, 8, 8, 8, 8, 8, 8]}", "model.hidden"),
        ("model: {classes: 3}", "model"),
        ("strategy: {name: fedprox}", "strategy"),
        ("strategy: {name: fedavg, mu: 0.1}", "strategy"),
        ("strategy: {name: fedprox, mu: -1}", "strategy.mu"),
        ("aggregator: 0x12", "aggregator"),
        ("aggregator: node-04", "aggregator"),
        ("encoder: {dim: 0}", "encoder.dim"),
        ("owner_data: 'example:digits?part=0&of=2'", "owner_data"),
        ("owner_data: 'ftp://x'", "owner_data"),
        ("surprise: 1", "surprise"),
        ("participants: []", "participants"),
    ],
)
def test_bad_fields_name_their_path(patch: str, path: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec(BASE + patch)
    assert exc.value.path == path, exc.value


@pytest.mark.parametrize(
    ("participants", "path", "words"),
    [
        ('[{node: "@edge1", data: "example:digits?part=0"}]', "participants.0.data", "part=I&of=N"),
        ('[{node: "@edge1", data: "example:digits?part=3&of=3"}]', "participants.0.data", "numbered 0..2"),
        ('[{node: "@edge1", data: "example:digits?split=test"}]', "participants.0.data", "owner's"),
        ('[{node: "@edge1", data: "path:relative.npz"}]', "participants.0.data", "absolute"),
        ('[{node: "@edge1", data: "path:/a/../b.npz"}]', "participants.0.data", "absolute"),
        ('[{node: "@edge1", data: "example:mnist?split=test"}]', "participants.0.data", "unknown example"),
        ('[{node: "@edge0", data: "example:digits?part=0&of=1"}]', "participants.0.node", "placeholder"),
        ('[{node: "node-04", data: "example:digits?part=0&of=1"}]', "participants.0.node", "address"),
        (
            '[{node: "@edge1", data: "example:digits?part=0&of=2"}, {node: "@edge1", data: "data:x"}]',
            "participants.1.node",
            "twice",
        ),
        (
            '[{node: "@edge1", data: "example:digits?part=0&of=2"}, {node: "@edge2", data: '
            '"example:digits?part=0&of=2&skew=label"}]',
            "participants.1.data",
            "already",
        ),
        (
            '[{node: "@edge1", data: "example:digits?part=0&of=2"}, {node: "@edge2", data: '
            '"example:digits?part=1&of=3"}]',
            "participants.1.data",
            "overlap",
        ),
        (
            '[{node: "@edge1", data: "example:digits?part=0&of=2"}, {node: "@edge2", data: '
            '"example:digits?split=train"}]',
            "participants.1.data",
            "overlap",
        ),
    ],
)
def test_bad_participants(participants: str, path: str, words: str) -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec(f"name: job\nparticipants: {participants}\n")
    assert exc.value.path == path and words in str(exc.value), exc.value


def test_unquoted_address_is_explained() -> None:
    with pytest.raises(SpecError, match="quotes") as exc:
        parse_spec(
            "name: j\nparticipants: [{node: 0x0000000000000000000000000000000000000001, data: 'data:x'}]"
        )
    assert exc.value.path == "participants.0.node"


def test_addresses_are_lowercased() -> None:
    spec = parse_spec(
        f"name: j\nparticipants: [{{node: '0x{'AB' * 20}', data: 'data:x'}}]\n"
        "model: {features: 4, classes: 2}\nprivacy: plain\n"
    )
    assert spec.participants[0].node == "0x" + "ab" * 20


def test_own_data_needs_the_shape_and_examples_fix_it() -> None:
    own = "name: j\nprivacy: plain\nparticipants: [{node: '@edge1', data: 'data:clinic'}]\n"
    with pytest.raises(SpecError) as exc:
        parse_spec(own)
    assert exc.value.path == "model.features"
    spec = parse_spec(own + "model: {features: 12, classes: 3}\nencoder: {dim: 4}")
    assert spec.data_shape() == (12, 3) and spec.model_shape() == (4, 3)
    with pytest.raises(SpecError, match="64 features") as exc:
        parse_spec(BASE + "model: {features: 12, classes: 3}")


def test_masking_needs_two_participants() -> None:
    one = "name: j\nparticipants: [{node: '@edge1', data: 'example:digits?part=0&of=1'}]\n"
    for mode in ("masked", "ckks+masked"):
        with pytest.raises(SpecError, match="2\\+ participants") as exc:
            parse_spec(one + f"privacy: {mode}")
        assert exc.value.path == "privacy"
    assert parse_spec(one + "privacy: ckks").privacy == "ckks"


def test_cnn_does_not_take_an_encoder() -> None:
    with pytest.raises(SpecError) as exc:
        parse_spec(BASE + "model: {family: cnn}\nencoder: {dim: 8}")
    assert exc.value.path == "encoder"


def test_not_a_mapping_and_not_yaml() -> None:
    with pytest.raises(SpecError, match="mapping"):
        parse_spec("- a\n- b")
    with pytest.raises(SpecError, match="not YAML"):
        parse_spec("name: [unclosed")
    with pytest.raises(SpecError, match="cannot read"):
        load_spec("/nonexistent/spec.yaml")


def test_resolve_placeholders_skips_owner_and_named_nodes() -> None:
    text = BASE + "aggregator: '@edge3'\n"
    spec = parse_spec(text.replace('"@edge2"', f'"{A[2]}"'))
    assert spec.placeholders() == ["@edge1", "@edge3"]
    out = resolve_participants(spec, A, owner=A[0].upper())
    # The pool is A without the owner (A[0]) and the named A[2]: A[1], A[3], A[4], ...
    assert [p.node for p in out.participants] == [A[1], A[2]]
    assert out.aggregator == A[4]
    assert out.placeholders() == []
    assert resolve_participants(out, []) is out  # nothing left to resolve
    assert resolve_participants(spec, list(reversed(A)), owner=A[0]) != out  # order decides, nothing else
    assert resolve_participants(spec, A, owner=A[0]) == out  # deterministic


def test_resolve_refuses_too_few_nodes_and_bad_candidates() -> None:
    spec = parse_spec(BASE)
    with pytest.raises(SpecError, match="@edge2 needs 2 nodes.*1 are available") as exc:
        resolve_participants(spec, [A[0], A[1], A[1]], owner=A[0])
    assert exc.value.path == "participants"
    with pytest.raises(SpecError) as exc:
        resolve_participants(spec, [A[0], "node-2"])
    assert exc.value.path == "candidates.1"


def test_a_spec_round_trips_through_json() -> None:
    spec = load_spec(EXAMPLE)
    assert JobSpec.model_validate(spec.model_dump(mode="json")) == spec
