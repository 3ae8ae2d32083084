"""Running a node as a process: the event loop, logging, and the node's own entry point."""

from __future__ import annotations

import asyncio
import logging
import os
import sys

from pydantic import ValidationError

from r1os.errors import ConfigError, R1osError, first_invalid
from r1os.node._assembly import build_services
from r1os.node._config import NodeConfig
from r1os.node._daemon import Node
from r1os.node._memory import skip_unused_modules


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def config_from(**overrides: object) -> NodeConfig:
    """A `NodeConfig` from `R1OS_*` variables with `overrides` on top (None values are left out);
    a bad value is a `ConfigError` naming the setting."""
    try:
        return NodeConfig(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    except ValidationError as exc:
        where, msg = first_invalid(exc)
        raise ConfigError(f"{where}: {msg}", hint="see docs/node.md#settings") from None


def run_node(node: Node) -> None:
    """Run the node until SIGINT/SIGTERM on uvloop where it is installed (its sockets and callbacks cost a
    fraction of the pure-Python loop's: HTTP requests, MQTT traffic and block transfers all go through
    them); `R1OS_EVENT_LOOP=asyncio` picks the standard loop."""
    skip_unused_modules()
    if os.environ.get("R1OS_EVENT_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(node.run())
            return
    asyncio.run(node.run())


def main() -> int:
    """`python -m r1os.node`: one node configured from `R1OS_*` environment variables only (the devnet
    starts its nodes this way; people use `r1os node start`, which takes flags)."""
    if len(sys.argv) > 1 and sys.argv[1] in ("-h", "--help"):
        print(main.__doc__)
        return 0
    setup_logging(os.environ.get("R1OS_LOG_LEVEL", "INFO"))
    try:
        config = config_from()
        run_node(Node(config, services=build_services(config)))
    except R1osError as exc:
        print(f"error: {exc}" + (f"\nhint: {exc.hint}" if exc.hint else ""), file=sys.stderr)
        return 1
    return 0
