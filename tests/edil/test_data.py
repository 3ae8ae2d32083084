"""Data references: parsing, the label-skew split, the fixed test split, and what a node refuses to read."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from r1os.edil import EdilError, load, parse_ref
from r1os.edil._data import MAX_CLASSES, held_out_mask, known_shape, split_parts

pytest.importorskip("sklearn", reason="the digits example needs scikit-learn")


def test_parse_and_canonical_form() -> None:
    ref = parse_ref("example:digits?part=1&of=3&skew=label&seed=7")
    assert (ref.kind, ref.name, ref.split, ref.part, ref.of, ref.skew, ref.major, ref.seed) == (
        "example", "digits", "part", 1, 3, "label", 0.8, 7,
    )  # fmt: skip
    assert str(ref) == "example:digits?part=1&of=3&skew=label&major=0.8&seed=7"
    assert parse_ref(str(ref)) == ref
    assert parse_ref("example:digits?split=test").is_test
    assert str(parse_ref("data:clinic-2024")) == "data:clinic-2024"
    assert parse_ref("path:/srv/data/x.npz").name == "/srv/data/x.npz"
    assert known_shape("example:digits?split=test") == (64, 10) and known_shape("data:x") is None


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("digits", "write example:"),
        ("http://x", "unknown kind"),
        ("example:mnist?split=test", "unknown example"),
        ("example:digits", "part=I&of=N"),
        ("example:digits?split=dev", "split=test or split=train"),
        ("example:digits?split=test&seed=1", "no other parameter"),
        ("example:digits?part=0&of=0", "outside 1..64"),
        ("example:digits?part=2&of=2", "numbered 0..1"),
        ("example:digits?part=x&of=2", "not a whole number"),
        ("example:digits?part=0&of=2&skew=dirichlet", "label or iid"),
        ("example:digits?part=0&of=2&major=1.5", "outside 0..1"),
        ("example:digits?part=0&of=2&major=abc", "not a number"),
        ("example:digits?part=0&of=2&part=1", "twice"),
        ("example:digits?part=0&of=2&colour=red", "unknown parameter"),
        ("example:digits?part", "key=value"),
        ("data:../etc", "data set name"),
        ("path:relative.npz", "absolute"),
        ("path:/a/../etc/x.npz", "absolute"),
        ("path:/etc/passwd", ".npz"),
    ],
)
def test_bad_references(text: str, words: str) -> None:
    with pytest.raises(EdilError, match=words.replace("+", "\\+").replace("?", "\\?")) as exc:
        parse_ref(text)
    assert exc.value.cause == "bad_data_ref"


def test_test_split_is_fixed_stratified_and_never_in_a_part() -> None:
    test = load("example:digits?split=test")
    train = load("example:digits?split=train")
    assert test.n + train.n == 1797 and test.n == 359 and test.X.shape[1] == 64
    assert (
        0.0 <= test.X.min()
        and test.X.max() <= 1.0
        and test.X.dtype == np.float64
        and test.y.dtype == np.int64
    )
    counts = np.bincount(test.y, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 20% of each class (~180 each)
    pool = np.hstack([train.X, train.y[:, None]])
    pool = pool[np.lexsort(pool.T)]
    for seed in (0, 1, 2):
        for of in (1, 3, 5):
            parts = [load(f"example:digits?part={i}&of={of}&seed={seed}") for i in range(of)]
            rows = np.vstack([np.hstack([p.X, p.y[:, None]]) for p in parts])
            # Together the parts are exactly the training pool (as a multiset of rows), so none holds a
            # test example: the pool and the test split are complementary rows of the data set.
            assert np.array_equal(rows[np.lexsort(rows.T)], pool)


def test_parts_are_disjoint_cover_the_pool_and_follow_the_rule() -> None:
    y = np.repeat(np.arange(10), 100)
    parts = split_parts(y, 3, skew="label", major=0.8, seed=0)
    allrows = np.concatenate(parts)
    assert np.array_equal(np.sort(allrows), np.arange(1000))  # disjoint and complete
    homes = [np.flatnonzero(np.bincount(y[p], minlength=10) == 80) for p in parts]
    assert sorted(len(h) for h in homes) == [3, 3, 4]  # each class's home gets exactly 80 of 100
    assert sorted(np.concatenate(homes).tolist()) == list(range(10))
    for i, p in enumerate(parts):
        counts = np.bincount(y[p], minlength=10)
        others = np.setdiff1d(np.arange(10), homes[i])
        assert set(counts[others].tolist()) == {10}  # the other 20 dealt evenly to the 2 other parts
    assert all(np.array_equal(a, b) for a, b in zip(parts, split_parts(y, 3, seed=0), strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, split_parts(y, 3, seed=1), strict=True))
    iid = split_parts(y, 4, skew="iid", seed=0)
    assert [p.size for p in iid] == [250] * 4 and np.array_equal(
        np.sort(np.concatenate(iid)), np.arange(1000)
    )
    (one,) = split_parts(y, 1, seed=3)
    assert np.array_equal(one, np.arange(1000))


def test_digits_parts_are_label_skewed() -> None:
    for i in range(3):
        part = load(f"example:digits?part={i}&of=3")
        share = np.bincount(part.y, minlength=10) / part.n
        top = np.sort(share)[::-1]
        assert top[:3].sum() > 0.6  # most of a part is 3-4 labels
        assert (share > 0).all()  # but every label appears
    a, b = load("example:digits?part=0&of=3"), load("example:digits?part=0&of=3")
    assert np.array_equal(a.X, b.X) and np.array_equal(a.y, b.y)
    a.X[0, 0] = 99.0  # a caller's copy: the cached data set is not changed
    assert load("example:digits?part=0&of=3").X[0, 0] != 99.0


def test_held_out_mask_uses_a_fixed_seed() -> None:
    y = np.repeat(np.arange(3), 10)
    assert np.array_equal(held_out_mask(y), held_out_mask(y)) and held_out_mask(y).sum() == 6


def save(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_declared_data_sets_and_folders(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    X = np.arange(12, dtype=np.int32).reshape(4, 3)
    y = np.array([0, 1, 2, 1], dtype=np.int64)
    good = save(tmp_path / "clinic.npz", X=X, y=y)
    data = load("data:clinic", datasets={"clinic": good})
    assert data.X.dtype == np.float64 and np.array_equal(data.X, X) and data.y.tolist() == [0, 1, 2, 1]
    assert load(f"path:{good}", data_folders=[tmp_path]).n == 4

    caplog.set_level(logging.WARNING, "r1os.edil")
    with pytest.raises(EdilError, match="does not offer a data set 'other'") as exc:
        load("data:other", datasets={"clinic": good})
    assert exc.value.cause == "data_not_offered" and exc.value.status == 404
    assert "refused data:other" in caplog.text
    other = tmp_path / "elsewhere"
    other.mkdir()
    for path, folders in ((good, [other]), (good, []), (tmp_path / "missing.npz", [tmp_path])):
        with pytest.raises(EdilError, match="does not offer this path") as exc:
            load(f"path:{path}", data_folders=folders)
        assert exc.value.cause == "data_not_offered"
    # A link inside an allowed folder to a file outside it is judged by where it leads.
    (other / "link.npz").symlink_to(good)
    with pytest.raises(EdilError, match="does not offer this path"):
        load(f"path:{other}/link.npz", data_folders=[other])


@pytest.mark.parametrize(
    ("arrays", "words"),
    [
        ({"X": np.zeros((3, 2))}, "no array 'y'"),
        ({"X": np.zeros(3), "y": np.zeros(3, dtype=int)}, "2-D"),
        ({"X": np.array([["a", "b"]]), "y": np.zeros(1, dtype=int)}, "2-D integers or floats"),
        ({"X": np.zeros((3, 2)), "y": np.zeros(3)}, "integer labels"),
        ({"X": np.zeros((3, 2)), "y": np.zeros(2, dtype=int)}, "3 rows but y has 2"),
        ({"X": np.full((2, 2), np.nan), "y": np.zeros(2, dtype=int)}, "NaN"),
        ({"X": np.zeros((2, 2)), "y": np.array([0, -1])}, "labels run"),
        ({"X": np.zeros((2, 2)), "y": np.array([0, MAX_CLASSES])}, "labels run"),
        ({"X": np.zeros((0, 2)), "y": np.zeros(0, dtype=int)}, "rows"),
        (
            {"X": np.array([{"a": 1}], dtype=object).reshape(1, 1), "y": np.zeros(1, dtype=int)},
            "pickle|plain",
        ),
    ],
)
def test_bad_files_are_refused(tmp_path: Path, arrays: dict[str, np.ndarray], words: str) -> None:
    path = save(tmp_path / "bad.npz", **arrays)
    with pytest.raises(EdilError, match=words) as exc:
        load("data:bad", datasets={"bad": path})
    assert exc.value.cause == "bad_data"


def test_not_an_npz_and_too_large(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(EdilError, match="not a readable .npz"):
        load("data:junk", datasets={"junk": junk})
    monkeypatch.setattr("r1os.edil._data.MAX_NPZ_BYTES", 4)
    with pytest.raises(EdilError, match="at most 4") as exc:
        load("data:junk", datasets={"junk": junk})
    assert exc.value.cause == "data_too_large"
