"""A whole local r1os network in one command."""

from r1os.devnet._manager import Devnet
from r1os.devnet._state import DevnetNode, DevnetState, load_state

__all__ = ["Devnet", "DevnetNode", "DevnetState", "load_state"]
