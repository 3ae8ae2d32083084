"""Property tests: claim, vesting and payout math against the model, over generated inputs.

Example counts are kept small (each example deploys nothing, but runs several transactions).
"""

from __future__ import annotations

import boa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from . import model
from .conftest import N_ORACLES, THRESHOLD, System, sign

SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

availabilities = st.lists(st.integers(0, 255), min_size=1, max_size=60)


def _chunks(values: list[int], cuts: list[int]) -> list[list[int]]:
    points = sorted({c % len(values) for c in cuts} - {0})
    out, prev = [], 0
    for p in [*points, len(values)]:
        out.append(values[prev:p])
        prev = p
    return out


@SETTINGS
@given(avails=availabilities, cuts=st.lists(st.integers(0, 10_000), max_size=4))
def test_nd_claims_match_model(s: System, avails: list[int], cuts: list[int]) -> None:
    with boa.env.anchor():
        owner, token, node = s.linked_nd()
        first = s.epoch()
        s.advance_epochs(len(avails))
        total, epoch = 0, first
        for chunk in _chunks(avails, cuts):
            total += s.claim_nd(token, epoch, chunk)
            epoch += len(chunk)
        expected = model.reward(avails, model.ND_RELEASE, 0, model.ND_MAX_MINING)
        assert total == expected == s.r1.balanceOf(owner) == s.nd.claimed_amount(token)
        assert s.nd.claimable_epochs(token) == (first + len(avails), 0)


@SETTINGS
@given(picks=st.lists(st.integers(0, N_ORACLES + 1), min_size=0, max_size=8))
def test_signature_sets(s: System, picks: list[int]) -> None:
    """Accepted iff at least THRESHOLD signatures, all by distinct registered oracles."""
    from eth_account import Account

    outsider = Account.from_key(b"\x11" * 32)
    keys = [*s.oracles, outsider, outsider]
    signers = [keys[i] for i in picks]
    node = s.node()
    sigs = sign(model.availability_inner(node, 5, [9]), signers)
    addresses = [a.address for a in signers]
    registered = all(a in {o.address for o in s.oracles} for a in addresses)
    distinct = len(set(addresses)) == len(addresses)
    ok = len(sigs) >= THRESHOLD and registered and distinct
    try:
        s.ctrl.verify_availability(node, 5, 5, bytes([9]), sigs)
        accepted = True
    except boa.BoaError:
        accepted = False
    assert accepted == ok


@SETTINGS
@given(
    price=st.integers(1, 10**7),
    nodes=st.integers(1, 4),
    epochs=st.integers(1, 5),
    attested=st.lists(st.booleans(), min_size=8, max_size=8),
    serving=st.integers(1, 4),
    extra=st.integers(0, 3),
)
def test_escrow_conserves_funds(
    s: System, price: int, nodes: int, epochs: int, attested: list[bool], serving: int, extra: int
) -> None:
    with boa.env.anchor():
        serving = min(serving, nodes)
        served = [s.linked_nd() for _ in range(serving)]
        owner = s.user(usdc=nodes * (epochs + extra) * price)
        with boa.env.prank(owner):
            s.usdc.approve(s.escrow.address, nodes * (epochs + extra) * price)
            job_id = s.escrow.create_job(nodes, epochs, price)
            if extra:  # topped up while it runs
                s.escrow.extend_job(job_id, extra)
        epochs += extra
        s.advance_epochs(epochs + 1)
        n_attested = 0
        for e in range(epochs):
            if attested[e]:
                ns = [n for _, _, n in served]
                s.escrow.attest(job_id, e, ns, s.sign_attestation(job_id, e, ns))
                n_attested += 1
        net, burn = model.poai_split(price)
        for operator, _, _ in served:
            assert s.usdc.balanceOf(operator) == n_attested * net
        with boa.env.prank(owner):
            refunded = s.escrow.refund(job_id)
        job = s.escrow.get_job(job_id)
        assert job.paid == n_attested * serving * net
        assert job.burned == n_attested * serving * burn
        assert job.paid + job.burned + refunded == nodes * epochs * price
        assert s.usdc.balanceOf(s.escrow.address) == 0
