"""App runtimes: one base class (`AppRuntime`), one module per way of running a replica.

Light to import: the runtimes themselves (and what they pull in) load on first use.
"""

from typing import TYPE_CHECKING, Any

from r1os.deeploy.runtimes._base import AppRuntime, ReplicaLaunch, ReplicaState, ReplicaStatus, RuntimeFailure

if TYPE_CHECKING:
    from r1os.deeploy.runtimes._worker import PluginRequest
    from r1os.deeploy.runtimes.memory import MemoryRuntime
    from r1os.deeploy.runtimes.plugin import PluginRuntime
    from r1os.deeploy.runtimes.process import ProcessRuntime

_LAZY = {
    "MemoryRuntime": "r1os.deeploy.runtimes.memory",
    "PluginRequest": "r1os.deeploy.runtimes._worker",
    "PluginRuntime": "r1os.deeploy.runtimes.plugin",
    "ProcessRuntime": "r1os.deeploy.runtimes.process",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "AppRuntime",
    "MemoryRuntime",
    "PluginRequest",
    "PluginRuntime",
    "ProcessRuntime",
    "ReplicaLaunch",
    "ReplicaState",
    "ReplicaStatus",
    "RuntimeFailure",
]
