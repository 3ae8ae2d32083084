"""Uploads metered as they stream in: one shape for files, folders and CARs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from r1os.r1fs._limits import check_space

if TYPE_CHECKING:
    from r1os.r1fs._service import R1fsService

#: An upload looks at the disk's free space again after this many bytes (statvfs is cheap, not free).
DISK_CHECK_EVERY = 64 * 1024 * 1024


class UploadMeter:
    """One upload's bytes counted as they stream in: against its caller's quota (times the copies a pin
    asks for, refused as soon as past it) and against the store's free disk (looked at again every
    `DISK_CHECK_EVERY` bytes). Files, folders and CARs are metered alike. The bytes in flight are given
    back once (`release`) when the upload is stored or refused: a stored one is then charged by its pin.
    """

    def __init__(
        self, svc: R1fsService, address: str, *, pin: bool, replicas: int, expect_size: int | None
    ) -> None:
        self._book, self._address = svc.book, address
        self._factor = replicas if pin else 1
        self._root, self._settings = svc.store.root, svc.settings
        self.total = 0  # bytes seen
        self._in_flight = 0  # bytes counted in the quota's book and not yet released
        self._unchecked = 0
        self._book.check(address, more_bytes=(expect_size or 0) * self._factor, new_pin=pin, unpinned=not pin)
        if expect_size is not None:
            check_space(self._root, expect_size, self._settings)

    def count(self, n: int) -> None:
        self.total += n
        self._in_flight += n
        self._book.stream(self._address, n, factor=self._factor)
        self._unchecked += n
        if self._unchecked >= DISK_CHECK_EVERY:
            check_space(self._root, 0, self._settings)
            self._unchecked = 0

    async def stream(self, source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        async for piece in source:
            self.count(len(piece))
            yield piece

    def release(self) -> None:
        if self._in_flight:
            self._book.stream_done(self._address, self._in_flight * self._factor)
            self._in_flight = 0
