"""The SDK is a light client: importing it starts no server code."""

from __future__ import annotations

import subprocess
import sys


def test_import_loads_no_server() -> None:
    # A fresh interpreter: this test process has long loaded the node for other tests.
    code = (
        "import r1os.sdk, sys; "
        "loaded = [m for m in ('uvicorn', 'fastapi', 'r1os.node') if m in sys.modules]; "
        "assert not loaded, loaded"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
