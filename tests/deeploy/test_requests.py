"""Owner requests: signed over a readable text, bound to network and time; secrets sealed per node."""

from __future__ import annotations

import time

import pytest

from r1os.deeploy import parse_spec
from r1os.deeploy._requests import (
    RequestRefused,
    SignedAppRequest,
    open_secrets,
    parse_signed_request,
    sign_app_request,
)
from r1os.errors import DecryptionError
from r1os.identity import NodeKey

SPEC = parse_spec("name: echo\ncommand: [x, '{port}']\nsecrets: {TOKEN: s3cret, DB: pw}\n")


def test_round_trip_and_secrets_sealed_per_node() -> None:
    owner, node_a, node_b = NodeKey.generate(), NodeKey.generate(), NodeKey.generate()
    nodes = {node_a.address: node_a.public_key, node_b.address: node_b.public_key}
    signed = sign_app_request(owner, network="n", action="deploy", name="echo", spec=SPEC, nodes=nodes)
    wire = signed.model_dump_json()
    assert "s3cret" not in wire and 'pw"' not in wire
    back = parse_signed_request(wire.encode())
    req = back.verify("n")
    spec = req.app_spec()
    assert set(spec.secrets) == {"TOKEN", "DB"}
    sealed_a = req.sealed[node_a.address.lower()]
    assert open_secrets(node_a, "echo", sealed_a) == {"TOKEN": "s3cret", "DB": "pw"}
    with pytest.raises(DecryptionError):
        open_secrets(node_b, "echo", sealed_a)  # sealed to a, not b
    with pytest.raises(DecryptionError):
        open_secrets(node_a, "other-app", sealed_a)  # bound to the app's name


def test_a_changed_request_breaks_the_signature() -> None:
    owner = NodeKey.generate()
    signed = sign_app_request(owner, network="n", action="scale", name="echo", replicas=2)
    data = signed.model_dump(mode="json")
    data["request"]["replicas"] = 9
    with pytest.raises(RequestRefused, match="not by the owner") as err:
        parse_signed_request(data).verify("n")
    assert err.value.cause == "bad_signature"


def test_someone_else_cannot_sign_for_the_owner() -> None:
    owner, mallory = NodeKey.generate(), NodeKey.generate()
    signed = sign_app_request(mallory, network="n", action="delete", name="echo")
    data = signed.model_dump(mode="json")
    data["request"]["owner"] = owner.address  # claims to be the owner
    with pytest.raises(RequestRefused, match="not by the owner"):
        SignedAppRequest.model_validate(data).verify("n")


def test_stale_and_foreign_network_requests_are_refused() -> None:
    owner = NodeKey.generate()
    old = sign_app_request(owner, network="n", action="delete", name="echo", now=time.time() - 3600)
    with pytest.raises(RequestRefused) as err:
        old.verify("n")
    assert err.value.cause == "stale_request"
    fresh = sign_app_request(owner, network="other", action="delete", name="echo")
    with pytest.raises(RequestRefused, match="network"):
        fresh.verify("n")


def test_clear_secrets_are_refused() -> None:
    owner = NodeKey.generate()
    signed = sign_app_request(owner, network="n", action="deploy", name="echo", spec=SPEC, nodes={})
    data = signed.model_dump(mode="json")
    data["request"]["spec"]["secrets"] = {"TOKEN": "s3cret", "DB": "pw"}
    req = SignedAppRequest.model_validate(data).request
    with pytest.raises(RequestRefused) as err:
        req.app_spec()
    assert err.value.cause == "clear_secrets"
    # Sealed markers but nothing sealed to any node: refused too.
    with pytest.raises(RequestRefused) as err:
        signed.request.app_spec()
    assert err.value.cause == "clear_secrets"


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b"[]", b'{"request": {}, "signature": "00"}', b"x" * (5 * 1024 * 1024)],
)
def test_malformed_requests_give_a_clear_error(raw: bytes) -> None:
    with pytest.raises(RequestRefused):
        parse_signed_request(raw)
