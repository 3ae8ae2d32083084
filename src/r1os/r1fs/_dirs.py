"""The folder reader's HAMT helpers under the name the gateway imports (`_unixfs_dir` holds them)."""

from r1os.r1fs._unixfs_dir import hamt_entries, hamt_lookup

__all__ = ["hamt_entries", "hamt_lookup"]
