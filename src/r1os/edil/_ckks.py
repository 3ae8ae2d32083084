"""CKKS (TenSEAL) for encrypted aggregation: the owner holds the secret key, everyone else the public one.

The job's owner creates an `OwnerContext` and publishes `public_bytes()` (the CKKS parameters and the
public encryption key, no secret key, no relinearization or Galois keys: sums need none) with its
`fingerprint` (SHA-256 of those bytes). Participants encrypt their update under it (`encrypt_vector`),
an aggregator adds ciphertexts with the public context only (`add_encrypted`, `CkksSum`), and only the
owner decrypts the sum (`decrypt_vector`).

Parameters (the defaults of `OwnerContext.create`): N = 4096 (2,048 slots per ciphertext), coefficient
moduli [60, 49] bits (a 60-bit data prime and the 49-bit special prime SEAL keeps for key switching;
109 bits is the most SEAL's 128-bit security table allows at N = 4096), scale 2^30. Sums need no
multiplication, hence no rescaling level: one data prime is enough, and a ciphertext's size is about
2 polynomials x N coefficients x 8 bytes, so the cost per value depends on the data primes only.
Measured with TenSEAL 0.3.18 (ciphertext bytes as serialized; "x f64" is bytes per value over 8):

| N, moduli, scale | bytes per ciphertext | per slot | x f64 | max abs error, sum of k <= 20 |
| --- | --- | --- | --- | --- |
| 8192, [60, 40, 40, 60], 2^40 (NVFlare's) | 331,106 | 80.8 | 10.1 | 3.4e-8 |
| 8192, [60, 40, 60], 2^40 | 235,094 | 57.4 | 7.2 | 3.4e-8 |
| 8192, [60, 60], 2^30 | 131,217 | 32.0 | 4.0 | 3.0e-5 |
| **4096, [60, 49], 2^30** (default) | **65,676** | **32.1** | **4.0** | **2.5e-5** |
| 4096, [60, 49], 2^32 | 65,676 | 32.1 | 4.0 | 6.0e-6 |

The default keeps NVFlare's security level at 2.5x fewer bytes per value, and the smaller N halves the
padding of small models (one ciphertext holds 2,048 values, not 4,096): a 650-value logistic regression
is one 65,676-byte ciphertext (12.6x its float64 form, 25x float32), a 2,410-value MLP two (6.8x
float64, 13.6x float32), 10,000 values five (4.1x float64, 8.2x float32). TenSEAL already compresses
its serialization (zstd); random residues do not compress further.

Precision: the error of a decrypted sum is CKKS noise over the scale, independent of the values'
magnitude and of masks that cancel (measured the same for values up to 1e4 and masks up to 2^24): at
most 2.5e-5 absolute over k = 3..20 summed vectors of 2,048 values (it grows about as sqrt(k)).
`PRECISION` (1e-4) is the bound the tests assert. Divided by the total sample count of weighted FedAvg,
that is far below anything training notices.

Range: the data prime q is just under 2^60, so a decrypted value is right while its coefficients stay
below q/2, i.e. values up to +-2^(59 - 30) = 2^29 (a constant vector is the worst case; measured:
constant sums of 2^29 and more wrap around). SEAL's encoder refuses constant vectors a little above
2^28. Hence one documented range, +-2^28 (`PublicContext.max_input`, `max_sum`): a vector to encrypt
must stay inside it (else `too_large`), and so must a sum (`decrypt_vector` refuses a larger one as
`overflow`; a sum that wrapped around mod q is usually caught the same way, but only keeping sums inside
the range guarantees it).

Another context: a ciphertext made under other parameters does not load (`wrong_context`). One made
under the same parameters but another key loads and adds (SEAL cannot tell; the signed update header
binds the context fingerprint for that, see `r1os.edil._updates`), and its sum decrypts to values of
about 2^34, far beyond `max_sum`, so `decrypt_vector` refuses it (`overflow`) instead of returning
garbage. Every ciphertext is also checked for 2 polynomials, the fresh level, the context's scale, the
expected number of values and for not being transparent (an unencrypted ciphertext).

Threads: TenSEAL holds the GIL, so calls do not run in parallel; a module lock serializes them anyway
(contexts are shared). Each call takes milliseconds (encrypt about 1.3 ms, load 0.1 ms, decrypt 0.2 ms
per 2,048-value ciphertext): run them in a worker thread from async code.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from r1os.edil._errors import EdilError

log = logging.getLogger("r1os.edil")

POLY_MODULUS_DEGREE = 4096
COEFF_MOD_BIT_SIZES: tuple[int, ...] = (60, 49)
SCALE_BITS = 30
#: The max abs error of a decrypted sum of up to 20 vectors that the tests assert (measured: 2.5e-5).
PRECISION = 1e-4
#: Parameters a participant accepts in a public context.
ALLOWED_DEGREES = (4096, 8192, 16384)
MIN_SCALE_BITS, MAX_SCALE_BITS = 20, 50
#: Largest serialized public context or ciphertext accepted (a 16384-degree ciphertext with four data
#: primes is about 1.1 MB).
MAX_CONTEXT_BYTES = 16 * 1024 * 1024
MAX_CIPHERTEXT_BYTES = 4 * 1024 * 1024
#: Most ciphertexts one vector may take (1M values at N = 4096).
MAX_CHUNKS = 512

_lock = threading.RLock()


class CkksError(EdilError):
    """A CKKS context, vector or ciphertext cannot be used; `cause` names why."""

    cause = "malformed"


def _tenseal() -> Any:
    try:
        import tenseal
    except ImportError:  # pragma: no cover - a declared dependency
        raise CkksError(
            "TenSEAL is not installed", cause="unavailable", hint="pip install 'tenseal>=0.3.16'"
        ) from None
    return tenseal


def fingerprint(public_bytes: bytes) -> str:
    """The hex SHA-256 of a serialized public context: what update headers name."""
    return hashlib.sha256(public_bytes).hexdigest()


def chunk_count(length: int, slots: int) -> int:
    """Ciphertexts a vector of `length` values takes at `slots` values per ciphertext."""
    return max(1, math.ceil(length / slots))


def _chunk_sizes(length: int, slots: int) -> list[int]:
    n = chunk_count(length, slots)
    return [slots] * (n - 1) + [length - slots * (n - 1)]


@dataclass(frozen=True, eq=False)
class PublicContext:
    """A loaded public context: what participants encrypt with and aggregators add with."""

    raw: bytes = field(repr=False)
    fingerprint: str
    poly_modulus_degree: int
    scale_bits: int
    data_bits: int
    _ctx: Any = field(repr=False)
    _parms_id: list[int] = field(repr=False)

    @property
    def slots(self) -> int:
        return self.poly_modulus_degree // 2

    @property
    def max_input(self) -> float:
        """Magnitude a vector to encrypt must stay below (half the range that decodes right)."""
        return float(2.0 ** (self.data_bits - 2 - self.scale_bits))

    @property
    def max_sum(self) -> float:
        """Largest magnitude a decrypted sum may hold (larger ones are refused as `overflow`)."""
        return float(2.0 ** (self.data_bits - 2 - self.scale_bits))

    def holds_secret_key(self) -> bool:
        """Whether the loaded context holds a secret key (never, for a `PublicContext`)."""
        return bool(self._ctx.has_secret_key() or self._ctx.is_private())

    def chunks_for(self, length: int) -> int:
        """Ciphertexts a vector of `length` values takes under this context."""
        return chunk_count(length, self.slots)

    @classmethod
    def from_bytes(cls, raw: bytes) -> PublicContext:
        """Load and check a serialized public context: CKKS, allowed parameters, and no secret key."""
        if not isinstance(raw, bytes | bytearray) or not raw:
            raise CkksError("a public context is non-empty bytes")
        if len(raw) > MAX_CONTEXT_BYTES:
            raise CkksError(f"a public context of {len(raw)} bytes, at most {MAX_CONTEXT_BYTES}")
        ts = _tenseal()
        raw = bytes(raw)
        with _lock:
            try:
                ctx = ts.context_from(raw)
            except Exception as exc:
                raise CkksError(f"the public context does not load: {exc}") from None
            return cls._wrap(ctx, raw)

    @classmethod
    def _wrap(cls, ctx: Any, raw: bytes) -> PublicContext:
        ts = _tenseal()
        if ctx.is_private() or ctx.has_secret_key():
            raise CkksError(
                "the context holds a secret key: a public context never does",
                cause="not_public",
                hint="publish OwnerContext.public_bytes(), never the owner's context",
            )
        if not ctx.has_public_key():
            raise CkksError("the context has no public key to encrypt with")
        data = ctx.seal_context().data
        first = data.first_context_data()
        parms = first.parms()
        if parms.scheme() != ts._ts_cpp.SCHEME_TYPE.CKKS:
            raise CkksError("the context is not a CKKS context", cause="wrong_context")
        degree = int(parms.poly_modulus_degree())
        if degree not in ALLOWED_DEGREES:
            raise CkksError(f"poly modulus degree {degree}, expected one of {ALLOWED_DEGREES}")
        scale = float(ctx.global_scale)
        scale_bits = round(math.log2(scale)) if scale > 0 else 0
        if scale != 2.0**scale_bits or not MIN_SCALE_BITS <= scale_bits <= MAX_SCALE_BITS:
            raise CkksError(f"scale {scale}: a power of two from 2^{MIN_SCALE_BITS} to 2^{MAX_SCALE_BITS}")
        data_bits = int(first.total_coeff_modulus_bit_count())
        if data_bits < scale_bits + 8:
            raise CkksError(f"data modulus of {data_bits} bits leaves no room above scale 2^{scale_bits}")
        return cls(
            raw=raw,
            fingerprint=fingerprint(raw),
            poly_modulus_degree=degree,
            scale_bits=scale_bits,
            data_bits=data_bits,
            _ctx=ctx,
            _parms_id=list(first.parms_id()),
        )

    # -- ciphertexts ------------------------------------------------------------------------------------

    def load_chunk(self, chunk: bytes, size: int, *, index: int = 0) -> Any:
        """A ciphertext of `size` values made under these parameters, checked; `CkksError` otherwise."""
        ts = _tenseal()
        if not isinstance(chunk, bytes | bytearray) or not chunk:
            raise CkksError(f"ciphertext {index} is empty")
        if len(chunk) > MAX_CIPHERTEXT_BYTES:
            raise CkksError(
                f"ciphertext {index} is {len(chunk)} bytes, at most {MAX_CIPHERTEXT_BYTES}",
                cause="wrong_size",
            )
        try:
            vec = ts.ckks_vector_from(self._ctx, bytes(chunk))
        except ValueError as exc:
            raise CkksError(f"ciphertext {index} does not deserialize: {exc}") from None
        except Exception as exc:
            # SEAL refuses a ciphertext whose parameters (or residues) do not fit this context.
            raise CkksError(
                f"ciphertext {index} does not fit this context ({exc}): made under another context, "
                "or damaged",
                cause="wrong_context",
            ) from None
        cts = vec.ciphertext()
        if len(cts) != 1:
            raise CkksError(f"ciphertext {index} holds {len(cts)} ciphertexts, expected 1")
        ct = cts[0]
        if list(ct.parms_id()) != self._parms_id:
            raise CkksError(f"ciphertext {index} is not at this context's fresh level", cause="wrong_context")
        if ct.scale != 2.0**self.scale_bits:
            raise CkksError(
                f"ciphertext {index} has scale {ct.scale}, this context 2^{self.scale_bits}",
                cause="wrong_context",
            )
        if ct.size() != 2 or not ct.is_ntt_form():
            raise CkksError(f"ciphertext {index} has {ct.size()} polynomials, expected 2 in NTT form")
        if ct.is_transparent():
            raise CkksError(f"ciphertext {index} is transparent: it encrypts nothing")
        if vec.size() != size:
            raise CkksError(
                f"ciphertext {index} holds {vec.size()} values, expected {size}", cause="wrong_size"
            )
        return vec


def _public(ctx: PublicContext | OwnerContext | bytes) -> PublicContext:
    if isinstance(ctx, PublicContext):
        return ctx
    if isinstance(ctx, OwnerContext):
        return ctx.public()
    return _load_public(bytes(ctx))


@functools.lru_cache(maxsize=8)
def _load_public(raw: bytes) -> PublicContext:
    return PublicContext.from_bytes(raw)


class OwnerContext:
    """The job owner's CKKS context: the secret key never leaves it (`public_bytes` has none)."""

    __slots__ = ("_ctx", "_public", "_public_bytes")

    def __init__(self, ctx: Any) -> None:
        if not ctx.is_private():
            raise CkksError("an owner context holds the secret key", cause="not_private")
        self._ctx = ctx
        raw = bytes(
            ctx.serialize(
                save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False
            )
        )
        self._public_bytes = raw
        with _lock:
            self._public = PublicContext._wrap(_tenseal().context_from(raw), raw)

    @classmethod
    def create(
        cls,
        poly_modulus_degree: int = POLY_MODULUS_DEGREE,
        coeff_mod_bit_sizes: Sequence[int] = COEFF_MOD_BIT_SIZES,
        scale: float = 2.0**SCALE_BITS,
    ) -> OwnerContext:
        """A new key pair under these parameters (SEAL refuses any below 128-bit security)."""
        ts = _tenseal()
        with _lock:
            try:
                ctx = ts.context(
                    ts.SCHEME_TYPE.CKKS, poly_modulus_degree, coeff_mod_bit_sizes=list(coeff_mod_bit_sizes)
                )
            except Exception as exc:
                raise CkksError(
                    f"CKKS parameters N={poly_modulus_degree} moduli={list(coeff_mod_bit_sizes)}: {exc}",
                    cause="bad_parameters",
                ) from None
            ctx.global_scale = scale
            return cls(ctx)

    @classmethod
    def from_secret_bytes(cls, raw: bytes) -> OwnerContext:
        """The owner context saved by `secret_bytes` (keep those bytes sealed: they decrypt everything)."""
        if not raw or len(raw) > MAX_CONTEXT_BYTES:
            raise CkksError("an owner context is 1 byte to 16 MiB")
        with _lock:
            try:
                ctx = _tenseal().context_from(bytes(raw))
            except Exception as exc:
                raise CkksError(f"the owner context does not load: {exc}") from None
            return cls(ctx)

    def secret_bytes(self) -> bytes:
        """The context with its secret key, for the owner to store (sealed) and reload."""
        with _lock:
            return bytes(
                self._ctx.serialize(
                    save_public_key=True, save_secret_key=True, save_galois_keys=False, save_relin_keys=False
                )
            )

    def public_bytes(self) -> bytes:
        """The serialized public context: parameters and public key, no secret key."""
        return self._public_bytes

    @property
    def fingerprint(self) -> str:
        return self._public.fingerprint

    def public(self) -> PublicContext:
        return self._public

    def __repr__(self) -> str:
        return f"OwnerContext(fingerprint={self.fingerprint[:16]}...)"


def _check_vector(vec: np.ndarray | Sequence[float]) -> np.ndarray:
    arr = np.asarray(vec, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise CkksError(f"a vector to encrypt is 1-dimensional and non-empty, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise CkksError("the vector holds NaN or infinite values", cause="not_finite")
    return arr


def encrypt_vector(public: PublicContext | OwnerContext | bytes, vec: np.ndarray) -> list[bytes]:
    """`vec` encrypted under the public context, packed into `ceil(len / slots)` ciphertexts."""
    pub = _public(public)
    arr = _check_vector(vec)
    if arr.size > MAX_CHUNKS * pub.slots:
        raise CkksError(f"{arr.size} values, at most {MAX_CHUNKS * pub.slots}", cause="too_large")
    peak = float(np.max(np.abs(arr)))
    if peak >= pub.max_input:
        raise CkksError(
            f"a value of magnitude {peak:.3g} is beyond this context's range (+-{pub.max_input:.3g})",
            cause="too_large",
        )
    ts = _tenseal()
    out: list[bytes] = []
    with _lock:
        for start in range(0, arr.size, pub.slots):
            try:
                ct = ts.ckks_vector(pub._ctx, arr[start : start + pub.slots])
            except ValueError as exc:  # SEAL: "encoded values are too large"
                raise CkksError(f"the vector does not encode: {exc}", cause="too_large") from None
            out.append(bytes(ct.serialize()))
    return out


class CkksSum:
    """A running sum of encrypted vectors of `length` values, with the public context only."""

    def __init__(self, public: PublicContext | OwnerContext | bytes, length: int) -> None:
        self.public = _public(public)
        if not 1 <= length <= MAX_CHUNKS * self.public.slots:
            raise CkksError(f"length {length} out of 1..{MAX_CHUNKS * self.public.slots}", cause="wrong_size")
        self.length = length
        self.sizes = _chunk_sizes(length, self.public.slots)
        self.count = 0
        self._acc: list[Any] | None = None

    def load(self, chunks: Sequence[bytes]) -> list[Any]:
        """Every chunk of one update loaded and checked (nothing is added yet)."""
        if len(chunks) != len(self.sizes):
            raise CkksError(
                f"{len(chunks)} ciphertexts, expected {len(self.sizes)} for {self.length} values",
                cause="wrong_size",
            )
        with _lock:
            return [
                self.public.load_chunk(c, s, index=i)
                for i, (c, s) in enumerate(zip(chunks, self.sizes, strict=True))
            ]

    def add(self, chunks: Sequence[bytes]) -> None:
        """Add one update's ciphertexts; a bad update raises and leaves the sum as it was."""
        vecs = self.load(chunks)
        with _lock:
            if self._acc is None:
                self._acc = vecs
            else:
                self._acc = [a + v for a, v in zip(self._acc, vecs, strict=True)]
        self.count += 1

    def result(self) -> list[bytes]:
        """The sum's ciphertexts."""
        if self._acc is None:
            raise CkksError("no update was added", cause="empty")
        with _lock:
            return [bytes(v.serialize()) for v in self._acc]


def add_encrypted(
    public: PublicContext | OwnerContext | bytes,
    updates: Sequence[Sequence[bytes]],
    length: int | None = None,
) -> list[bytes]:
    """The ciphertexts of the sum of `updates` (each a list of chunks), computed without a secret key.

    Every update must have the same chunks and sizes (those of `length` values when given, else those of
    the first update)."""
    if not updates:
        raise CkksError("nothing to add", cause="empty")
    pub = _public(public)
    if length is None:
        first = updates[0]
        if not first or len(first) > MAX_CHUNKS:
            raise CkksError(f"an update has 1-{MAX_CHUNKS} ciphertexts, not {len(first)}", cause="wrong_size")
        with _lock:
            length = pub.slots * (len(first) - 1) + _vector_size(pub, first[-1])
    acc = CkksSum(pub, length)
    for update in updates:
        acc.add(update)
    return acc.result()


def _vector_size(pub: PublicContext, chunk: bytes) -> int:
    """The number of values a ciphertext claims (checked against the slots)."""
    ts = _tenseal()
    if not isinstance(chunk, bytes | bytearray) or not chunk or len(chunk) > MAX_CIPHERTEXT_BYTES:
        raise CkksError(f"a ciphertext is 1 to {MAX_CIPHERTEXT_BYTES} bytes")
    try:
        size = int(ts.ckks_vector_from(pub._ctx, bytes(chunk)).size())
    except Exception as exc:
        raise CkksError(f"a ciphertext does not deserialize: {exc}") from None
    if not 1 <= size <= pub.slots:
        raise CkksError(f"a ciphertext of {size} values, at most {pub.slots}", cause="wrong_size")
    return size


def decrypt_vector(owner: OwnerContext, chunks: Sequence[bytes], length: int) -> np.ndarray:
    """The `length` values the ciphertexts hold, decrypted with the owner's secret key; `overflow` when a
    value is beyond `max_sum` (a sum out of range, or a ciphertext made under another key)."""
    acc = CkksSum(owner.public(), length)
    vecs = acc.load(chunks)
    with _lock:
        secret = owner._ctx.secret_key()
        parts = [np.asarray(v.decrypt(secret), dtype=np.float64) for v in vecs]
    out = np.concatenate(parts)
    bound = owner.public().max_sum
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if not np.all(np.isfinite(out)) or peak > bound:
        log.warning("edil: a decrypted sum is out of range (peak %.3g, bound %.3g)", peak, bound)
        raise CkksError(
            f"the decrypted values reach {peak:.3g}, beyond +-{bound:.3g}: the sum overflowed, or a "
            "ciphertext was made under another key",
            cause="overflow",
        )
    return out
