"""The r1os SDK: talk to a node (and through it, the network) from any Python program."""

from r1os.sdk._cstore import AsyncCStore, CStore
from r1os.sdk._session import API_URL_ENV, DEFAULT_URL, AsyncSession, Session

__all__ = ["API_URL_ENV", "DEFAULT_URL", "AsyncCStore", "AsyncSession", "CStore", "Session"]
