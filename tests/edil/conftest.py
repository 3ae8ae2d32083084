"""The 5-node EDIL network the network tests run on (tests/edil/network.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.edil.network import EdilNet


@pytest.fixture
async def net(tmp_path: Path) -> AsyncIterator[EdilNet]:
    async with EdilNet(tmp_path, 5) as n:
        yield n
