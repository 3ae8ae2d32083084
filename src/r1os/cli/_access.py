"""Who the CLI is to a node: a key that signs (`--key`), the node's operator token (`--token`), or nobody.

Every command that talks to a node takes `--key PATH` (a keystore; password from $R1OS_PASSWORD or a
prompt) and `--token TOKEN`. Which one a command uses, first match wins:

1. `--key PATH`: sign as that key (reads too, since it was asked for by name);
2. `--token TOKEN`: the node's operator;
3. `$R1OS_KEY` (a keystore path) or `$R1OS_PRIVATE_KEY` (hex): sign writes as that key;
4. `$R1OS_API_TOKEN`: the node's operator;
5. commands that write or maintain: the node's own token, if the node runs on this machine and its
   home can be read: a devnet node (`r1os devnet status`), a node under ~/.r1os, or any node on a
   loopback URL whose home the node names (checked against the `node.json` it keeps there);
6. commands that write: your default key (`r1os keys new`), if it exists;
7. nobody: reads of public data.

So on a node's machine, the CLI acts as that node's operator without a flag (as `r1os cstore set` did
before requests had to prove who sends them); elsewhere it writes as you. Operator-only commands
(`fs gc`, `node admission --retry`) skip 3 and 6: a key is never the operator.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import typer

from r1os.cli._common import PRIVATE_KEY_ENV
from r1os.errors import R1osError

if TYPE_CHECKING:
    from r1os.identity import NodeKey
    from r1os.sdk import Session

KEY_ENV = "R1OS_KEY"
TOKEN_ENV = "R1OS_API_TOKEN"  # as r1os.sdk reads it (not imported here: the SDK loads on first use)
DEFAULT_URL = "http://127.0.0.1:31234"
API_URL_ENV = "R1OS_API_URL"  # as r1os.sdk reads it

# No [brackets] in help texts: the help is rich markup, which would swallow them.
_KEY_HELP = (
    f"Keystore that signs your requests; password from $R1OS_PASSWORD or a prompt. Default: ${KEY_ENV}, "
    f"${PRIVATE_KEY_ENV} (hex), else for writes your key from `r1os keys new`."
)
CallerKeyOpt = typer.Option(None, "--key", "--key-file", "-k", help=_KEY_HELP)
#: The same for `r1os fs`, where `--key` is a file's encryption key.
FsCallerKeyOpt = typer.Option(None, "--key-file", "-k", help=_KEY_HELP)
TokenOpt = typer.Option(
    None,
    "--token",
    help=f"The node's API token, for its operator. Default: ${TOKEN_ENV}, else read from the node's "
    "home when it runs on this machine.",
)

#: `--node` of every command that talks to a node: None, so $R1OS_API_URL and then DEFAULT_URL apply.
NODE_HELP = f"The node's HTTP API URL. Default: ${API_URL_ENV} or {DEFAULT_URL}."
NodeOpt = typer.Option(None, "--node", help=NODE_HELP)

_LOOPBACK = {"localhost", "127.0.0.1", "::1"}


@dataclass(frozen=True)
class Access:
    """One command's caller at one node."""

    url: str
    key: NodeKey | None = None
    token: str | None = None
    sign_reads: bool = False
    operator: bool = False  # the command is the node operator's
    writes: bool = False


def node_url(url: str | None) -> str:
    """`--node`, else $R1OS_API_URL, else the default local node."""
    return (url or os.environ.get(API_URL_ENV) or DEFAULT_URL).rstrip("/")


def _key_from_file(path: Path) -> NodeKey:
    from r1os.identity import load_keystore, password_from_env_or_prompt

    return load_keystore(path, password_from_env_or_prompt())


def _key_from_env() -> NodeKey | None:
    if path := os.environ.get(KEY_ENV):
        return _key_from_file(Path(path).expanduser())
    if hex_key := os.environ.get(PRIVATE_KEY_ENV):
        from r1os.identity import NodeKey

        return NodeKey.from_hex(hex_key.strip())
    return None


def load_key(key_file: Path | None) -> NodeKey | None:
    """The key a command signs with when it must sign: `--key`, else $R1OS_KEY / $R1OS_PRIVATE_KEY."""
    return _key_from_file(key_file) if key_file is not None else _key_from_env()


def access(
    url: str | None,
    key_file: Path | None = None,
    token: str | None = None,
    *,
    writes: bool = False,
    operator: bool = False,
    home: Path | None = None,
) -> Access:
    """The caller for a command at node `url` (see the module's docstring for the order); `home`: the
    node's home folder when the command knows it (a devnet node's), so it need not be looked for."""
    base = Access(node_url(url), writes=writes, operator=operator)
    if key_file is not None:
        return replace(base, key=_key_from_file(key_file), sign_reads=True)
    if token:
        return replace(base, token=token)
    if writes and not operator and (key := _key_from_env()) is not None:
        return replace(base, key=key)
    if env_token := os.environ.get(TOKEN_ENV):
        return replace(base, token=env_token)
    if writes or operator:
        if (found := node_token(base.url, home)) is not None:
            return replace(base, token=found)
        if not operator:
            from r1os.paths import default_key_path

            if default_key_path().exists():
                return replace(base, key=_key_from_file(default_key_path()))
    return base


# -- the token of a node on this machine ------------------------------------------------------


def _url_key(url: str) -> tuple[str, str, int | None, str]:
    u = urlsplit(url.rstrip("/"))
    host = (u.hostname or "").lower()
    if host in _LOOPBACK:
        host = "loopback"  # http://localhost:31234 is the node that listens on 127.0.0.1:31234
    port = u.port or {"http": 80, "https": 443}.get(u.scheme)
    return u.scheme, host, port, u.path.rstrip("/")


def same_node_url(a: str, b: str) -> bool:
    return _url_key(a) == _url_key(b)


def _running_here(home: Path, url: str) -> bool:
    """True if the node whose home is `home` runs now and listens at `url`, by the `node.json` it
    keeps there (the node's own record: a node elsewhere cannot make one name its URL)."""
    from r1os.devnet._state import pid_alive

    try:
        info: Any = json.loads((home / "node.json").read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(info, dict) or not isinstance(info.get("url"), str):
        return False
    pid = info.get("pid")
    return same_node_url(info["url"], url) and isinstance(pid, int) and pid_alive(pid)


def _known_homes() -> Iterator[Path]:
    """Node homes this user keeps: the devnet's nodes, and nodes started with `r1os node start`."""
    from r1os.devnet import load_state
    from r1os.paths import default_devnet_dir, r1os_home

    try:
        state = load_state(default_devnet_dir())
    except R1osError:
        pass
    else:
        yield from (Path(n.home) for n in state.nodes)
    yield from sorted(r1os_home().glob("*/node"))


def _home_it_names(url: str) -> Path | None:
    """The home a node on a loopback URL reports (`GET /v1/node`); None for other URLs (a node on
    another machine keeps its token there)."""
    if _url_key(url)[1] != "loopback":
        return None
    import httpx

    try:
        home = httpx.get(url + "/v1/node", timeout=2).json().get("home")
    except (httpx.HTTPError, ValueError, AttributeError):
        return None
    return Path(home) if isinstance(home, str) and home else None


def node_home(url: str) -> Path | None:
    """The home of the node at `url` if it runs on this machine (see `_running_here`)."""
    for home in _known_homes():
        if _running_here(home, url):
            return home
    named = _home_it_names(url)
    return named if named is not None and _running_here(named, url) else None


def node_token(url: str, home: Path | None = None) -> str | None:
    """The API token of the node at `url` (whose home may be known), if it runs on this machine and its
    home is readable."""
    from r1os.sdk._auth import read_token

    if home is None or not _running_here(home, url):
        home = node_home(url)
    if home is None:
        return None
    try:
        return read_token(home)
    except R1osError:
        return None  # another user's node: the CLI is not its operator


# -- refusals, explained for the command line ----------------------------------------------------

_AUTH_STATUSES = (401, 403)


def _hint_for(acc: Access, exc: R1osError) -> str | None:
    """What to do about a node refusing this caller (None: the node's own hint says it best)."""
    if acc.token is not None:
        if exc.cause == "bad_token":
            return f"the token is not this node's: check --token / ${TOKEN_ENV} (the node's <home>/api-token)"
        return None
    get_token = (
        "run this on the node's machine (the CLI then reads the node's api-token), "
        f"or pass --token / set ${TOKEN_ENV}"
    )
    if acc.key is not None:
        return f"this is for the node's operator, not a key: {get_token}" if acc.operator else None
    if acc.operator or not acc.writes:
        return f"the node needs its operator's token: {get_token}"
    return f"{get_token}, or --key KEYSTORE to write as yourself (in app:<your address>:)"


@contextmanager
def explained(acc: Access) -> Iterator[None]:
    """Re-raise a node's refusal of this caller (401, 403) with a hint for the command line."""
    try:
        yield
    except R1osError as exc:
        if exc.status in _AUTH_STATUSES and (hint := _hint_for(acc, exc)) is not None:
            exc.hint = hint
        raise


@contextmanager
def open_session(acc: Access, timeout: float = 30.0) -> Iterator[Session]:
    """An SDK session at `acc.url` as `acc`'s caller, its refusals explained."""
    from r1os.sdk import Session

    with explained(acc), Session(acc.url, key=acc.key, token=acc.token, sign_reads=acc.sign_reads,
                                 timeout=timeout) as s:  # fmt: skip
        yield s


def node_session(
    url: str | None,
    key_file: Path | None = None,
    token: str | None = None,
    *,
    writes: bool = False,
    operator: bool = False,
    timeout: float = 30.0,
) -> AbstractContextManager[Session]:
    """`with node_session(--node, --key, --token, writes=...) as s:` (see `access`)."""
    return open_session(access(url, key_file, token, writes=writes, operator=operator), timeout)
