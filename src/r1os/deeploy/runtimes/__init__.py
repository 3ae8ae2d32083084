"""App runtimes: one base class (`AppRuntime`), one module per way of running a replica."""

from r1os.deeploy.runtimes._base import AppRuntime, ReplicaLaunch, ReplicaState, ReplicaStatus, RuntimeFailure

__all__ = ["AppRuntime", "ReplicaLaunch", "ReplicaState", "ReplicaStatus", "RuntimeFailure"]
