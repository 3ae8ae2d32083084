"""The page's files, read as text: nothing parses markup made of data, nothing runs inline, nothing is
fetched from anywhere but the node (no CDN), and every module the page imports is shipped."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

STATIC = Path(__file__).resolve().parents[2] / "src" / "r1os" / "dashboard" / "static"
SCRIPTS = sorted(STATIC.glob("*.js"))


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.name)
def test_no_script_turns_text_into_markup_or_code(path: Path) -> None:
    # comments may name them (dom.js says why none is used); code may not
    code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("//"))
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "setTimeout(\"", "srcdoc", "DOMParser", "createContextualFragment"):  # fmt: skip
        assert sink not in code, f"{path.name} uses {sink}"


def test_the_page_loads_only_its_own_files() -> None:
    page = (STATIC / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)", page) == [], "inline script"
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", page), "inline event handler"
    for path in STATIC.iterdir():
        text = path.read_text()
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, f"{path.name} reaches outside the node: {urls}"


def test_every_import_is_shipped() -> None:
    for path in SCRIPTS:
        for name in re.findall(r'from "\./([^"]+)"', path.read_text()):
            assert (STATIC / name).is_file(), f"{path.name} imports {name}, which is not shipped"
    for ref in re.findall(r'/dashboard/static/([^"]+)"', (STATIC / "index.html").read_text()):
        assert (STATIC / ref).is_file(), ref
