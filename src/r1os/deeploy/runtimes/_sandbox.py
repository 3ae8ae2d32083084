"""The sandbox a `process` or `plugin` replica runs in: bubblewrap for what it sees, cgroups (or
rlimits) for what it may use.

What a replica sees (an allow-list: nothing of the host is visible unless named here):

- read-only: the system directories programs need (`/usr`, `/bin`, `/sbin`, `/lib*`, `/etc`, with
  `/etc/shadow` and `/etc/gshadow` masked), and the Python the node runs on: `sys.base_prefix`,
  `sys.prefix` (the venv) and the folders the venv's `.pth` files name (editable installs, such as
  r1os's `src`), each bound exactly, never a parent of them;
- a fresh `/dev` (null, zero, random, tty, ...), a `/proc` of its own PID namespace, an empty tmpfs at
  `/tmp` and `/dev/shm` (each at most the replica's memory limit); the rest of its root is read-only;
- read-write: its own app folder (at its real path; it is the cwd).

So the node's home (keystore, api-token, data) and the other apps' folders are not there at all. When
one of them lies inside a bound directory (say a node home inside the venv), it is covered by an
empty tmpfs; the app folder's parent is covered the same way, so a replica never lists its siblings.

The replica runs as uid/gid 1000 in a user namespace of its own (mapped to the node's user, so its
files on the host belong to the node), with no capabilities, `no_new_privs`, no way to make further
user namespaces, and its own PID, IPC and UTS namespaces; it dies with the node (`--die-with-parent`)
and has no controlling terminal (`--new-session`). The network namespace is shared: a replica serves
on 127.0.0.1:<port>, where the node health-checks it and proxies to it. So it can also reach other
ports of the host (the node's API, where it authenticates with its own app key, other replicas):
this sandbox isolates files, processes and resources, not the network.

Limits (`Limiter`), chosen once per node in this order:

- cgroup v2 (a unified hierarchy with the `memory` and `cpu` controllers that this process may
  delegate): one group per replica with `memory.max` (swap off) and `cpu.max`;
- cgroup v1 (writable `memory` and `cpu` hierarchies, as in containers run as root): one group per
  replica in each, with `memory.limit_in_bytes` (and `memsw` when present) and
  `cpu.cfs_quota_us`/`cpu.cfs_period_us`. The kernel OOM-kills a replica that goes past its memory;
- otherwise rlimits: `RLIMIT_DATA` at the memory limit (heap and private mappings, so an allocation
  past it fails with ENOMEM / MemoryError), and for CPU only `nice 10`: no hard CPU cap without
  cgroups.

The replica is put in its groups by a one-line `sh` that writes its own pid to `cgroup.procs` and then
execs bubblewrap, so everything the replica starts is counted from its first instruction; the node
kills the whole group (every pid in it) when it stops a replica.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

BWRAP = "/usr/bin/bwrap"
#: The user and group a replica runs as, inside its user namespace.
SANDBOX_UID = 1000
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc")
MASKED_FILES = ("/etc/shadow", "/etc/gshadow", "/etc/shadow-", "/etc/gshadow-")
CPU_PERIOD_US = 100_000

LimitMode = Literal["cgroup2", "cgroup1", "rlimit"]

_NAMESPACE_FLAGS = (
    "--unshare-user",
    "--uid",
    str(SANDBOX_UID),
    "--gid",
    str(SANDBOX_UID),
    "--disable-userns",
    "--unshare-pid",
    "--unshare-ipc",
    "--unshare-uts",
    "--hostname",
    "replica",
    "--cap-drop",
    "ALL",
    "--die-with-parent",
    "--new-session",
)


def _inside(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


@functools.cache
def python_dirs() -> tuple[Path, ...]:
    """The directories the node's Python needs, bound exactly: its installation, the venv, and the
    folders `.pth` files of the venv add to `sys.path` (editable installs such as r1os's `src`)."""
    dirs: list[Path] = []

    def add(p: str | Path) -> None:
        for cand in (Path(p), Path(os.path.realpath(p))):
            if cand.is_dir() and cand != Path("/") and cand not in dirs:
                dirs.append(cand)

    add(sys.base_prefix)
    add(sys.prefix)
    add(sys.exec_prefix)
    import site

    for sp in site.getsitepackages():
        spath = Path(sp)
        if not spath.is_dir():
            continue
        for pth in sorted(spath.glob("*.pth")):
            try:
                lines = pth.read_text().splitlines()
            except OSError:
                continue
            for line in lines:
                line = line.strip()
                if line.startswith("/") and not line.startswith("import"):
                    add(line)
    # r1os itself (the plugin worker lives in it), wherever it is installed.
    import r1os

    pkg_parent = Path(r1os.__file__).resolve().parent.parent
    if not any(_inside(pkg_parent, d) for d in dirs):
        add(pkg_parent)
    return tuple(dirs)


def _system_args() -> list[str]:
    args: list[str] = []
    for d in SYSTEM_DIRS:
        p = Path(d)
        if p.is_symlink():
            args += ["--symlink", os.readlink(p), d]
        elif p.is_dir():
            args += ["--ro-bind", d, d]
    for f in MASKED_FILES:
        if Path(f).exists():
            args += ["--ro-bind", "/dev/null", f]
    return args


def bwrap_command(
    folder: Path,
    command: Sequence[str],
    *,
    hidden: Iterable[Path] = (),
    extra_ro: Iterable[Path] = (),
    tmp_mb: int = 256,
) -> list[str]:
    """The full `bwrap ... -- command` line for a replica whose app folder is `folder`.

    `hidden`: paths that must not be visible even if they lie inside a bound directory (the node's
    home, the apps root); `extra_ro`: more directories to bind read-only (exact paths); `tmp_mb`: the
    size of each of `/tmp` and `/dev/shm` (memory, counted in the replica's memory cgroup)."""
    folder = Path(os.path.realpath(folder))
    args = [BWRAP, *_NAMESPACE_FLAGS]
    args += _system_args()
    # Fresh /dev, /proc and /tmp first: a bound directory may lie under /tmp.
    size = str(max(1, tmp_mb) << 20)
    args += ["--dev", "/dev", "--proc", "/proc"]
    args += ["--size", size, "--tmpfs", "/tmp", "--size", size, "--tmpfs", "/dev/shm"]
    bound: list[Path] = []
    for d in [*python_dirs(), *(Path(os.path.realpath(p)) for p in extra_ro)]:
        if d in bound or _inside(d, folder):
            continue
        bound.append(d)
        args += ["--ro-bind", str(d), str(d)]
    # Cover what must stay unseen where a bound directory holds it; the app folder comes after, so
    # it is mounted back on top of its covered parent.
    cover = [Path(os.path.realpath(h)) for h in hidden] + [folder.parent]
    for h in cover:
        if h != Path("/") and any(_inside(h, b) and h != b for b in bound) and h.is_dir():
            args += ["--tmpfs", str(h)]
        elif any(h == b for b in bound):
            raise ValueError(f"{h} must stay hidden but is a directory the sandbox needs")
    args += ["--bind", str(folder), str(folder), "--chdir", str(folder)]
    # The sandbox's own root (a tmpfs holding the mount points) is read-only once they are made.
    args += ["--remount-ro", "/", "--", *command]
    return args


def sandbox_env(env: Mapping[str, str]) -> dict[str, str]:
    """The environment a replica starts with: a minimal base (PATH with the node's Python first,
    HOME=/tmp, ...), then `env` (the agent's complete set for the replica) over it."""
    base = {
        "PATH": f"{Path(sys.prefix) / 'bin'}:/usr/local/bin:/usr/bin:/bin",
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "USER": "app",
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    base.update(env)
    return base


@functools.cache
def unavailable() -> str | None:
    """None if bubblewrap can build the sandbox here (namespaces included), else why not."""
    if not Path(BWRAP).exists():
        return f"{BWRAP} is not installed (Debian package 'bubblewrap')"
    if not Path("/bin/true").exists():
        return "/bin/true is missing: cannot probe the sandbox"
    import tempfile

    with tempfile.TemporaryDirectory(prefix="r1os-probe-") as tmp:
        probe = Path(tmp) / "app"
        probe.mkdir()
        try:
            argv = bwrap_command(probe, ["/bin/true"])
            res = subprocess.run(argv, capture_output=True, timeout=20, check=False)
        except (OSError, ValueError, subprocess.TimeoutExpired) as exc:
            return f"bubblewrap does not run: {exc}"
    if res.returncode != 0:
        err = res.stderr.decode(errors="replace").strip().splitlines()
        return "bubblewrap cannot make the sandbox: " + (err[-1] if err else f"exit {res.returncode}")
    return None


# -- limits ------------------------------------------------------------------------------------


@dataclass
class Confinement:
    """The limits of one replica: `prefix` goes before the bwrap command line."""

    mode: LimitMode
    prefix: list[str]
    groups: list[Path] = field(default_factory=list)
    memory_group: Path | None = None

    def pids(self) -> list[int]:
        """Every process in the replica's groups (empty without cgroups)."""
        out: set[int] = set()
        for g in self.groups:
            try:
                text = (g / "cgroup.procs").read_text()
            except OSError:
                continue
            out.update(int(x) for x in text.split() if x.isdigit())
        return sorted(out)

    def oom_killed(self) -> bool:
        """Whether the kernel killed a process of the replica for going past its memory."""
        g = self.memory_group
        if g is None:
            return False
        for name, key in (("memory.events", "oom_kill"), ("memory.oom_control", "oom_kill")):
            try:
                for line in (g / name).read_text().splitlines():
                    k, _, v = line.partition(" ")
                    if k == key and v.strip().isdigit() and int(v) > 0:
                        return True
            except OSError:
                continue
        return False

    def release(self) -> None:
        """Remove the replica's groups (once its processes are gone); no error if they linger."""
        _rmdir(*self.groups)


def _join_script(files: list[Path]) -> list[str]:
    # `sh -c SCRIPT r1os-cg N file... cmd...`: join each group, then exec the command.
    script = (
        'n=$1; shift; while [ "$n" -gt 0 ]; do echo $$ > "$1" || exit 125; shift; n=$((n-1)); done; exec "$@"'
    )
    return ["/bin/sh", "-c", script, "r1os-cg", str(len(files)), *map(str, files)]


def _own_cgroups() -> dict[str, str]:
    """controller (or '' for v2) -> this process's cgroup path."""
    out: dict[str, str] = {}
    try:
        text = Path("/proc/self/cgroup").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        for ctrl in parts[1].split(",") if parts[1] else [""]:
            out[ctrl] = parts[2]
    return out


def _cgroup_mounts() -> dict[str, Path]:
    """controller -> v1 mount point, and '' -> the v2 mount point."""
    out: dict[str, Path] = {}
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        pre, _, post = line.partition(" - ")
        fields = post.split()
        if len(fields) < 3:
            continue
        fstype, opts = fields[0], fields[2].split(",")
        mnt = Path(pre.split()[4])
        if fstype == "cgroup2":
            out.setdefault("", mnt)
        elif fstype == "cgroup":
            for o in opts:
                if o in ("memory", "cpu"):
                    out.setdefault(o, mnt)
    return out


class Limiter:
    """Makes the CPU and memory limits of replicas; one per runtime (see the module's doc)."""

    def __init__(self, mode: Literal["auto", "cgroup", "rlimit"] = "auto") -> None:
        self._tag = f"r1os-{os.getpid()}"
        self._v2_parent: Path | None = None
        self._v1_parents: dict[str, Path] = {}
        chosen: LimitMode = "rlimit"
        if mode in ("auto", "cgroup"):
            if self._probe_v2():
                chosen = "cgroup2"
            elif self._probe_v1():
                chosen = "cgroup1"
            elif mode == "cgroup":
                raise RuntimeError("no writable cgroup hierarchy with the memory and cpu controllers")
        self.mode: LimitMode = chosen

    def describe(self) -> str:
        return {
            "cgroup2": "cgroup v2: memory.max (no swap), cpu.max",
            "cgroup1": "cgroup v1: memory.limit_in_bytes (OOM kill), cpu.cfs_quota_us",
            "rlimit": "RLIMIT_DATA for memory (allocations fail past it); nice 10 for CPU (no hard cap)",
        }[self.mode]

    # cgroup v2: a group of ours under this process's group, controllers delegated to it.
    def _probe_v2(self) -> bool:
        mnt = _cgroup_mounts().get("")
        own = _own_cgroups().get("")
        if mnt is None or own is None:
            return False
        here = mnt / own.lstrip("/")
        parent = here / self._tag
        try:
            ctrls = (here / "cgroup.controllers").read_text().split()
            if not {"memory", "cpu"} <= set(ctrls):
                return False
            sub = (here / "cgroup.subtree_control").read_text().split()
            if not {"memory", "cpu"} <= set(sub):
                # Fails (EBUSY) when this process's own group holds processes and is not the root:
                # then the node has no delegated subtree, and we fall back.
                (here / "cgroup.subtree_control").write_text("+memory +cpu")
            _sweep(here)
            parent.mkdir(exist_ok=True)
            (parent / "cgroup.subtree_control").write_text("+memory +cpu")
            probe = parent / "probe"
            probe.mkdir(exist_ok=True)
            (probe / "memory.max").write_text(str(64 << 20))
            (probe / "cpu.max").write_text(f"50000 {CPU_PERIOD_US}")
            probe.rmdir()
        except OSError:
            _rmdir(parent / "probe", parent)
            return False
        self._v2_parent = parent
        return True

    def _probe_v1(self) -> bool:
        mounts = _cgroup_mounts()
        own = _own_cgroups()
        parents: dict[str, Path] = {}
        try:
            for ctrl, knob, value in (
                ("memory", "memory.limit_in_bytes", str(64 << 20)),
                ("cpu", "cpu.cfs_quota_us", "50000"),
            ):
                mnt = mounts.get(ctrl)
                if mnt is None or ctrl not in own:
                    return False
                parent = mnt / own[ctrl].lstrip("/") / self._tag
                parents[ctrl] = parent
                _sweep(parent.parent)
                parent.mkdir(exist_ok=True)
                probe = parent / "probe"
                probe.mkdir(exist_ok=True)
                (probe / knob).write_text(value)
                probe.rmdir()
        except OSError:
            for p in parents.values():
                _rmdir(p / "probe", p)
            return False
        self._v1_parents = parents
        return True

    def prepare(self, name: str, cpu: float, memory_mb: int) -> Confinement:
        """The limits for replica `name` (safe as a file name): groups made, `prefix` to run under."""
        mem = int(memory_mb) << 20
        quota = max(1000, int(cpu * CPU_PERIOD_US))
        if self.mode == "cgroup2" and self._v2_parent is not None:
            g = self._v2_parent / name
            g.mkdir(exist_ok=True)
            (g / "memory.max").write_text(str(mem))
            try:
                (g / "memory.swap.max").write_text("0")
            except OSError:
                pass
            (g / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")
            return Confinement("cgroup2", _join_script([g / "cgroup.procs"]), [g], g)
        if self.mode == "cgroup1":
            mg = self._v1_parents["memory"] / name
            cg = self._v1_parents["cpu"] / name
            mg.mkdir(exist_ok=True)
            cg.mkdir(exist_ok=True)
            _set_v1_memory(mg, mem)
            (cg / "cpu.cfs_period_us").write_text(str(CPU_PERIOD_US))
            (cg / "cpu.cfs_quota_us").write_text(str(quota))
            files = [mg / "cgroup.procs", cg / "cgroup.procs"]
            return Confinement("cgroup1", _join_script(files), [mg, cg], mg)
        prefix: list[str] = []
        prlimit = shutil.which("prlimit")
        if prlimit:
            prefix += [prlimit, f"--data={mem}", "--"]
        nice = shutil.which("nice")
        if nice:
            prefix += [nice, "-n", "10"]
        return Confinement("rlimit", prefix)

    def update(self, c: Confinement, cpu: float, memory_mb: int, pids: Iterable[int] = ()) -> None:
        """Set new limits on a running replica (a warm worker taken by an app): its groups' knobs, or
        with rlimits `RLIMIT_DATA` of `pids`. Raises OSError when they cannot be set, among others when
        the replica already uses more memory than the new limit."""
        mem = int(memory_mb) << 20
        quota = max(1000, int(cpu * CPU_PERIOD_US))
        if c.mode == "cgroup2":
            g = c.groups[0]
            used = int((g / "memory.current").read_text())
            if used > mem:
                raise OSError(f"it uses {used >> 20} MiB, over {memory_mb} MiB")
            (g / "memory.max").write_text(str(mem))
            (g / "cpu.max").write_text(f"{quota} {CPU_PERIOD_US}")
        elif c.mode == "cgroup1":
            mg, cg = c.groups
            _set_v1_memory(mg, mem, strict=True)
            (cg / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            import resource

            for pid in pids:
                resource.prlimit(pid, resource.RLIMIT_DATA, (mem, mem))

    def close(self) -> None:
        """Remove this limiter's parent groups if no replica group is left in them."""
        _rmdir(*(p for p in [self._v2_parent, *self._v1_parents.values()] if p is not None))


def _set_v1_memory(group: Path, mem: int, strict: bool = False) -> None:
    """Set a v1 memory group's limit (and with swap accounting, memory + swap) to `mem` bytes, from
    whatever they were (a group may be reused). `strict`: a failure to set memsw is raised too."""
    mem_file, memsw_file = group / "memory.limit_in_bytes", group / "memory.memsw.limit_in_bytes"
    # memsw may never be below the memory limit: lower the memory limit first, or raise memsw first.
    # The kernel refuses (EBUSY) a memory limit below what the group cannot give back.
    knobs = [mem_file, memsw_file]
    if mem > int(mem_file.read_text()):
        knobs.reverse()
    for knob in knobs:
        try:
            knob.write_text(str(mem))
        except OSError:
            if knob is mem_file or (strict and knob.exists()):
                raise


def _sweep(base: Path) -> None:
    """Remove the empty groups left by nodes that died (`r1os-<pid>` of a pid that is gone)."""
    try:
        entries = list(base.glob("r1os-*"))
    except OSError:
        return
    for d in entries:
        pid = d.name.removeprefix("r1os-")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _rmdir(*(c for c in d.iterdir() if c.is_dir()), d)


def _rmdir(*dirs: Path) -> None:
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            pass


@functools.cache
def node_limiter() -> Limiter:
    """The one `Limiter` of this process, shared by its runtimes."""
    return Limiter("auto")
