"""The `plugin` runtime: a replica is r1os's plugin worker (`_worker.py`) serving the app's Python
class, in the same sandbox and with the same limits as a `process` replica.

The worker runs on the node's own Python (`sys.executable`, so the packages installed beside r1os,
such as scikit-learn, are importable), with the app folder first on `sys.path`. The health path the
worker answers on comes from `R1OS_HEALTH_PATH` in the launch's env (default "/").
"""

from __future__ import annotations

import sys
from pathlib import Path

from r1os.deeploy.runtimes._base import ReplicaLaunch, RuntimeFailure
from r1os.deeploy.runtimes.process import ProcessRuntime

#: Run by path, not with `-m`: `-m` would import r1os's packages (pydantic among them) first.
WORKER = Path(__file__).with_name("_worker.py")


class PluginRuntime(ProcessRuntime):
    """Serves each replica's `plugin` class (`module.path:ClassName`) with the plugin worker."""

    name = "plugin"

    def command_for(self, launch: ReplicaLaunch) -> list[str]:
        if not launch.plugin:
            raise RuntimeFailure(f"replica {launch.replica_id}: runtime 'plugin' needs plugin: module:Class")
        # -P: the worker's own folder is not put on sys.path (the worker puts the app folder there).
        return [sys.executable, "-P", str(WORKER), launch.plugin]
