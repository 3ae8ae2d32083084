"""What the SDK takes for a spec (an app's, a job's): the spec itself, a spec file's path, or its text."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TypeVar, cast

from r1os.errors import SpecError

S = TypeVar("S")


def read_spec_like(
    spec: S | str | Path, kind: type[S], load: Callable[[str | Path], S], parse: Callable[[str], S]
) -> S:
    """`spec` if it is a `kind`; a spec file's path (a `Path`, or one line naming a file) `load`ed; else spec
    text `parse`d. One line ending in .yaml, .yml or .json that names no file is a `SpecError`."""
    if isinstance(spec, kind):
        return spec
    if isinstance(spec, Path):
        return load(spec)
    text = cast(str, spec)
    if "\n" not in text and text.strip():
        if Path(text).is_file():
            return load(text)
        if text.endswith((".yaml", ".yml", ".json")):
            raise SpecError(f"cannot read {text}: no such file")
    return parse(text)
