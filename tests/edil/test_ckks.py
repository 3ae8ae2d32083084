"""CKKS: the public context cannot decrypt, sums need no secret key, and bad ciphertexts are refused."""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest

tenseal = pytest.importorskip("tenseal")

from r1os.edil._ckks import (  # noqa: E402
    PRECISION,
    CkksError,
    CkksSum,
    OwnerContext,
    PublicContext,
    add_encrypted,
    chunk_count,
    decrypt_vector,
    encrypt_vector,
    fingerprint,
)


@pytest.fixture(scope="module")
def owner() -> OwnerContext:
    return OwnerContext.create()


@pytest.fixture(scope="module")
def other() -> OwnerContext:
    """Another owner with the same parameters (its ciphertexts load under `owner`'s context)."""
    return OwnerContext.create()


@pytest.fixture(scope="module")
def public(owner: OwnerContext) -> PublicContext:
    return PublicContext.from_bytes(owner.public_bytes())


def test_public_bytes_hold_no_secret_key(owner: OwnerContext, public: PublicContext) -> None:
    raw = owner.public_bytes()
    ctx = tenseal.context_from(raw)
    assert not ctx.is_private() and not ctx.has_secret_key()
    vec = tenseal.ckks_vector(ctx, [1.0, 2.0])
    with pytest.raises(ValueError, match="secret"):
        vec.decrypt()
    assert public.fingerprint == fingerprint(raw) == hashlib.sha256(raw).hexdigest() == owner.fingerprint
    assert (public.poly_modulus_degree, public.slots, public.scale_bits, public.data_bits) == (
        4096,
        2048,
        30,
        60,
    )
    assert public.max_sum == public.max_input == 2.0**28


def test_a_context_with_its_secret_key_is_not_a_public_context(owner: OwnerContext) -> None:
    with pytest.raises(CkksError) as info:
        PublicContext.from_bytes(owner.secret_bytes())
    assert info.value.cause == "not_public"


@pytest.mark.parametrize("raw", [b"", b"\x00" * 10, os.urandom(1000)])
def test_garbage_is_not_a_context(raw: bytes) -> None:
    with pytest.raises(CkksError) as info:
        PublicContext.from_bytes(raw)
    assert info.value.cause == "malformed"


def test_the_owner_context_reloads_from_its_secret_bytes(owner: OwnerContext, public: PublicContext) -> None:
    again = OwnerContext.from_secret_bytes(owner.secret_bytes())
    assert again.fingerprint == owner.fingerprint
    vec = np.linspace(-5, 5, 100)
    out = decrypt_vector(again, encrypt_vector(public, vec), 100)
    assert np.max(np.abs(out - vec)) < PRECISION


@pytest.mark.parametrize(("length", "chunks"), [(1, 1), (650, 1), (2048, 1), (2049, 2), (5000, 3)])
def test_vectors_pack_into_as_few_ciphertexts_as_fit(
    owner: OwnerContext, public: PublicContext, length: int, chunks: int
) -> None:
    vec = np.random.default_rng(length).uniform(-100, 100, length)
    enc = encrypt_vector(owner.public_bytes(), vec)
    assert len(enc) == chunks == chunk_count(length, public.slots) == public.chunks_for(length)
    assert np.max(np.abs(decrypt_vector(owner, enc, length) - vec)) < PRECISION


def test_sums_need_only_the_public_context_and_stay_within_the_documented_precision(
    owner: OwnerContext,
) -> None:
    """Measured: at most 2.5e-5 for k = 3..20 vectors of values up to 1e4; the bound is 1e-4."""
    aggregator = PublicContext.from_bytes(owner.public_bytes())
    assert not aggregator.holds_secret_key()
    rng = np.random.default_rng(7)
    worst = 0.0
    for k in range(3, 21):
        vectors = [rng.uniform(-1e4, 1e4, 2048) * rng.choice([1.0, 0.1, 1e-3]) for _ in range(k)]
        total = add_encrypted(aggregator, [encrypt_vector(aggregator, v) for v in vectors])
        err = float(np.max(np.abs(decrypt_vector(owner, total, 2048) - np.sum(vectors, axis=0))))
        worst = max(worst, err)
    assert worst < PRECISION


def test_a_running_sum_is_the_same_as_one_addition(owner: OwnerContext, public: PublicContext) -> None:
    rng = np.random.default_rng(1)
    vectors = [rng.uniform(-10, 10, 3000) for _ in range(4)]
    updates = [encrypt_vector(public, v) for v in vectors]
    acc = CkksSum(public, 3000)
    for u in updates:
        acc.add(u)
    assert acc.count == 4
    expected = np.sum(vectors, axis=0)
    for chunks in (acc.result(), add_encrypted(public, updates), add_encrypted(public, updates, 3000)):
        assert np.max(np.abs(decrypt_vector(owner, chunks, 3000) - expected)) < PRECISION


def test_sizes_per_value_stay_within_the_target(public: PublicContext) -> None:
    """One size test: a 2,048-value ciphertext is about 65.7 kB (32 bytes a value, 4x float64, 8x
    float32); a 650-value model pads one ciphertext (12.6x float64)."""
    rng = np.random.default_rng(2)
    for length, max_ratio in ((10_000, 4.2), (2410, 7.0), (650, 13.0)):
        enc = encrypt_vector(public, rng.uniform(-1e3, 1e3, length))
        ratio = sum(map(len, enc)) / (8 * length)
        assert ratio <= max_ratio, (length, ratio)
    assert ratio <= 20


def test_ciphertexts_that_do_not_deserialize_are_malformed(public: PublicContext) -> None:
    good = encrypt_vector(public, np.ones(10))[0]
    for bad in (b"", os.urandom(200), good[: len(good) // 2], good[:-1]):
        with pytest.raises(CkksError) as info:
            add_encrypted(public, [[good], [bad]], 10)
        assert info.value.cause == "malformed", bad[:8]


def test_counts_and_lengths_that_do_not_match_are_wrong_size(
    owner: OwnerContext, public: PublicContext
) -> None:
    two = encrypt_vector(public, np.ones(3000))
    one = encrypt_vector(public, np.ones(10))
    cases = [
        lambda: add_encrypted(public, [two, two[:1]]),
        lambda: add_encrypted(public, [one, encrypt_vector(public, np.ones(11))]),
        lambda: add_encrypted(public, [two], 10),
        lambda: decrypt_vector(owner, two, 2000),
        lambda: decrypt_vector(owner, one, 5000),
    ]
    for case in cases:
        with pytest.raises(CkksError) as info:
            case()
        assert info.value.cause == "wrong_size"


def test_a_ciphertext_under_other_parameters_is_wrong_context(public: PublicContext) -> None:
    bigger = OwnerContext.create(8192, [60, 40, 60], 2.0**40)
    rescaled = OwnerContext.create(4096, [60, 49], 2.0**31)  # same primes, another scale
    good = encrypt_vector(public, np.ones(10))
    for foreign in (bigger, rescaled):
        with pytest.raises(CkksError) as info:
            add_encrypted(public, [good, encrypt_vector(foreign, np.ones(10))])
        assert info.value.cause == "wrong_context"


def test_a_ciphertext_under_another_key_never_decrypts_to_an_accepted_sum(
    owner: OwnerContext, other: OwnerContext, public: PublicContext
) -> None:
    """SEAL loads a ciphertext made under the same parameters and another key, and adds it: the sum
    decrypts to values near 2^34, which `decrypt_vector` refuses."""
    rng = np.random.default_rng(3)
    mine = [encrypt_vector(public, rng.uniform(-1e3, 1e3, 2500)) for _ in range(2)]
    theirs = encrypt_vector(other, rng.uniform(-1e3, 1e3, 2500))
    total = add_encrypted(public, [*mine, theirs])
    for chunks in (total, theirs):
        with pytest.raises(CkksError) as info:
            decrypt_vector(owner, chunks, 2500)
        assert info.value.cause == "overflow"


def test_a_sum_beyond_the_range_is_refused(owner: OwnerContext, public: PublicContext) -> None:
    big = np.full(100, 0.9 * public.max_input)
    total = add_encrypted(public, [encrypt_vector(public, big)] * 2)
    with pytest.raises(CkksError) as info:
        decrypt_vector(owner, total, 100)
    assert info.value.cause == "overflow"


def test_vectors_out_of_range_or_not_finite_are_refused(public: PublicContext) -> None:
    for vec, cause in (
        (np.full(4, public.max_input), "too_large"),
        (np.array([1.0, np.nan]), "not_finite"),
        (np.array([np.inf]), "not_finite"),
        (np.zeros((2, 2)), "malformed"),
        (np.zeros(0), "malformed"),
    ):
        with pytest.raises(CkksError) as info:
            encrypt_vector(public, vec)
        assert info.value.cause == cause


def test_a_bad_update_leaves_the_running_sum_as_it_was(owner: OwnerContext, public: PublicContext) -> None:
    acc = CkksSum(public, 100)
    vec = np.arange(100.0)
    acc.add(encrypt_vector(public, vec))
    with pytest.raises(CkksError):
        acc.add([os.urandom(500)])
    with pytest.raises(CkksError):
        acc.add(encrypt_vector(public, np.ones(3000)))
    acc.add(encrypt_vector(public, vec))
    assert acc.count == 2
    assert np.max(np.abs(decrypt_vector(owner, acc.result(), 100) - 2 * vec)) < PRECISION


def test_nothing_to_add_is_refused(public: PublicContext) -> None:
    with pytest.raises(CkksError) as info:
        add_encrypted(public, [])
    assert info.value.cause == "empty"
    with pytest.raises(CkksError) as info:
        CkksSum(public, 10).result()
    assert info.value.cause == "empty"


def test_parameters_below_128_bit_security_are_refused() -> None:
    with pytest.raises(CkksError) as info:
        OwnerContext.create(4096, [60, 60], 2.0**30)
    assert info.value.cause == "bad_parameters"
