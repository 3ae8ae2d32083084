"""r1os: an open Python implementation of the Ratio1 AI meta-OS."""

from __future__ import annotations

from typing import Any

from r1os.errors import R1osError

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # The SDK pulls in HTTP clients; load it only when asked for.
    if name in ("Session", "AsyncSession"):
        from r1os import sdk

        return getattr(sdk, name)
    raise AttributeError(name)


__all__ = ["AsyncSession", "R1osError", "Session", "__version__"]
