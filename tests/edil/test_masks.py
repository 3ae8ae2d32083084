"""Pairwise masks: they cancel in the sum, hide each update, and survive participants that drop out."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from r1os.edil._masks import (
    MASK_FRACTION_BITS,
    MASK_RANGE,
    MaskContext,
    MaskError,
    mask_for,
    pair_seed,
    prg,
    recovery_term,
    unmask_sum,
)
from r1os.identity import NodeKey


def _keys(n: int, tag: str = "k") -> list[NodeKey]:
    return [NodeKey(hashlib.sha256(f"{tag}{i}".encode()).digest()) for i in range(n)]


CTX = MaskContext(network="devnet", job="job-1", round=3, length=1000)


def test_both_sides_of_a_pair_derive_the_same_seed_and_each_round_a_new_one() -> None:
    a, b, c = _keys(3)
    assert pair_seed(a, b.public_key, CTX) == pair_seed(b, a.public_key, CTX)
    seeds = {
        pair_seed(a, b.public_key, CTX),
        pair_seed(a, c.public_key, CTX),
        pair_seed(a, b.public_key, MaskContext("devnet", "job-1", 4, 1000)),
        pair_seed(a, b.public_key, MaskContext("devnet", "job-2", 3, 1000)),
        pair_seed(a, b.public_key, MaskContext("mainnet", "job-1", 3, 1000)),
    }
    assert len(seeds) == 5


def test_the_prg_is_fixed_uniform_on_its_grid_and_bounded() -> None:
    # Known answer: participants on any machine must draw the same masks.
    assert prg(bytes(32), 4).tolist() == [
        -936661.7431451082,
        -1603315.425554216,
        -386278.3040140271,
        -976809.083319962,
    ]
    values = prg(b"seed", 200_000)
    assert np.all(np.abs(values) <= MASK_RANGE)
    scaled = values * 2.0**MASK_FRACTION_BITS
    assert np.array_equal(scaled, np.round(scaled))
    assert abs(float(values.mean())) < 0.01 * MASK_RANGE
    assert abs(float(values.std()) - MASK_RANGE / np.sqrt(3)) < 0.01 * MASK_RANGE
    assert np.array_equal(prg(b"seed", 10), values[:10])


@pytest.mark.parametrize("n", range(3, 11))
def test_masks_cancel_exactly_in_the_sum_of_all_participants(n: int) -> None:
    keys = _keys(n, f"n{n}-")
    publics = [k.public_key for k in keys]
    masks = [mask_for(k, publics, CTX) for k in keys]
    assert np.all(np.sum(masks, axis=0) == 0.0)
    for m in masks:
        assert float(np.max(np.abs(m))) <= (n - 1) * MASK_RANGE
        assert float(np.std(m)) > 0.5 * MASK_RANGE


def test_a_masked_update_looks_nothing_like_the_update() -> None:
    keys = _keys(4)
    publics = [k.public_key for k in keys]
    ctx = MaskContext("devnet", "job-1", 0, 5000)
    update = np.random.default_rng(0).normal(0, 1, 5000) * 1000  # weights x samples
    masked = update + mask_for(keys[0], publics, ctx)
    assert abs(float(np.corrcoef(update, masked)[0, 1])) < 0.05
    assert float(np.std(masked)) > 1000 * float(np.std(update))


@pytest.mark.parametrize("dropped", [(2,), (0, 4), (1, 3, 5)])
def test_dropout_recovery_gives_the_sum_of_the_survivors(dropped: tuple[int, ...]) -> None:
    keys = _keys(7)
    publics = [k.public_key for k in keys]
    rng = np.random.default_rng(len(dropped))
    updates = [rng.uniform(-1e3, 1e3, CTX.length) for _ in keys]
    masked = [u + mask_for(k, publics, CTX) for u, k in zip(updates, keys, strict=True)]
    survivors = [i for i in range(len(keys)) if i not in dropped]
    total = np.sum([masked[i] for i in survivors], axis=0)
    assert float(np.max(np.abs(total - np.sum([updates[i] for i in survivors], axis=0)))) > 1e3
    terms = [recovery_term(keys[i], keys[d].public_key, CTX) for i in survivors for d in dropped]
    out = unmask_sum(total, terms)
    assert float(np.max(np.abs(out - np.sum([updates[i] for i in survivors], axis=0)))) < 1e-6


def test_a_recovery_term_is_the_pairwise_term_only() -> None:
    a, b, c = _keys(3)
    publics = [a.public_key, b.public_key, c.public_key]
    assert np.array_equal(
        mask_for(a, publics, CTX), recovery_term(a, b.public_key, CTX) + recovery_term(a, c.public_key, CTX)
    )
    assert np.array_equal(recovery_term(a, b.public_key, CTX), -recovery_term(b, a.public_key, CTX))


def test_bad_inputs_are_refused() -> None:
    a, b = _keys(2)
    with pytest.raises(MaskError):
        mask_for(a, [a.public_key], CTX)
    with pytest.raises(MaskError):
        mask_for(a, [b"\x02" + b"\x00" * 32], CTX)
    with pytest.raises(MaskError):
        pair_seed(a, a.public_key, CTX)
    for bad in (
        lambda: MaskContext("devnet", "job", 0, 0),
        lambda: MaskContext("devnet", "job", -1, 10),
        lambda: MaskContext("", "job", 0, 10),
        lambda: MaskContext("devnet", "a\nb", 0, 10),
    ):
        with pytest.raises(MaskError):
            bad()
    with pytest.raises(MaskError) as info:
        unmask_sum(np.zeros(10), [np.zeros(9)])
    assert info.value.cause == "wrong_size"
    with pytest.raises(MaskError) as info:
        unmask_sum(np.zeros(10), [np.full(10, 4 * MASK_RANGE)])
    assert info.value.cause == "malformed"


def test_masked_and_encrypted_gives_the_weighted_sum_and_the_owner_sees_only_masked_updates() -> None:
    pytest.importorskip("tenseal")
    from r1os.edil._ckks import PRECISION, OwnerContext, add_encrypted, decrypt_vector, encrypt_vector

    owner = OwnerContext.create()
    public = owner.public()
    keys = _keys(5, "ckks")
    publics = [k.public_key for k in keys]
    length = 3000  # two ciphertexts
    ctx = MaskContext("devnet", "job-ckks", 1, length)
    rng = np.random.default_rng(11)
    weights = [rng.normal(0, 1, length) for _ in keys]
    samples = [120, 340, 75, 600, 210]
    sent = [
        encrypt_vector(public, n * w + mask_for(k, publics, ctx))
        for n, w, k in zip(samples, weights, keys, strict=True)
    ]
    total = decrypt_vector(owner, add_encrypted(public, sent), length)
    expected = np.sum([n * w for n, w in zip(samples, weights, strict=True)], axis=0)
    assert float(np.max(np.abs(total - expected))) < PRECISION
    average = total / sum(samples)
    assert float(np.max(np.abs(average - expected / sum(samples)))) < PRECISION / sum(samples)
    # The owner decrypting one participant's ciphertext sees a masked vector, not the update.
    alone = decrypt_vector(owner, sent[0], length)
    assert abs(float(np.corrcoef(alone, samples[0] * weights[0])[0, 1])) < 0.05
    # Participant 3 drops: the survivors' recovery terms correct the decrypted sum.
    survivors = [0, 1, 2, 4]
    partial = decrypt_vector(owner, add_encrypted(public, [sent[i] for i in survivors]), length)
    terms = [recovery_term(keys[i], keys[3].public_key, ctx) for i in survivors]
    fixed = unmask_sum(partial, terms)
    assert float(np.max(np.abs(fixed - (expected - samples[3] * weights[3])))) < PRECISION
