"""keccak-256, Ethereum's hash (not SHA3-256: the padding differs), behind every signature and address.

It runs pycryptodome's compiled Keccak, called through ctypes. eth_hash runs the same code through
pycryptodome's cffi layer, and cffi parses the C declarations at import with pycparser: ~1.5 MiB in every
node process, and 4 us a hash where the direct call takes 2.5. Where that library is not found, or does
not give the known digests, eth_hash computes it as before.
"""

from __future__ import annotations

import ctypes
import importlib.machinery
import importlib.util
import logging
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("r1os.identity")

_RATE_CAPACITY = 64  # keccak-256: capacity 512 bits
_ROUNDS = 24
_PADDING = 0x01  # Keccak's own padding (SHA3 uses 0x06)
_EMPTY = bytes.fromhex("c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470")
_ABC = bytes.fromhex("4e03657aea45a94fc7d47ba826c8d667c0d1e6e33a64a036ec44f58fa12d6c45")


def _direct() -> Callable[[bytes], bytes]:
    spec = importlib.util.find_spec("Crypto")  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise OSError("pycryptodome is not installed")
    folder = Path(next(iter(spec.submodule_search_locations))) / "Hash"
    found = [folder / f"_keccak{suffix}" for suffix in importlib.machinery.EXTENSION_SUFFIXES]
    path = next((p for p in found if p.is_file()), None)
    if path is None:
        raise OSError(f"no compiled Keccak in {folder}")
    lib = ctypes.CDLL(str(path))
    init, absorb, digest, destroy = lib.keccak_init, lib.keccak_absorb, lib.keccak_digest, lib.keccak_destroy
    init.argtypes = [ctypes.POINTER(ctypes.c_void_p), ctypes.c_size_t, ctypes.c_uint8]
    absorb.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    digest.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint8]
    destroy.argtypes = [ctypes.c_void_p]
    for fn in (init, absorb, digest, destroy):
        fn.restype = ctypes.c_int

    def keccak256(data: bytes) -> bytes:
        if not isinstance(data, bytes):
            data = bytes(data)
        state = ctypes.c_void_p()
        if init(ctypes.byref(state), _RATE_CAPACITY, _ROUNDS):
            raise MemoryError("keccak: no memory for a state")
        try:
            out = ctypes.create_string_buffer(32)
            if absorb(state, data, len(data)) or digest(state, out, 32, _PADDING):
                raise RuntimeError("keccak: the compiled Keccak refused its input")
            return out.raw
        finally:
            destroy(state)

    return keccak256


def _choose() -> Callable[[bytes], bytes]:
    try:
        direct = _direct()
        if direct(b"") == _EMPTY and direct(b"abc") == _ABC:
            return direct
        log.warning("keccak: pycryptodome's compiled Keccak gave wrong digests; using eth_hash")
    except (OSError, AttributeError) as exc:
        log.debug("keccak through eth_hash: %s", exc)
    from eth_hash.auto import keccak

    return keccak


keccak256: Callable[[bytes], bytes] = _choose()
