"""Controller: epochs, the oracle registry, signature checks, digests and the node-link registry."""

from __future__ import annotations

import boa
import pytest
from eth_account import Account

from . import model
from .conftest import (
    CLIFF,
    COOLDOWN,
    EPOCH,
    N_ORACLES,
    THRESHOLD,
    DeployReverted,
    System,
    deploy,
    oracle_key,
    sign,
)

ZERO = "0x" + "00" * 20


def test_constructor_parameters(s: System) -> None:
    assert s.ctrl.genesis_time() == s.genesis
    assert s.ctrl.epoch_seconds() == EPOCH
    assert s.ctrl.link_cooldown() == COOLDOWN
    assert s.ctrl.mnd_cliff_epochs() == CLIFF
    assert s.ctrl.min_signatures() == THRESHOLD
    assert s.ctrl.nd_licence() == s.nd.address
    assert s.ctrl.mnd_licence() == s.mnd.address
    assert s.ctrl.owner() == s.deployer


def test_production_parameters() -> None:
    ctrl = deploy("Controller", 1748016000, 86400, 86400, model.MND_PRODUCTION_CLIFF)
    assert ctrl.epoch_of(1748016000 + 86400 * 10 + 5) == 10
    assert ctrl.mnd_cliff_epochs() == 223


def test_zero_epoch_length_refused() -> None:
    with pytest.raises(DeployReverted, match="controller: epoch length is zero"):
        deploy("Controller", 0, 0, 0, 0)


def test_epochs(s: System) -> None:
    assert s.ctrl.current_epoch() == 0
    s.advance(EPOCH - 1)
    assert s.ctrl.current_epoch() == 0
    s.advance(1)
    assert s.ctrl.current_epoch() == 1
    s.advance_epochs(41)
    assert s.ctrl.current_epoch() == 42 == s.epoch()
    assert s.ctrl.epoch_of(s.genesis + 7 * EPOCH) == 7
    with boa.reverts("controller: before genesis"):
        s.ctrl.epoch_of(s.genesis - 1)


def test_before_genesis() -> None:
    ctrl = deploy("Controller", boa.env.timestamp + 1000, EPOCH, 0, 0)
    with boa.reverts("controller: before genesis"):
        ctrl.current_epoch()


def test_oracle_registry(s: System) -> None:
    assert s.ctrl.get_oracles() == [o.address for o in s.oracles]
    new = Account.create().address
    s.ctrl.add_oracle(new)
    assert s.ctrl.is_oracle(new)
    assert len(s.ctrl.get_oracles()) == N_ORACLES + 1
    s.ctrl.remove_oracle(s.oracles[0].address)
    assert not s.ctrl.is_oracle(s.oracles[0].address)
    oracles = s.ctrl.get_oracles()
    assert s.oracles[0].address not in oracles and new in oracles
    assert len(oracles) == N_ORACLES


def test_oracle_registry_reverts(s: System) -> None:
    stranger = s.user()
    with boa.env.prank(stranger), boa.reverts("ownable: caller is not the owner"):
        s.ctrl.add_oracle(stranger)
    with boa.env.prank(stranger), boa.reverts("ownable: caller is not the owner"):
        s.ctrl.remove_oracle(s.oracles[0].address)
    with boa.env.prank(stranger), boa.reverts("ownable: caller is not the owner"):
        s.ctrl.set_min_signatures(1)
    with boa.env.prank(stranger), boa.reverts("ownable: caller is not the owner"):
        s.ctrl.set_licence_contracts(stranger, stranger)
    with boa.reverts("controller: zero address"):
        s.ctrl.add_oracle(ZERO)
    with boa.reverts("controller: already an oracle"):
        s.ctrl.add_oracle(s.oracles[1].address)
    with boa.reverts("controller: not an oracle"):
        s.ctrl.remove_oracle(stranger)
    with boa.reverts("controller: threshold must be >= 1"):
        s.ctrl.set_min_signatures(0)
    with boa.reverts("controller: zero address"):
        s.ctrl.set_licence_contracts(ZERO, s.mnd.address)
    with boa.reverts("controller: zero address"):
        s.ctrl.set_licence_contracts(s.nd.address, ZERO)


def test_oracle_limit() -> None:
    ctrl = deploy("Controller", 0, EPOCH, 0, 0)
    for i in range(32):
        ctrl.add_oracle(oracle_key(100 + i).address)
    with boa.reverts("controller: too many oracles"):
        ctrl.add_oracle(oracle_key(200).address)


def test_availability_digest_matches_model(s: System) -> None:
    node = s.node()
    avails = [0, 1, 128, 254, 255]
    inner = model.availability_inner(node, 17, avails)
    assert s.ctrl.availability_digest(node, 17, 21, bytes(avails)) == model.eip191(inner)


def test_attestation_digest_matches_model(s: System) -> None:
    nodes = [s.node() for _ in range(3)]
    inner = model.attestation_inner(s.escrow.address, 9, 4, nodes)
    assert s.ctrl.attestation_digest(s.escrow.address, 9, 4, nodes) == model.eip191(inner)


def _avail_sigs(s: System, signers: list) -> tuple[str, list[bytes]]:
    node = s.node()
    return node, sign(model.availability_inner(node, 3, [200, 100]), signers)


def test_verify_threshold(s: System) -> None:
    node, sigs = _avail_sigs(s, s.oracles[:THRESHOLD])
    assert s.ctrl.verify_availability(node, 3, 4, bytes([200, 100]), sigs)
    # any order, more than the threshold is fine
    node, sigs = _avail_sigs(s, list(reversed(s.oracles)))
    assert s.ctrl.verify_availability(node, 3, 4, bytes([200, 100]), sigs)
    digest = s.ctrl.availability_digest(node, 3, 4, bytes([200, 100]))
    assert s.ctrl.verify_signatures(digest, sigs) == s.oracles[-1].address


def test_threshold_minus_one_refused(s: System) -> None:
    node, sigs = _avail_sigs(s, s.oracles[: THRESHOLD - 1])
    with boa.reverts("controller: not enough signatures"):
        s.ctrl.verify_availability(node, 3, 4, bytes([200, 100]), sigs)


def test_repeated_signature_refused(s: System) -> None:
    node, sigs = _avail_sigs(s, s.oracles[: THRESHOLD - 1])
    with boa.reverts("controller: duplicate signer"):
        s.ctrl.verify_availability(node, 3, 4, bytes([200, 100]), sigs + [sigs[0]])


def test_forged_signatures_refused(s: System) -> None:
    node = s.node()
    outsider = Account.create()
    good = sign(model.availability_inner(node, 3, [200, 100]), s.oracles[: THRESHOLD - 1])
    forged = sign(model.availability_inner(node, 3, [200, 100]), [outsider])
    with boa.reverts("controller: signer is not an oracle"):
        s.ctrl.verify_availability(node, 3, 4, bytes([200, 100]), good + forged)
    # signatures over different data recover to random addresses
    other = sign(model.availability_inner(node, 3, [255, 255]), s.oracles[:THRESHOLD])
    with boa.reverts("controller: signer is not an oracle"):
        s.ctrl.verify_availability(node, 3, 4, bytes([200, 100]), other)
    # garbage and truncated signatures
    with boa.reverts("controller: invalid signature"):
        s.ctrl.verify_availability(node, 3, 4, bytes([200, 100]), good + [b"\x00" * 65])
    with boa.reverts("controller: invalid signature"):
        s.ctrl.verify_availability(node, 3, 4, bytes([200, 100]), good + [good[0][:64]])
    # a removed oracle no longer counts
    s.ctrl.remove_oracle(s.oracles[0].address)
    sigs = sign(model.availability_inner(node, 3, [200, 100]), s.oracles[:THRESHOLD])
    with boa.reverts("controller: signer is not an oracle"):
        s.ctrl.verify_availability(node, 3, 4, bytes([200, 100]), sigs)


def test_high_s_signature_refused(s: System) -> None:
    node, sigs = _avail_sigs(s, s.oracles[:THRESHOLD])
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    r, sv, v = sigs[0][:32], int.from_bytes(sigs[0][32:64], "big"), sigs[0][64]
    malleated = r + (n - sv).to_bytes(32, "big") + bytes([55 - v])
    with boa.reverts("controller: invalid signature"):
        s.ctrl.verify_availability(node, 3, 4, bytes([200, 100]), [malleated] + sigs[1:])
    bad_v = sigs[0][:64] + bytes([29])
    with boa.reverts("controller: invalid signature"):
        s.ctrl.verify_availability(node, 3, 4, bytes([200, 100]), [bad_v] + sigs[1:])


def test_verify_attestation(s: System) -> None:
    nodes = [s.node(), s.node()]
    sigs = s.sign_attestation(5, 2, nodes)
    assert s.ctrl.verify_attestation(s.escrow.address, 5, 2, nodes, sigs)
    with boa.reverts("controller: signer is not an oracle"):
        s.ctrl.verify_attestation(s.escrow.address, 5, 3, nodes, sigs)


def test_link_registry_only_for_licence_contracts(s: System) -> None:
    node = s.node()
    with boa.reverts("controller: caller is not a licence contract"):
        s.ctrl.register_link(node, 1)
    with boa.reverts("controller: caller is not a licence contract"):
        s.ctrl.unregister_link(node)
    with boa.env.prank(s.nd.address), boa.reverts("controller: node not linked here"):
        s.ctrl.unregister_link(node)


def test_node_queries(s: System) -> None:
    owner, token, node = s.linked_nd()
    assert s.ctrl.is_node_active(node) and s.ctrl.isNodeActive(node)
    assert s.ctrl.node_licence(node) == (s.nd.address, token)
    assert s.ctrl.node_owner(node) == owner
    other = s.node()
    assert not s.ctrl.is_node_active(other) and not s.ctrl.isNodeActive(other)
    assert s.ctrl.node_licence(other) == (ZERO, 0)
    assert s.ctrl.node_owner(other) == ZERO


def test_ownership_transfer(s: System) -> None:
    new = s.user()
    s.ctrl.transfer_ownership(new)
    assert s.ctrl.owner() == new
    with boa.reverts("ownable: caller is not the owner"):
        s.ctrl.add_oracle(Account.create().address)
    with boa.env.prank(new):
        s.ctrl.renounce_ownership()
    assert s.ctrl.owner() == ZERO


@pytest.mark.parametrize("threshold", [1, 2, N_ORACLES])
def test_any_threshold(s: System, threshold: int) -> None:
    s.ctrl.set_min_signatures(threshold)
    node, sigs = _avail_sigs(s, s.oracles[:threshold])
    assert s.ctrl.verify_availability(node, 3, 4, bytes([200, 100]), sigs)
    if threshold > 1:
        with boa.reverts("controller: not enough signatures"):
            s.ctrl.verify_availability(node, 3, 4, bytes([200, 100]), sigs[:-1])
