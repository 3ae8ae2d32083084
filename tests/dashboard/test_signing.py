"""The page's signing forms against the node's checks, without a browser: Node.js runs the page's own
modules (crypto.js, account.js) and the requests they build are verified by the Python code every node
runs (Deeploy's owner requests, CSTORE's signed batches), signed here with a test key the way a wallet's
`personal_sign` signs. Also: the page's SHA-256, Keccak-256, EIP-55 and canonical JSON equal Python's."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest

from r1os.cstore._ops import decode_batch
from r1os.deeploy._requests import SignedAppRequest, parse_signed_request
from r1os.deeploy._spec import canonical_json, load_spec
from r1os.identity import NodeKey
from r1os.identity._keys import keccak256

STATIC = Path(__file__).resolve().parents[2] / "src" / "r1os" / "dashboard" / "static"
ECHO = Path(__file__).resolve().parents[2] / "examples" / "apps" / "echo" / "app.yaml"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(
    NODE is None, reason="Node.js runs the page's modules (./dev setup installs it)"
)

TRICKY = {"b": [1, 'é\n\u0001"\\</script>', None, True, 0.5, -7], "a": {"z": 1, "Z": 2, "": {}}, "日本": "語"}


def run_js(body: str, args: dict[str, Any]) -> Any:
    """Run `body` (an async function body of `args`, returning JSON-able data) with the page's modules."""
    script = (
        f'import * as c from "{STATIC / "crypto.js"}";\n'
        f'import * as acc from "{STATIC / "account.js"}";\n'
        f"const args = {json.dumps(args)};\n"
        f"const out = await (async () => {{ {body} }})();\n"
        "process.stdout.write(JSON.stringify(out));\n"
    )
    done = subprocess.run(
        [str(NODE), "--input-type=module", "-e", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_hashes_addresses_and_canonical_json_equal_pythons() -> None:
    texts = ["", "abc", "a" * 55, "a" * 56, "b" * 64, "é" * 300, "x" * 1000]
    out = run_js(
        "return {sha: args.texts.map(t => c.hex(c.sha256(c.utf8(t)))),"
        " kec: args.texts.map(t => c.hex(c.keccak256(c.utf8(t)))),"
        " sum: args.addrs.map(a => c.checksumAddress(a)),"
        " bad: c.checksumAddress('0x12'), canon: c.canonicalJSON(args.tricky)}",
        {
            "texts": texts,
            "addrs": [k.address.lower() for k in (NodeKey.generate() for _ in range(5))],
            "tricky": TRICKY,
        },  # fmt: skip
    )
    assert out["sha"] == [hashlib.sha256(t.encode()).hexdigest() for t in texts]
    assert out["kec"] == [keccak256(t.encode()).hex() for t in texts]
    from eth_utils import to_checksum_address

    assert all(a == to_checksum_address(a) for a in out["sum"]) and out["bad"] is None
    assert (
        out["canon"].encode() == canonical_json(TRICKY) == orjson.dumps(TRICKY, option=orjson.OPT_SORT_KEYS)
    )


def test_numbers_the_two_sides_would_print_differently_are_refused() -> None:
    out = run_js(
        "return args.values.map(v => { try { c.canonicalJSON(v); return 'ok'; }"
        " catch (e) { return String(e.message); } })",
        {"values": [0.00001, 1e300, 2**60, 0.25, 12]},
    )
    assert out[3:] == ["ok", "ok"]
    assert all("write it as a string" in m for m in out[:3]), out


def test_a_deeploy_request_built_by_the_page_passes_the_oracles_check() -> None:
    owner = NodeKey.generate()
    spec = json.loads(load_spec(ECHO).model_dump_json())
    for action, opts in (("deploy", {"spec": spec}), ("scale", {"replicas": 3}), ("delete", {})):
        out = run_js(
            "return acc.buildAppRequest('r1os-test', args.action, args.owner, 'echo', args.opts)",
            {"action": action, "owner": owner.address.lower(), "opts": opts},
        )
        # the wallet signs the readable text (personal_sign over its UTF-8 bytes)
        sig = "0x" + owner.sign_message(out["text"].encode()).hex()
        signed = parse_signed_request(json.dumps({"request": out["request"], "signature": sig}).encode())
        assert signed.verify("r1os-test").action == action
        assert out["text"].startswith(f"r1os deeploy request v1\nnetwork: r1os-test\n{action} ")
        # a request changed after signing is refused
        forged = {**out["request"], "replicas": 9 if action != "scale" else 1}
        bad = SignedAppRequest.model_validate({"request": forged, "signature": sig})
        with pytest.raises(Exception, match="not by the owner"):
            bad.verify("r1os-test")


def test_a_cstore_batch_built_by_the_page_passes_every_replicas_check() -> None:
    writer = NodeKey.generate()
    key = f"app:{writer.address.lower()}:greeting"
    ops = [["set", key, None, TRICKY, None], ["hset", key + ":h", "f", "v", None]]
    out = run_js(
        "const w = c.checksumAddress(args.writer);"
        " const b = acc.buildBatch(w, args.wall, 3, args.ops);"
        " return {batch: b, digest: c.hex(c.sha256(c.utf8(b)))}",
        {"writer": writer.address.lower(), "wall": 1_790_000_000_000, "ops": ops},
    )
    digest = bytes.fromhex(out["digest"])
    assert digest == hashlib.sha256(out["batch"].encode()).digest()
    # the wallet signs the 32 bytes (personal_sign of 0x<digest>)
    sig = writer.sign_message(digest).hex()
    raw = out["batch"][:-1].encode() + b',"sig":"0x' + sig.encode() + b'"}'
    batch = decode_batch(raw, now_ms=1_790_000_000_000)
    assert batch.writer == writer.address and batch.ops[0].value == TRICKY
    # another key's signature over it, or a batch changed after signing, is refused
    other = NodeKey.generate().sign_message(digest).hex()
    with pytest.raises(Exception, match="not signed by its writer"):
        decode_batch(raw.replace(sig.encode(), other.encode()), now_ms=1_790_000_000_000)
    with pytest.raises(Exception, match="signed by its writer|canonical"):
        decode_batch(raw.replace(b':greeting"', b':greetinG"', 1), now_ms=1_790_000_000_000)
