"""Epoch arithmetic shared by oracles, the CLI and the contracts: epoch = (t - genesis) // length."""

from __future__ import annotations

from dataclasses import dataclass

from r1os.errors import ConfigError

MAINNET_GENESIS = 1748016000
"""Ratio1's mainnet genesis, 2025-05-23 16:00 UTC (the default when no network config gives one)."""
DAY = 86400


@dataclass(frozen=True)
class EpochClock:
    genesis_time: float
    epoch_seconds: float

    def __post_init__(self) -> None:
        if self.epoch_seconds <= 0:
            raise ConfigError(f"epoch length must be positive, got {self.epoch_seconds}")

    def epoch_at(self, t: float) -> int:
        """The epoch containing unix time `t` (0 before genesis, as the Controller does)."""
        return max(0, int((t - self.genesis_time) // self.epoch_seconds))

    def start(self, epoch: int) -> float:
        return self.genesis_time + epoch * self.epoch_seconds

    def end(self, epoch: int) -> float:
        return self.start(epoch + 1)


def parse_range(text: str | None, *, default: tuple[int, int] | None = None) -> tuple[int, int]:
    """`A:B` (inclusive), `A:` / `:B` with the default's other end, or a single `N`."""
    if not text:
        if default is None:
            raise ValueError("an epoch range A:B is needed")
        return default
    a, sep, b = text.partition(":")
    try:
        if not sep:
            first = last = int(a)
        else:
            first = int(a) if a.strip() else (default[0] if default else 0)
            if b.strip():
                last = int(b)
            elif default is not None:
                last = default[1]
            else:
                raise ValueError("open-ended range without a last epoch")
    except ValueError as exc:
        raise ValueError(f"bad epoch range {text!r} (expected A:B): {exc}") from None
    if first < 0 or last < first:
        raise ValueError(f"bad epoch range {text!r}: need 0 <= A <= B")
    return first, last
