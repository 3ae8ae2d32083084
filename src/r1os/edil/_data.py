"""Data sets participants train on: named by a reference in the job spec, loaded only on the node with them.

A data reference is one of:

- `example:digits?part=I&of=N&skew=label&major=0.8&seed=S` - part I (0-based) of N of scikit-learn's digits
  (8x8 images as 64 values in [0, 1], 10 classes), without the held-out test split. `skew=label` (the default)
  gives each part most of a subset of the labels; `skew=iid` deals the examples evenly. `major` and `seed` are
  optional (0.8 and 0).
- `example:digits?split=test` - the held-out test split (20% of each class, fixed: it does not depend on any
  seed, so no part of any seed ever holds a test example). `split=train` is the whole training pool.
- `data:NAME` - a data set the node's operator declared under NAME (a mapping name -> .npz file the node is
  given; the job never names a path on the node).
- `path:/abs/file.npz` - an .npz file by absolute path, only inside a folder the node's operator allowed.

An .npz holds `X` (2-D, numbers) and `y` (1-D, integer labels from 0); it is read without pickle and checked
against the bounds below. A node that does not offer a data set says so (`cause` `data_not_offered`).

The label-skew rule, exactly: the classes are put in an order drawn from `seed`; the class at position j of
that order has home part j mod N. Of each class's training examples (shuffled by `seed`), round(major * count)
go to its home part and the rest are dealt in turn to the other parts (home+1, home+2, ... mod N). With N = 1
the one part gets everything. Parts are disjoint and together are the whole training pool, in pool order.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl

from r1os.edil._errors import EdilError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    FloatArray = npt.NDArray[np.float64]
    IntArray = npt.NDArray[np.int64]

log = logging.getLogger("r1os.edil")


def __getattr__(name: str) -> Any:
    # numpy is imported when a data set is loaded, not with the module (every node imports it, few train)
    if name in ("FloatArray", "IntArray"):
        import numpy as np
        import numpy.typing as npt

        if name == "FloatArray":
            return npt.NDArray[np.float64]
        return npt.NDArray[np.int64]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


#: The examples r1os ships a loader for, with (features, classes).
EXAMPLES: dict[str, tuple[int, int]] = {"digits": (64, 10)}
#: The held-out test split: this share of each class, drawn with a fixed seed (never the job's).
TEST_FRACTION = 0.2
TEST_SEED = 0x5EED
DEFAULT_MAJOR = 0.8
MAX_PARTS = 64

#: Bounds on a data set read from an .npz file.
MAX_NPZ_BYTES = 1 << 30
MAX_ROWS = 10_000_000
MAX_FEATURES = 65_536
MAX_CLASSES = 1_000

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

Skew = Literal["label", "iid"]


@dataclass(frozen=True)
class DataRef:
    """A parsed data reference (see the module's doc); `str(ref)` is its canonical text."""

    kind: Literal["example", "data", "path"]
    name: str
    split: Literal["part", "train", "test"] | None = None
    part: int = 0
    of: int = 1
    skew: Skew = "label"
    major: float = DEFAULT_MAJOR
    seed: int = 0

    def __str__(self) -> str:
        if self.kind != "example":
            return f"{self.kind}:{self.name}"
        if self.split != "part":
            return f"example:{self.name}?split={self.split}"
        return (
            f"example:{self.name}?part={self.part}&of={self.of}&skew={self.skew}"
            f"&major={self.major:g}&seed={self.seed}"
        )

    @property
    def is_test(self) -> bool:
        return self.kind == "example" and self.split == "test"


@dataclass(frozen=True)
class Dataset:
    """Features (float64, [n, d]) and labels (int64, [n], from 0)."""

    X: FloatArray
    y: IntArray

    @property
    def n(self) -> int:
        return int(self.X.shape[0])

    @property
    def n_features(self) -> int:
        return int(self.X.shape[1])


def _bad(ref: str, why: str) -> EdilError:
    return EdilError(f"data reference {ref[:200]!r}: {why}", cause="bad_data_ref", status=422)


def _int(ref: str, params: dict[str, str], key: str, default: int, lo: int, hi: int) -> int:
    raw = params.get(key)
    if raw is None:
        return default
    if not re.fullmatch(r"\d{1,10}", raw):
        raise _bad(ref, f"{key}={raw!r} is not a whole number")
    value = int(raw)
    if not lo <= value <= hi:
        raise _bad(ref, f"{key}={value} is outside {lo}..{hi}")
    return value


def parse_ref(text: str) -> DataRef:
    """Parse a data reference; `EdilError` (cause `bad_data_ref`) saying what is wrong otherwise."""
    if not isinstance(text, str) or not text or len(text) > 1024:
        raise _bad(str(text), "write example:NAME?..., data:NAME or path:/absolute/file.npz")
    kind, sep, rest = text.partition(":")
    if not sep:
        raise _bad(text, "write example:NAME?..., data:NAME or path:/absolute/file.npz")
    if kind == "data":
        if not NAME_RE.fullmatch(rest):
            raise _bad(text, "a data set name is 1-64 of A-Z, a-z, 0-9, '_', '.', '-'")
        return DataRef("data", rest)
    if kind == "path":
        if "\x00" in rest or not rest.startswith("/") or "/../" in rest + "/" or "\\" in rest:
            raise _bad(text, "a path is absolute, without '..'")
        if not rest.endswith(".npz"):
            raise _bad(text, "a path names an .npz file (arrays X and y)")
        return DataRef("path", rest)
    if kind != "example":
        raise _bad(text, f"unknown kind {kind!r}: use example:, data: or path:")
    name, _, query = rest.partition("?")
    if name not in EXAMPLES:
        raise _bad(text, f"unknown example {name!r} (known: {', '.join(sorted(EXAMPLES))})")
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=16)
    except ValueError:
        raise _bad(text, "the part after '?' is key=value pairs joined by '&'") from None
    params = dict(pairs)
    if len(params) != len(pairs):
        raise _bad(text, "a parameter is given twice")
    unknown = set(params) - {"split", "part", "of", "skew", "major", "seed"}
    if unknown:
        raise _bad(text, f"unknown parameter {sorted(unknown)[0]!r}")
    split = params.get("split")
    if split is not None:
        if split not in ("train", "test"):
            raise _bad(text, f"split={split!r}: use split=test or split=train")
        if set(params) != {"split"}:
            raise _bad(text, f"split={split} takes no other parameter")
        return DataRef("example", name, split="test" if split == "test" else "train")
    if "part" not in params or "of" not in params:
        raise _bad(text, "give part=I&of=N (a part of the training pool) or split=test")
    of = _int(text, params, "of", 1, 1, MAX_PARTS)
    part = _int(text, params, "part", 0, 0, MAX_PARTS - 1)
    if part >= of:
        raise _bad(text, f"part={part} but of={of}: parts are numbered 0..{of - 1}")
    skew = params.get("skew", "label")
    if skew not in ("label", "iid"):
        raise _bad(text, f"skew={skew!r}: use label or iid")
    major = DEFAULT_MAJOR
    if "major" in params:
        try:
            major = float(params["major"])
        except ValueError:
            raise _bad(text, f"major={params['major']!r} is not a number") from None
        if not 0.0 <= major <= 1.0:
            raise _bad(text, f"major={major:g} is outside 0..1")
    seed = _int(text, params, "seed", 0, 0, 2**32 - 1)
    return DataRef(
        "example", name, split="part", part=part, of=of, skew="iid" if skew == "iid" else "label",
        major=major, seed=seed,
    )  # fmt: skip


def known_shape(ref: str | DataRef) -> tuple[int, int] | None:
    """(features, classes) of an example data set; None for a node's own data (known only on that node)."""
    r = parse_ref(ref) if isinstance(ref, str) else ref
    return EXAMPLES[r.name] if r.kind == "example" else None


# -- examples ----------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _example(name: str) -> tuple[FloatArray, IntArray]:
    import numpy as np

    if name != "digits":  # pragma: no cover - parse_ref admits only EXAMPLES
        raise EdilError(f"unknown example {name!r}", cause="bad_data_ref")
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise EdilError(
            "example:digits needs scikit-learn, which this Python does not have",
            hint="pip install 'r1os[apps]' (or scikit-learn)",
            cause="missing_dependency",
            status=501,
        ) from None
    bunch = load_digits()
    X = np.asarray(bunch.data, dtype=np.float64) / 16.0
    y = np.asarray(bunch.target, dtype=np.int64)
    X.setflags(write=False)
    y.setflags(write=False)
    return X, y


def held_out_mask(y: IntArray) -> npt.NDArray[np.bool_]:
    """The rows of the held-out test split: round(TEST_FRACTION * count) of each class, by a fixed seed."""
    import numpy as np

    rng = np.random.default_rng(TEST_SEED)
    mask = np.zeros(y.shape[0], dtype=bool)
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        mask[idx[: int(round(TEST_FRACTION * idx.size))]] = True
    return mask


def split_parts(
    y: IntArray, of: int, *, skew: Skew = "label", major: float = DEFAULT_MAJOR, seed: int = 0
) -> list[IntArray]:
    """Row indices (into `y`, sorted) of each of `of` disjoint parts covering all rows (rule: module doc)."""
    import numpy as np

    if not 1 <= of <= MAX_PARTS:
        raise EdilError(f"{of} parts: use 1..{MAX_PARTS}", cause="bad_data_ref")
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(of)]
    if skew == "iid":
        order = rng.permutation(y.shape[0])
        for i in range(of):
            parts[i] = order[i::of].tolist()
    else:
        classes = np.unique(y)
        homes = {int(c): j % of for j, c in enumerate(rng.permutation(classes))}
        for c in classes:
            idx = rng.permutation(np.flatnonzero(y == c))
            home = homes[int(c)]
            k = int(round(major * idx.size)) if of > 1 else idx.size
            parts[home].extend(idx[:k].tolist())
            for t, row in enumerate(idx[k:].tolist()):
                parts[(home + 1 + t % (of - 1)) % of].append(row)
    return [np.sort(np.asarray(p, dtype=np.int64)) for p in parts]


def _load_example(ref: DataRef) -> Dataset:
    import numpy as np

    X, y = _example(ref.name)
    held_out = held_out_mask(y)
    if ref.split == "test":
        rows = np.flatnonzero(held_out)
    else:
        rows = np.flatnonzero(~held_out)
        if ref.split == "part":
            rows = rows[split_parts(y[rows], ref.of, skew=ref.skew, major=ref.major, seed=ref.seed)[ref.part]]
    return Dataset(X[rows].copy(), y[rows].copy())


# -- a node's own files ------------------------------------------------------------------------------------


def _refuse(ref: DataRef, why: str, cause: str, status: int) -> EdilError:
    log.warning("edil data: refused %s: %s", ref, why)
    return EdilError(f"{ref}: {why}", cause=cause, status=status)


def load_npz(path: Path, *, ref: DataRef | None = None) -> Dataset:
    """Read and check an .npz with `X` (2-D numbers, finite) and `y` (1-D integers in 0..MAX_CLASSES-1)."""
    import numpy as np

    r = ref or DataRef("path", str(path))
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise _refuse(r, f"cannot read the file: {exc.strerror or exc}", "data_unreadable", 404) from None
    if size > MAX_NPZ_BYTES:
        raise _refuse(r, f"{size} bytes, at most {MAX_NPZ_BYTES}", "data_too_large", 413)
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = {"X", "y"} - set(npz.files)
            if missing:
                raise _refuse(r, f"no array {sorted(missing)[0]!r} (an .npz holds X and y)", "bad_data", 422)
            X, y = npz["X"], npz["y"]
    except EdilError:
        raise
    except (OSError, ValueError) as exc:
        raise _refuse(r, f"not a readable .npz of plain arrays: {exc}", "bad_data", 422) from None
    if X.ndim != 2 or X.dtype.kind not in "iuf":
        raise _refuse(r, f"X is {X.ndim}-D {X.dtype}: it must be 2-D integers or floats", "bad_data", 422)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise _refuse(r, f"y is {y.ndim}-D {y.dtype}: it must be 1-D integer labels", "bad_data", 422)
    n, d = X.shape
    if not 1 <= n <= MAX_ROWS or not 1 <= d <= MAX_FEATURES:
        raise _refuse(r, f"X is {n}x{d}: 1..{MAX_ROWS} rows of 1..{MAX_FEATURES} features", "bad_data", 422)
    if y.shape[0] != n:
        raise _refuse(r, f"X has {n} rows but y has {y.shape[0]} labels", "bad_data", 422)
    Xf = X.astype(np.float64)
    if not np.isfinite(Xf).all():
        raise _refuse(r, "X holds NaN or infinite values", "bad_data", 422)
    if int(y.min()) < 0 or int(y.max()) >= MAX_CLASSES:
        raise _refuse(
            r, f"labels run {int(y.min())}..{int(y.max())}: use 0..{MAX_CLASSES - 1}", "bad_data", 422
        )
    return Dataset(Xf, y.astype(np.int64))


def load(
    ref: str | DataRef,
    *,
    datasets: Mapping[str, Path] | None = None,
    data_folders: Sequence[Path] = (),
) -> Dataset:
    """Load a data set on this node. `datasets` are the named data sets the operator declared (for `data:`),
    `data_folders` the folders `path:` may read from; anything else is refused (cause `data_not_offered`)."""
    r = parse_ref(ref) if isinstance(ref, str) else ref
    if r.kind == "example":
        return _load_example(r)
    if r.kind == "data":
        offered = datasets or {}
        if r.name not in offered:
            raise _refuse(r, f"this node does not offer a data set {r.name!r}", "data_not_offered", 404)
        return load_npz(Path(offered[r.name]), ref=r)
    try:
        real = Path(r.name).resolve(strict=True)
    except (OSError, RuntimeError):
        real = None
    inside = real is not None and any(real.is_relative_to(Path(d).resolve()) for d in data_folders)
    if real is None or not inside:
        # The same answer whether the file exists or not: a job may not probe a node's disk.
        raise _refuse(r, "this node does not offer this path", "data_not_offered", 404)
    return load_npz(real, ref=r)
