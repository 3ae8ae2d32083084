"""The worker that serves a `plugin` app: `python _worker.py module.path:ClassName`, run by
`PluginRuntime` inside the replica's sandbox with the app folder as cwd.

It listens on 127.0.0.1:$PORT at once, then imports the class and calls `setup()`. Until setup()
returns, GET on the health path ($R1OS_HEALTH_PATH, default "/") answers 503 `{"ready": false}`, and
then 200 `{"ready": true}`; if the import or setup() raises, the worker logs the traceback and exits
with code 1. Every other request (any method, any path) calls `process(request)` with a
`PluginRequest`, and the return value is sent as JSON with status 200, or as `(status, body)` when
the plugin returns a pair. `bytes` are sent as they are. An exception in `process` gives 500
`{"error": "<type>: <message>"}` and its traceback in the replica's log; a body that is not the JSON
its content type says gives 400; a body over `MAX_BODY` gives 413.

Calls to `process` are made one at a time unless the class sets `threadsafe = True`. An optional
`teardown()` is called when the worker is told to stop (SIGTERM).

Only the standard library is used here, so the worker starts in tens of milliseconds and the time to
the first answer is the plugin's own import and setup. A warm worker (`_worker.py --spare module...`,
see `spare`) takes even that import out of the way: it starts before any app is deployed, imports
the modules the node's operator lists, and serves the first app that claims it as above.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import select
import signal
import socket
import sys
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit

MAX_BODY = 16 << 20
log = logging.getLogger("r1os.plugin")


class PluginRequest:
    """One HTTP request, as a plugin's `process(request)` receives it."""

    __slots__ = ("method", "path", "query", "headers", "body", "json")

    def __init__(
        self,
        method: str,
        path: str,
        query: dict[str, str],
        headers: dict[str, str],
        body: bytes,
        json: Any = None,
    ) -> None:
        #: "GET", "POST", ...
        self.method = method
        #: the path on the replica, without the query ("/predict")
        self.path = path
        #: query parameters (the last value of a repeated one)
        self.query = query
        #: headers, names in lower case
        self.headers = headers
        #: the raw body
        self.body = body
        #: the body parsed as JSON, or None when there is no body or it is not JSON
        self.json = json

    def __repr__(self) -> str:
        return f"PluginRequest({self.method} {self.path}, {len(self.body)} bytes)"


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _jsonable(obj: Any) -> Any:
    # numpy arrays and scalars (what models return) become lists and numbers.
    for attr in ("tolist", "item"):
        fn = getattr(obj, attr, None)
        if callable(fn):
            return fn()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")


def _encode(body: Any) -> tuple[bytes, str]:
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body), "application/octet-stream"
    return json.dumps(body, default=_jsonable).encode(), "application/json"


class _State:
    def __init__(self, health_path: str) -> None:
        self.health_path = health_path
        self.ready = False
        self.instance: Any = None
        self.lock: threading.Lock | None = threading.Lock()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body are two writes: without this a kept-alive client waits ~40 ms per answer for
    # its delayed ACK.
    disable_nagle_algorithm = True
    server_version = "r1os-plugin"
    sys_version = ""
    #: seconds a connection may stay silent (a stuck client does not hold a thread for ever)
    timeout = 120
    state: _State

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # no access log: the node keeps health checks and requests out of the app's log

    def _send(self, status: int, body: Any, *, close: bool = False) -> None:
        try:
            data, ctype = _encode(body)
        except (TypeError, ValueError) as exc:
            log.error("%s %s: the plugin's answer is not JSON: %s", self.command, self.path, exc)
            status, (data, ctype) = 500, _encode({"error": f"answer is not JSON: {exc}"})
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts: list[bytes] = []
            total = 0
            while True:
                line = self.rfile.readline(1024)
                try:
                    size = int(line.split(b";")[0].strip() or b"x", 16)
                except ValueError:
                    raise _BadRequest(400, "bad chunked body") from None
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                total += size
                if total > MAX_BODY:
                    raise _BadRequest(413, f"body over {MAX_BODY} bytes")
                parts.append(self.rfile.read(size))
                self.rfile.readline(1024)
        raw = self.headers.get("Content-Length")
        if raw is None:
            return b""
        try:
            length = int(raw)
        except ValueError:
            raise _BadRequest(400, "bad Content-Length") from None
        if length < 0:
            raise _BadRequest(400, "bad Content-Length")
        if length > MAX_BODY:
            raise _BadRequest(413, f"body over {MAX_BODY} bytes")
        return self.rfile.read(length)

    def _handle(self) -> None:
        st = self.state
        url = urlsplit(self.path)
        path = url.path or "/"
        try:
            body = self._read_body()
        except _BadRequest as exc:
            self._send(exc.status, {"error": str(exc)}, close=True)
            return
        if self.command in ("GET", "HEAD") and path == st.health_path:
            self._send(200 if st.ready else 503, {"ready": st.ready})
            return
        if not st.ready:
            self._send(503, {"error": "the plugin is starting"})
            return
        ctype = self.headers.get("Content-Type", "").lower()
        parsed: Any = None
        if body and ("json" in ctype or not ctype):
            try:
                parsed = json.loads(body)
            except ValueError as exc:
                self._send(400, {"error": f"the body is not JSON: {exc}"})
                return
        request = PluginRequest(
            method=self.command,
            path=path,
            query=dict(parse_qsl(url.query, keep_blank_values=True)),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            json=parsed,
        )
        try:
            if st.lock is not None:
                with st.lock:
                    result = st.instance.process(request)
            else:
                result = st.instance.process(request)
        except Exception as exc:
            log.error("%s %s failed:\n%s", self.command, path, traceback.format_exc().rstrip())
            self._send(500, {"error": f"{type(exc).__name__}: {exc}"})
            return
        status = 200
        if isinstance(result, tuple) and len(result) == 2 and isinstance(result[0], int):
            status, result = result
            if not 100 <= status <= 599:
                log.error("%s %s: the plugin answered status %s", self.command, path, status)
                self._send(500, {"error": f"the plugin answered an invalid status {status}"})
                return
        self._send(status, result)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


def load_plugin(target: str) -> Any:
    """Import `module.path:ClassName` and make an instance (no setup yet)."""
    module_name, sep, class_name = target.partition(":")
    if not sep or not module_name or not class_name:
        raise ValueError(f"{target!r}: write module.path:ClassName")
    module = importlib.import_module(module_name)
    cls = getattr(module, class_name, None)
    if cls is None:
        raise ValueError(f"module {module_name!r} has no {class_name!r}")
    instance = cls()
    if not callable(getattr(instance, "process", None)):
        raise ValueError(f"{target} has no process(request) method")
    return instance


def _on_term(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    """Serve the plugin named in `argv` (default `sys.argv[1:]`) until SIGTERM; the exit code.
    `--spare module...`: a warm worker (see `spare`)."""
    args = sys.argv[1:] if argv is None else argv
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # The kernel may hand SIGTERM to any thread (the server's, or one a model library starts), and
    # Python runs handlers only in the main thread: the wakeup fd wakes the main thread whichever
    # thread took the signal. Installed first, so a stop at any point ends the worker cleanly.
    wake_r, wake_w = socket.socketpair()
    wake_r.setblocking(False)
    wake_w.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, _on_term)
    # The worker's own folder is not the app's: its modules must not shadow the app's.
    if sys.path and sys.path[0] == os.path.dirname(os.path.abspath(__file__)):
        sys.path.pop(0)
    try:
        if args[:1] == ["--spare"]:
            return spare(args[1:], wake_r)
        if len(args) != 1:
            log.error("usage: _worker.py module.path:ClassName | --spare [module ...]")
            return 2
        return _serve(args[0], wake_r)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 0


#: What a spare writes (to its log) once its modules are imported.
SPARE_READY = "spare ready"
#: What a spare writes for a module it cannot import (the module's name follows).
SPARE_SKIPPED = "spare cannot preload "
#: Bytes a claim may take (the app's env: 128 variables of up to 16 KiB, and JSON's escapes).
MAX_CLAIM = 16 << 20


def spare(preload: list[str], wake: socket.socket) -> int:
    """A warm worker: import the `preload` modules (one that fails is written to the log and skipped),
    then wait for one claim on stdin, a JSON line `{"plugin": "module:Class", "env": {...}}`; take
    `env` as the whole environment and serve the plugin as a worker started with it would. The node
    starts a spare in the sandbox of a replica, with an empty app folder as cwd, and moves the app's
    files into that folder before it sends the claim; stdin closed with no claim ends it (code 0)."""
    t0 = time.monotonic()
    loaded = []
    for name in preload:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception as exc:
            log.warning("%s%s: %s: %s", SPARE_SKIPPED, name, type(exc).__name__, exc)
    log.info(
        "%s (%s in %.2f s)", SPARE_READY, ", ".join(loaded) or "nothing preloaded", time.monotonic() - t0
    )
    line = sys.stdin.buffer.readline(MAX_CLAIM)
    if not line:
        return 0
    try:
        claim = json.loads(line)
        target, env = claim["plugin"], claim["env"]
        if not isinstance(target, str) or not isinstance(env, dict):
            raise TypeError("plugin must be a string and env an object")
        if not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
            raise TypeError("env must map strings to strings")
    except (ValueError, KeyError, TypeError) as exc:
        log.error("bad claim: %s", exc)
        return 2
    # Nothing more comes from the node: the app reads /dev/null, as a worker started for it does.
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)
    os.environ.clear()
    os.environ.update(env)
    os.environ["PWD"] = os.getcwd()  # as bubblewrap sets it for a worker started in the app folder
    # The app's files arrived after the interpreter started: forget what the import system cached.
    importlib.invalidate_caches()
    return _serve(target, wake)


def _serve(target: str, wake: socket.socket) -> int:
    # The app folder (the cwd) comes first on sys.path, so its modules win.
    sys.path.insert(0, os.getcwd())
    try:
        port = int(os.environ["PORT"])
    except (KeyError, ValueError):
        log.error("PORT is not set to a port number")
        return 2
    health = os.environ.get("R1OS_HEALTH_PATH") or "/"
    state = _State(health if health.startswith("/") else "/" + health)
    handler = type("Handler", (_Handler,), {"state": state})
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    except OSError as exc:
        log.error("cannot listen on 127.0.0.1:%d: %s", port, exc)
        return 1
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="http", daemon=True).start()
    instance: Any = None
    try:
        try:
            log.info("loading %s", target)
            instance = load_plugin(target)
            setup = getattr(instance, "setup", None)
            if callable(setup):
                setup()
        except Exception:
            log.error("%s failed to start:\n%s", target, traceback.format_exc().rstrip())
            return 1
        state.instance = instance
        if getattr(instance, "threadsafe", False):
            state.lock = None
        state.ready = True
        log.info("%s ready on 127.0.0.1:%d (health %s)", target, port, state.health_path)
        while True:
            select.select([wake], [], [])
            with contextlib.suppress(OSError):
                wake.recv(64)
    finally:
        server.server_close()
        teardown = getattr(instance, "teardown", None)
        if state.ready and callable(teardown):
            try:
                teardown()
            except Exception:
                log.error("teardown failed:\n%s", traceback.format_exc().rstrip())


if __name__ == "__main__":
    sys.exit(main())
