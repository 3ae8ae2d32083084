"""r1os: an open Python implementation of the Ratio1 AI meta-OS."""

from r1os.errors import R1osError

__version__ = "0.1.0"

__all__ = ["R1osError", "__version__"]
