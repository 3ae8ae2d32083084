"""Assembling a node from the services installed beside it.

The node is below its services in the layering (they import it, never the other way), so it does not
import them: each service package announces a `ServicePlugin` as an entry point in the group
`r1os.services` (see pyproject.toml), and `build_services` loads the installed ones, asks each for its
service(s) under this node's configuration, and orders them by `order` (a service may use those started
before it: CSTORE first, then dAuth, R1FS, the oracle services). Another package can add a service to
every node by declaring an entry point in the same group.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib.metadata import entry_points

from r1os.errors import NodeError
from r1os.node._config import NodeConfig
from r1os.node._service import Service

log = logging.getLogger("r1os.node")

ENTRY_POINT_GROUP = "r1os.services"


@dataclass(frozen=True)
class ServicePlugin:
    """A service package's offer to nodes: `build(config)` gives the services to run (none, if the
    configuration does not call for them), started in ascending `order`."""

    name: str
    order: int
    build: Callable[[NodeConfig], Iterable[Service]]


def installed_plugins() -> list[ServicePlugin]:
    """The plugins installed in this Python environment, in start order."""
    plugins: list[ServicePlugin] = []
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            plugin = ep.load()
        except Exception as exc:
            raise NodeError(
                f"service plugin {ep.name!r} ({ep.value}) cannot be loaded: {exc}",
                hint="reinstall the package that provides it",
            ) from exc
        if not isinstance(plugin, ServicePlugin):
            raise NodeError(f"entry point {ep.name!r} ({ep.value}) is not a ServicePlugin")
        plugins.append(plugin)
    if not plugins:
        raise NodeError(
            f"no service plugins are installed (entry point group {ENTRY_POINT_GROUP!r})",
            hint="install r1os as a package (pip install -e . in a checkout) so its entry points exist",
        )
    return sorted(plugins, key=lambda p: (p.order, p.name))


def build_services(config: NodeConfig, plugins: Iterable[ServicePlugin] | None = None) -> list[Service]:
    """The services a node with `config` runs, in start order."""
    services: list[Service] = []
    for plugin in installed_plugins() if plugins is None else plugins:
        services.extend(plugin.build(config))
    names = [s.name for s in services]
    if len(set(names)) != len(names):
        raise NodeError(f"two services share a name: {names}")
    return services
