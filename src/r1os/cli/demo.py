"""`r1os devnet demo`: the whole story on a running devnet, each step printed as it happens.

Deploy the inference example and get predictions through a node that holds no replica, a file through
R1FS from one node to another, CSTORE state in the user's own namespace, a short private (CKKS) EDIL
job, an epoch closed by the oracles and the rewards an edge node earned claimed on chain, and a PoAI
job paid from the escrow to the operators whose nodes served it. Then a summary, the dashboard's URL
and what to try next. `./dev demo` runs `r1os devnet up` and then this.

A thin layer over the SDK (`r1os.Session`) and the chain client (`r1os.chain`), the same calls the
other commands make. A failed step prints its error and a hint, the story goes on with the next step
that does not need it, and the command exits non-zero at the end. The user is a fresh key (saved in
the devnet folder under `demo/`), funded from the devnet's deployer where the chain needs it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from r1os.chain.units import R1_DECIMALS, USDC_DECIMALS, format_units
from r1os.cli._common import console, err_console, error_line, handle_errors, print_json
from r1os.errors import DevnetError, R1osError
from r1os.paths import default_devnet_dir

if TYPE_CHECKING:
    from r1os.chain.client import ChainClient
    from r1os.devnet import DevnetNode, DevnetState
    from r1os.identity import NodeKey
    from r1os.sdk import Session

#: Set by `./dev demo` (Unix time, when it started): the ready and first-result times count from it.
STARTED_ENV = "R1OS_DEMO_T0"
#: Epochs of a devnet this command starts itself (none running): short, so steps 6 and 7 take a minute.
DEMO_EPOCH_SECONDS = 20
DEMO_HEARTBEAT = 5.0
USDC = 10**6
R1 = 10**18
#: The PoAI job: 2 nodes x 4 epochs x 1 USDC (a replica deployed mid-epoch serves the next full one).
JOB_NODES, JOB_EPOCHS, JOB_PRICE = 2, 4, 1 * USDC
#: An 8x8 image of an 8 (pixel values 0-16), for the "try next" prediction.
EIGHT = [0, 0, 10, 16, 16, 12, 0, 0, 0, 4, 16, 5, 4, 16, 3, 0, 0, 2, 15, 3, 5, 16, 1, 0,
         0, 0, 9, 16, 16, 6, 0, 0, 0, 0, 11, 14, 15, 6, 0, 0, 0, 3, 16, 3, 2, 14, 1, 0,
         0, 4, 16, 5, 6, 16, 2, 0, 0, 0, 11, 16, 16, 9, 0, 0]  # fmt: skip

DirOpt = typer.Option(None, "--dir", help="Devnet folder (default: ~/.r1os/devnet).")


def _r1(wei: int) -> str:
    """R1 for people: four decimals (the JSON keeps every wei)."""
    return f"{wei / 10**R1_DECIMALS:,.4f}"


def _usdc(units: int) -> str:
    return format_units(units, USDC_DECIMALS)


# -- where the examples are ----------------------------------------------------------------------------


def examples_dir() -> Path:
    """`examples/` of the checkout r1os runs from (an editable install), else of the current folder."""
    here = Path(__file__).resolve()
    for base in (*here.parents, Path.cwd(), *Path.cwd().parents):
        if (base / "examples" / "apps" / "inference" / "app.yaml").is_file():
            return base / "examples"
    raise DevnetError(
        "cannot find the examples (examples/apps/inference/app.yaml)",
        hint="run the demo from an r1os checkout (`./dev demo`)",
    )


# -- the story's record ----------------------------------------------------------------------------------


@dataclass
class Step:
    """One step of the story as the summary reports it."""

    number: int
    name: str
    title: str
    ok: bool | None = None  # None: skipped
    result: str = ""
    seconds: float = 0.0
    error: str | None = None
    hint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "step": self.number,
            "name": self.name,
            "title": self.title,
            "ok": self.ok,
            "skipped": self.ok is None,
            "result": self.result,
            "seconds": round(self.seconds, 2),
            "error": self.error,
            "hint": self.hint,
            "details": self.details,
        }


class StepFailed(R1osError):
    """A step that ran but did not show what it should (a wrong answer, not a refused request)."""

    cause = "demo_step_failed"


class Skipped(Exception):
    """A step that cannot run because an earlier one failed (the reason is the message)."""


@dataclass
class Story:
    dir: Path
    out: Console
    quick: bool
    t0: float  # Unix time the demo started (`./dev demo`, else this command)
    from_dev: bool
    steps: list[Step] = field(default_factory=list)
    state: DevnetState | None = None
    user: NodeKey | None = None
    user_file: Path | None = None
    first_result_s: float | None = None
    ready_s: float | None = None
    names: dict[str, str] = field(default_factory=dict)  # address (lower case) -> devnet node name
    facts: dict[str, Any] = field(default_factory=dict)  # what "try next" names (apps, CIDs, jobs)

    # -- printing ----------------------------------------------------------------------------------

    def say(self, text: str, *, markup: bool = False) -> None:
        """One indented line of a step (`markup`: `text` is rich markup, else printed as is)."""
        self.out.print(f"      {text if markup else escape(text)}", highlight=False)

    def since_start(self) -> float:
        return time.time() - self.t0

    def name_of(self, address: str) -> str:
        return self.names.get(address.lower(), address[:10] + "…")

    @contextmanager
    def waiting(self, text: str) -> Iterator[Callable[[str], None]]:
        """A live countdown line on a terminal; elsewhere a printed line every 10 s."""
        if self.out.is_terminal:
            with self.out.status(f"      {escape(text)}") as status:
                yield lambda t: status.update(f"      {escape(t)}")
            return
        self.say(text)
        last = [-math.inf]

        def update(t: str) -> None:
            if time.monotonic() - last[0] >= 10:
                last[0] = time.monotonic()
                self.say(t)

        yield update

    def run_step(self, number: int, name: str, title: str, fn: Callable[[Step], str]) -> Step:
        step = Step(number, name, title)
        self.steps.append(step)
        self.out.print(f"\n[bold]{escape(f'[{number}/7]')} {escape(title)}[/]", highlight=False)
        started = time.monotonic()
        try:
            step.result = fn(step)
            step.ok = True
        except Skipped as exc:
            step.result = str(exc)
        except R1osError as exc:
            step.ok, step.error, step.hint = False, error_line(exc), exc.hint
        except (OSError, ValueError, RuntimeError, AssertionError) as exc:
            step.ok, step.error = False, f"{type(exc).__name__}: {exc}"
            step.hint = "see the nodes' logs: `r1os devnet logs NODE" + self.dir_flag() + "`"
        step.seconds = time.monotonic() - started
        if step.ok:
            self.out.print(
                f"  [green]ok[/] {escape(step.result)} [dim]({step.seconds:.1f} s)[/]", highlight=False
            )
        elif step.ok is None:
            self.out.print(f"  [yellow]skipped:[/] {escape(step.result)}", highlight=False)
        else:
            self.out.print(
                f"  [bold red]failed:[/] {escape(step.error or '')} [dim]({step.seconds:.1f} s)[/]",
                highlight=False,
            )
            if step.hint:
                self.out.print(f"  [dim]hint:[/] {escape(step.hint)}", highlight=False)
        return step

    def dir_flag(self) -> str:
        return "" if self.dir == default_devnet_dir().expanduser().resolve() else f" --dir {self.dir}"

    # -- what the steps share ------------------------------------------------------------------------

    def need_state(self) -> DevnetState:
        if self.state is None:
            raise Skipped("the devnet is not up")
        return self.state

    def need_user(self) -> NodeKey:
        if self.user is None:
            raise Skipped("no user key")
        return self.user

    def need_chain(self) -> dict[str, Any]:
        state = self.need_state()
        if not state.chain:
            raise Skipped("this devnet has no chain (it was started with --no-chain)")
        return state.chain

    def session(self, node: DevnetNode, *, signed: bool = False, timeout: float = 30.0) -> Session:
        from r1os.sdk import Session

        return Session(node.url, key=self.user if signed else None, timeout=timeout)

    def chain(self, key: Any = None) -> ChainClient:
        """A client of the devnet chain (made inside each event loop: web3 binds to its loop)."""
        from r1os.chain.devnet import devnet_client

        return devnet_client(self.dir, key)

    def oracles(self) -> list[DevnetNode]:
        return [n for n in self.need_state().nodes if n.oracle]

    def edges(self) -> list[DevnetNode]:
        return [n for n in self.need_state().nodes if not n.oracle]

    def epoch_info(self) -> dict[str, Any]:
        """The oracles' view of epochs (`/v1/oracle/epochs`) from the first oracle that answers."""
        last: R1osError | None = None
        for node in self.oracles():
            try:
                with self.session(node, timeout=10) as s:
                    info = s.oracle.epochs()
                info["_url"] = node.url
                return info
            except R1osError as exc:
                last = exc
        raise last or DevnetError("the devnet has no oracle")

    def wait_closed(self, epoch: int, timeout: float, what: str) -> dict[str, Any]:
        """Wait until the oracles closed `epoch`, with a countdown to its end and then to its close."""
        deadline = time.monotonic() + timeout
        with self.waiting(f"waiting for epoch {epoch} to close") as update:
            while True:
                info = self.epoch_info()
                last = info.get("last_closed")
                if last is not None and last >= epoch:
                    return info
                ends = info["genesis_time"] + (epoch + 1) * info["epoch_seconds"]
                left = ends - time.time()
                if left > 0:
                    update(f"epoch {epoch} ends in {left:.0f} s, then the oracles close it ({what})")
                else:
                    update(f"epoch {epoch} ended {-left:.0f} s ago: the oracles are agreeing on it ({what})")
                if time.monotonic() > deadline:
                    raise StepFailed(
                        f"the oracles did not close epoch {epoch} within {timeout:.0f} s",
                        hint=f"`r1os oracle epochs{self.dir_flag()}` shows the closed epochs and failures",
                    )
                time.sleep(1.0)


# -- the steps -------------------------------------------------------------------------------------------


def step_devnet(story: Story, step: Step) -> str:
    from r1os.devnet import Devnet, load_state
    from r1os.devnet._state import pid_alive

    devnet = Devnet(story.dir)
    running = False
    try:
        state = load_state(story.dir)
        running = any(pid_alive(n.pid) for n in state.nodes)
    except DevnetError:
        pass
    if not running:
        story.say(
            f"no devnet runs in {story.dir}: starting one (5 nodes, 3 oracles, chain,"
            f" {DEMO_EPOCH_SECONDS} s epochs)"
        )
        devnet.up(
            epoch_seconds=DEMO_EPOCH_SECONDS,
            heartbeat=DEMO_HEARTBEAT,
            timeout=120,
            progress=lambda m: story.say(f"[dim]{escape(m)}[/]", markup=True),
        )
        step.details["started_here"] = True
    status = devnet.status()
    state = devnet.state()
    story.names = {n.address.lower(): n.name for n in state.nodes}
    online = [n for n in status["nodes"] if n["status"] == "online"]
    for n in status["nodes"]:
        lic = n.get("licence")
        story.say(
            f"{n['name']}  {'oracle' if n['oracle'] else 'edge  '}  {n['address']}  {n['url']}  "
            f"{n['status']}" + (f"  {lic['type']} #{lic['token_id']}" if lic else "")
        )
    if len(online) < len(status["nodes"]):
        down = ", ".join(n["name"] for n in status["nodes"] if n["status"] != "online")
        story.state = state  # later steps may still work on the others
        raise StepFailed(
            f"not every node is online: {down}",
            hint="`r1os devnet start-node NODE" + story.dir_flag() + "`, or `r1os devnet down` and up again",
        )
    story.state = state
    oracles = sum(1 for n in state.nodes if n.oracle)
    chain = state.chain
    if chain:
        info = story.epoch_info()
        story.say(
            f"chain {chain['rpc']} (chain id {chain['chain_id']}), epochs of {chain['epoch_seconds']} s,"
            f" now epoch {info['current_epoch']}, the oracles closed"
            + (" none yet" if info.get("last_closed") is None else f" up to {info['last_closed']}")
        )
        if int(chain["epoch_seconds"]) > 30:
            story.say(
                f"[yellow]epochs are {chain['epoch_seconds']} s long: steps 6 and 7 wait for up to three"
                " of them[/] (`r1os devnet up --epoch-seconds 20` makes them short)",
                markup=True,
            )
    story.ready_s = story.since_start()
    since = "`./dev demo`" if story.from_dev else "the demo"
    step.details.update(
        nodes=len(state.nodes),
        oracles=oracles,
        chain=bool(chain),
        epoch_seconds=chain["epoch_seconds"] if chain else None,
        ready_seconds=round(story.ready_s, 1),
    )
    what = "chain" if chain else "no chain"
    return (
        f"{len(online)} nodes online ({oracles} oracles, {len(state.nodes) - oracles} edge), {what};"
        f" ready {story.ready_s:.1f} s after {since} started"
    )


def _password(story: Story) -> str:
    from r1os.devnet._manager import PASSWORD_FILE

    return (story.dir / PASSWORD_FILE).read_text().strip()


def _user_key(story: Story) -> NodeKey:
    """A fresh user key, saved (devnet password) so the user can go on with it after the demo."""
    from r1os.identity import NodeKey, save_keystore

    key = NodeKey.generate()
    path = story.dir / "demo" / f"user-{key.address[2:10].lower()}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    save_keystore(key, path, _password(story), strength="light")
    story.user, story.user_file = key, path
    return key


def _remove_earlier_apps(story: Story, node: DevnetNode) -> None:
    """Delete the apps an earlier demo run left on this devnet (their owners' keys are under demo/), so
    the nodes have room for this run's."""
    from r1os.identity import load_keystore
    from r1os.sdk import Session

    for path in sorted((story.dir / "demo").glob("user-*.json")):
        if path == story.user_file:
            continue
        try:
            key = load_keystore(path, _password(story))
            with Session(node.url, key=key) as s:
                names = [v.name for v in s.apps.list(owner=key.address)]
                for name in names:
                    s.apps.delete(name)
        except R1osError as exc:
            story.say(f"could not remove the apps of {path.name}: {error_line(exc)}")
            continue
        if names:
            story.say(f"removed the apps an earlier demo run left: {', '.join(names)} of {key.address}")


def step_inference(story: Story, step: Step) -> str:
    import httpx
    from sklearn.datasets import load_digits

    state = story.need_state()
    user = _user_key(story)
    story.say(f"user key {user.address} (new; keystore {story.user_file}, password in {story.dir}/password)")
    spec = examples_dir() / "apps" / "inference" / "app.yaml"
    entry = state.nodes[0]
    _remove_earlier_apps(story, entry)
    story.say(f"deploying {spec.parent.name} (plugin app, 2 replicas) through {entry.name}")
    owner = user.address.lower()
    with story.session(entry, signed=True, timeout=60) as s:
        s.apps.deploy(spec)
        seen: set[str] = set()

        def on_change(view: Any) -> None:
            for r in view.replicas:
                line = f"{story.name_of(r.node)}: {r.state}{' (healthy)' if r.healthy else ''}"
                if line not in seen:
                    seen.add(line)
                    story.say(f"  replica on {line}")

        view = s.apps.wait("inference", owner=owner, timeout=180, on_change=on_change)
    hosts = {r.node.lower() for r in view.replicas}
    outsider = next((n for n in state.nodes if n.address.lower() not in hosts), None)
    if outsider is None:
        raise StepFailed("every node holds a replica: no node to ask from outside")
    digits = load_digits()
    # One image of each digit from the end of the data set.
    picks = [max(i for i, t in enumerate(digits.target) if t == d) for d in range(10)]
    inputs = [digits.data[i].tolist() for i in picks]
    truth = [int(digits.target[i]) for i in picks]
    url = f"{outsider.url}/apps/{owner}/inference/predict"
    story.say(f"asking {outsider.name}, which holds no replica: POST {url} with {len(inputs)} digits")
    deadline = time.monotonic() + 30
    while True:
        try:
            r = httpx.post(url, json={"inputs": inputs}, timeout=30)
        except httpx.HTTPError as exc:
            raise StepFailed(f"{outsider.name} did not answer: {exc}") from None
        if r.status_code == 200 or time.monotonic() > deadline:
            break
        time.sleep(0.5)  # the route to the replicas reaches that node a moment later
    if r.status_code != 200:
        raise StepFailed(
            f"{outsider.name} answered {r.status_code}: {r.text[:200]}",
            hint=f"`r1os app status inference --node {outsider.url}` shows the replicas",
        )
    predicted = [int(p) for p in r.json()["predictions"]]
    story.first_result_s = story.since_start()
    correct = sum(p == t for p, t in zip(predicted, truth, strict=True))
    story.say("truth     " + " ".join(map(str, truth)))
    story.say("predicted " + " ".join(map(str, predicted)) + f"   ({correct}/{len(truth)} correct)")
    since = "`./dev demo`" if story.from_dev else "the demo"
    story.say(f"[bold]first result {story.first_result_s:.1f} s after {since} started[/]", markup=True)
    story.facts.update(app_url=url, owner=owner, predict_node=outsider.url)
    step.details.update(
        owner=owner,
        replicas=[story.name_of(h) for h in sorted(hosts)],
        asked=outsider.name,
        truth=truth,
        predicted=predicted,
        correct=correct,
        first_result_seconds=round(story.first_result_s, 1),
    )
    if correct < len(truth) - 2:
        raise StepFailed(f"only {correct}/{len(truth)} predictions were right")
    replicas = ", ".join(story.name_of(h) for h in sorted(hosts))
    return f"{correct}/{len(truth)} digits right through {outsider.name}; replicas on {replicas}"


def step_r1fs(story: Story, step: Step) -> str:
    state = story.need_state()
    story.need_user()
    writer, reader = story.edges()[0] if story.edges() else state.nodes[-1], state.nodes[1]
    stamp = datetime.now(UTC).isoformat(timespec="seconds")
    data = f"hello from the r1os demo, {stamp}\n".encode() + os.urandom(64 * 1024)
    digest = hashlib.sha256(data).hexdigest()
    with story.session(writer, signed=True) as s:
        added = s.r1fs.add_bytes(data)
    cid = str(added["cid"])
    story.say(f"added {len(data)} bytes on {writer.name}: CID {cid}")
    deadline = time.monotonic() + 30
    with story.session(reader) as s:
        while True:
            try:
                got = s.r1fs.get_bytes(cid)
                break
            except R1osError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    same = hashlib.sha256(got).hexdigest() == digest
    story.say(f"read on {reader.name}: {len(got)} bytes, sha256 {'matches' if same else 'DIFFERS'}")
    story.facts.update(cid=cid, cid_node=reader.url)
    step.details.update(cid=cid, bytes=len(data), written_on=writer.name, read_on=reader.name, same=same)
    if not same:
        raise StepFailed(f"{reader.name} returned other bytes for {cid}")
    return f"{cid} written on {writer.name}, the same {len(data)} bytes read on {reader.name}"


def step_cstore(story: Story, step: Step) -> str:
    state = story.need_state()
    story.need_user()
    writer, reader = state.nodes[2], story.edges()[-1] if story.edges() else state.nodes[-1]
    with story.session(writer, signed=True) as s:
        key = s.cstore.namespace + "demo:greeting"
        hkey = s.cstore.namespace + "demo:visits"
        value = {"hello": "from the r1os demo", "at": datetime.now(UTC).isoformat(timespec="seconds")}
        s.cstore.set(key, value)
        s.cstore.hset(hkey, writer.name, 1)
    story.say(f"on {writer.name}, signed by the user key: set {key} = {value}")
    story.say(f"on {writer.name}, signed by the user key: hset {hkey} {writer.name} 1")
    written = time.monotonic()
    deadline = written + 30
    with story.session(reader) as s:
        while True:
            got, fields = s.cstore.get(key), s.cstore.hgetall(hkey)
            if got == value and fields.get(writer.name) == 1:
                break
            if time.monotonic() > deadline:
                raise StepFailed(f"{reader.name} did not see {key} within 30 s (it has {got!r})")
            time.sleep(0.1)
    took = time.monotonic() - written
    story.say(f"on {reader.name}, {took:.2f} s later: get -> {got}; hgetall -> {fields}")
    story.facts.update(cstore_key=key, cstore_node=reader.url)
    step.details.update(key=key, value=value, written_on=writer.name, read_on=reader.name, seconds=took)
    return f"{key} written on {writer.name}, read on {reader.name} {took:.2f} s later"


def step_edil(story: Story, step: Step) -> str:
    from r1os.sdk._edil import read_spec

    state = story.need_state()
    story.need_user()
    rounds = 2 if story.quick else 5
    base = read_spec(examples_dir() / "edil" / "digits.yaml")
    spec = read_spec({**base.model_dump(mode="json"), "rounds": rounds, "privacy": "ckks"})
    owner_node = state.nodes[0]
    story.say(
        f"submitting {spec.name} ({spec.model.family}, {rounds} rounds, CKKS) to {owner_node.name},"
        " the owner's node: it alone decrypts the sum"
    )
    accuracy: list[float | None] = []

    with story.session(owner_node, signed=True, timeout=120) as s:
        job = s.edil.submit(spec)
        story.say(
            "participants "
            + ", ".join(story.name_of(p) for p in job.participants)
            + f"; aggregator {story.name_of(job.aggregator)}; job {job.job_id}"
        )

        def on_round(j: Any, r: Any) -> None:
            accuracy.append(r.test_accuracy)
            acc = f"{r.test_accuracy:.4f}" if r.test_accuracy is not None else "-"
            story.say(
                f"  round {r.round}/{j.rounds}: {len(r.included)} updates, test accuracy {acc}"
                f" ({r.seconds:.1f} s)"
            )

        job = s.edil.wait(job.job_id, timeout=60 + 60 * rounds, on_round=on_round)
    final = job.test_accuracy
    story.facts.update(edil_job=job.job_id, edil_node=owner_node.url)
    step.details.update(
        job_id=job.job_id,
        rounds=rounds,
        privacy=job.privacy,
        accuracy=accuracy,
        final_accuracy=final,
        owner_node=owner_node.name,
    )
    if final is None:
        raise StepFailed(f"job {job.job_id} finished without a test accuracy")
    return f"{rounds} CKKS rounds over 3 participants: final test accuracy {final:.4f}"


def step_rewards(story: Story, step: Step) -> str:
    from r1os.identity import load_keystore
    from r1os.oracle import fetch_signed

    chain = story.need_chain()
    edges = story.edges()
    if not edges:
        raise Skipped("the devnet has no edge node")
    node = edges[0]
    info = story.epoch_info()
    target = int(info["current_epoch"])
    story.say(
        f"epoch {target} is under way ({info['epoch_seconds']:g} s epochs); the oracles measure every"
        " node's heartbeats in it, agree on one availability byte per node and sign it"
    )
    timeout = float(info["epoch_seconds"]) * 2 + 90
    info = story.wait_closed(target, timeout, "availability")
    with story.session(next(n for n in story.oracles() if n.url == info["_url"])) as s:
        record = s.oracle.epoch(target)
        avail = s.oracle.availability(node.address, f"{target}:{target}")
    voters = len(record.get("voters", []))
    value = int(avail["epochs"][0]["value"]) if avail.get("epochs") else 0
    sigs = len(avail["epochs"][0].get("signatures", [])) if avail.get("epochs") else 0
    story.say(
        f"epoch {target} closed: {voters} oracles voted; {node.name} was available {value}/255"
        f" ({value / 255 * 100:.0f}%), signed by {sigs} oracles"
    )
    owner_key = load_keystore(Path(node.home) / "keys" / "node.json", _password(story))
    lic_ref = (chain.get("licences") or {}).get(node.address) or {}
    story.say(
        f"claiming {node.name}'s rewards ({lic_ref.get('type', 'ND')} #{lic_ref.get('token_id', '?')});"
        f" on a devnet its licence owner is the node's own key {owner_key.address}"
    )

    async def claim() -> dict[str, Any]:
        c = story.chain(owner_key)
        signed, lic = await fetch_signed(info["_url"], c, node.address)
        before = await c.balance(lic.owner)
        amount = await c.claim_rewards(
            lic.token_id, signed.first_epoch, signed.availabilities, signed.signature_bytes(), lic.type
        )
        return {
            "type": lic.type,
            "token_id": lic.token_id,
            "owner": lic.owner,
            "first_epoch": signed.first_epoch,
            "last_epoch": signed.last_epoch,
            "availabilities": list(signed.availabilities),
            "signatures": len(signed.signatures),
            "amount": amount,
            "balance_before": before,
            "balance": await c.balance(lic.owner),
        }

    data = asyncio.run(claim())
    step.details.update({k: str(v) if isinstance(v, int) and v > 2**53 else v for k, v in data.items()})
    step.details.update(node=node.name, epoch=target)
    story.say(
        f"epochs {data['first_epoch']}..{data['last_epoch']}, availability {data['availabilities']},"
        f" {data['signatures']} oracle signatures"
    )
    story.say(
        f"R1 of {data['owner']}: {_r1(data['balance_before'])} -> {_r1(data['balance'])}"
        f" (+{_r1(data['balance'] - data['balance_before'])})"
    )
    if data["amount"] <= 0:
        raise StepFailed(f"the claim paid nothing for epochs {data['first_epoch']}..{data['last_epoch']}")
    return (
        f"epoch {target} closed by {voters} oracles; {node.name}'s {data['type']} #{data['token_id']}"
        f" claimed {_r1(data['amount'])} R1 (epochs {data['first_epoch']}..{data['last_epoch']})"
    )


def step_poai(story: Story, step: Step) -> str:
    from r1os.chain.anvil import dev_private_key
    from r1os.deeploy import load_spec

    story.need_chain()
    state = story.need_state()
    user = story.need_user()
    story.say(
        f"the user funds a job in the escrow: {JOB_NODES} nodes x {JOB_EPOCHS} epochs x"
        f" {_usdc(JOB_PRICE)} USDC (mock USDC; gas from the devnet's deployer)"
    )
    addresses = [n.address for n in state.nodes]

    async def r1_burned() -> int | None:
        c = story.chain()
        return await c.total_r1_burned_by_poai() if await c.has_pool() else None

    r1_burned_before = asyncio.run(r1_burned())

    async def create() -> tuple[int, Any, dict[str, str], dict[str, int]]:
        admin = story.chain(dev_private_key(0))
        await admin.send_eth(user.address, R1)  # 1 ETH of gas
        c = story.chain(user)
        await c.usdc_faucet(JOB_NODES * JOB_EPOCHS * JOB_PRICE)
        job_id = await c.create_job(JOB_NODES, JOB_EPOCHS, JOB_PRICE)
        owners: dict[str, str] = {}
        for a in addresses:
            lic = await c.licence_of(a)
            if lic is not None:
                owners[a.lower()] = lic.owner
        balances = {o: await c.usdc_balance(o) for o in set(owners.values())}
        return job_id, await c.job(job_id), owners, balances

    job_id, job, owners, before = asyncio.run(create())
    story.say(
        f"job {job_id}: epochs {job.start_epoch}..{job.end_epoch - 1}, {_usdc(job.balance)} USDC in escrow"
    )
    spec = load_spec(examples_dir() / "apps" / "echo" / "app.yaml")
    spec = spec.model_copy(update={"job": job_id})
    entry = state.nodes[1]
    story.say(f"deploying echo (process app, 2 replicas) with job: {job_id} through {entry.name}")
    with story.session(entry, signed=True, timeout=60) as s:
        s.apps.deploy(spec)
        view = s.apps.wait("echo", owner=user.address.lower(), timeout=120)
    hosts = sorted(r.node.lower() for r in view.replicas)
    story.say(
        "replicas healthy on " + ", ".join(story.name_of(h) for h in hosts) + ": the oracles pay a node"
        " for an epoch its replica served (healthy) for most of"
    )
    info = story.epoch_info()
    epoch_s = float(info["epoch_seconds"])
    deadline = time.monotonic() + 3 * epoch_s + 90

    async def job_now() -> Any:
        return await story.chain().job(job_id)

    paid_epochs: dict[int, dict[str, Any]] = {}
    with story.waiting("waiting for the first paid epoch") as update:
        while True:
            job = asyncio.run(job_now())
            if job.paid > 0:
                break
            info = story.epoch_info()
            now_e = int(info["current_epoch"])
            left = info["genesis_time"] + (now_e + 1) * epoch_s - time.time()
            update(
                f"epoch {now_e} ends in {max(0.0, left):.0f} s; the oracles attest each closed epoch the"
                f" replicas served (closed up to {info.get('last_closed')})"
            )
            if time.monotonic() > deadline:
                raise StepFailed(
                    f"job {job_id} was not paid within {3 * epoch_s + 90:.0f} s",
                    hint=f"`r1os job status {job_id}{story.dir_flag()}`; `r1os oracle epochs` shows each"
                    " epoch; the oracles' logs say why an attestation failed",
                )
            time.sleep(1.0)
    info = story.epoch_info()
    with story.session(next(n for n in story.oracles() if n.url == info["_url"])) as s:
        for e in range(job.start_epoch, int(info.get("last_closed") or 0) + 1):
            try:
                att = s.oracle.epoch(e).get("attestations", {}).get(str(job_id))
            except R1osError:
                continue
            if att:
                paid_epochs[e] = att
    for e, att in sorted(paid_epochs.items()):
        nodes = ", ".join(story.name_of(n) for n in att.get("nodes", []))
        paid = f": paid {_usdc(att['paid'])} USDC" if att.get("paid") is not None else ""
        if att.get("error"):
            paid = f": submitting it failed: {att['error']}"
        story.say(
            f"epoch {e}: {len(att.get('signatures', {}))} oracles attested that {nodes} served it{paid}"
        )

    async def after() -> dict[str, int]:
        c = story.chain()
        return {o: await c.usdc_balance(o) for o in before}

    now = asyncio.run(after())
    gained = {o: now[o] - before[o] for o in before if now[o] != before[o]}
    for o, d in sorted(gained.items()):
        ran = ", ".join(story.name_of(a) for a, own in owners.items() if own == o)
        story.say(f"operator {o} ({ran}): USDC {_usdc(before[o])} -> {_usdc(now[o])} (+{_usdc(d)})")
    story.say(
        f"job {job_id}: paid {_usdc(job.paid)}, burned {_usdc(job.burned)} (15%),"
        f" {_usdc(job.balance)} USDC still in escrow (the owner's after the job ends: `r1os job end/refund`)"
    )
    r1_burned_now = asyncio.run(r1_burned())
    if r1_burned_before is not None and r1_burned_now is not None:
        bought = r1_burned_now - r1_burned_before
        story.say(f"the 15% bought {_r1(bought)} R1 on the R1/USDC pool, and that R1 was burned")
        step.details.update(r1_bought_and_burned=bought)
    story.facts.update(poai_job=job_id)
    step.details.update(
        job_id=job_id,
        paid=job.paid,
        burned=job.burned,
        balance=job.balance,
        replicas=[story.name_of(h) for h in hosts],
        paid_epochs={str(e): a for e, a in paid_epochs.items()},
        operators={o: d for o, d in gained.items()},
    )
    if not gained:
        raise StepFailed(f"job {job_id} paid {_usdc(job.paid)} USDC but no operator's balance grew")
    return (
        f"job {job_id} paid {_usdc(job.paid)} USDC to {len(gained)} operator(s) for"
        f" epoch(s) {', '.join(map(str, sorted(paid_epochs))) or '?'}; {_usdc(job.burned)} burned"
    )


# -- the summary -----------------------------------------------------------------------------------------


def summary(story: Story, kept: bool) -> dict[str, Any]:
    state = story.state
    dashboard = f"{state.nodes[0].url}/" if state and kept else None
    return {
        "ok": all(s.ok for s in story.steps),
        "dir": str(story.dir),
        "dashboard": dashboard,
        "ready_seconds": None if story.ready_s is None else round(story.ready_s, 1),
        "first_result_seconds": None if story.first_result_s is None else round(story.first_result_s, 1),
        "total_seconds": round(story.since_start(), 1),
        "user": story.user.address if story.user else None,
        "user_keystore": str(story.user_file) if story.user_file else None,
        "kept": kept,
        "steps": [s.as_json() for s in story.steps],
    }


def try_next(story: Story) -> list[tuple[str, str]]:
    """(command, what it shows) for the things this run made."""
    f, d = story.facts, story.dir_flag()
    node = story.state.nodes[0].url if story.state else "URL"
    lines = [(f"open {node}/ in a browser", "the dashboard: nodes, epochs, apps, training, CSTORE, R1FS")]
    lines.append((f"r1os app ls --node {node}", "the apps and their replicas"))
    if "app_url" in f:
        digit = ",".join(str(v) for v in EIGHT)
        lines.append(
            (
                f"curl -X POST {f['app_url']} -H 'content-type: application/json'"
                f" -d '{{\"inputs\": [[{digit}]]}}'",
                "a prediction (an 8) through any node",
            )
        )
    if "cid" in f:
        lines.append((f"r1os fs get {f['cid']} -o demo.bin --node {f['cid_node']}", "the R1FS file"))
    if "cstore_key" in f:
        lines.append((f"r1os cstore get {f['cstore_key']} --node {f['cstore_node']}", "the CSTORE value"))
    if "edil_job" in f:
        lines.append((f"r1os edil status {f['edil_job']} --node {f['edil_node']}", "the training rounds"))
    lines.append((f"r1os oracle epochs{d}", "the epochs the oracles closed"))
    if "poai_job" in f:
        lines.append((f"r1os job status {f['poai_job']}{d}", "the PoAI job's escrow"))
    if story.user_file is not None:
        lines.append(
            (
                f"R1OS_PASSWORD=$(cat {story.dir}/password) r1os app logs inference"
                f" --key {story.user_file} --node {node}",
                "the app's logs, as its owner",
            )
        )
    lines.append((f"r1os devnet down{d}", "stop the devnet"))
    return lines


def print_summary(story: Story, data: dict[str, Any]) -> None:
    out = story.out
    t = Table(title="what happened")
    for col in ("step", "result", "seconds"):
        t.add_column(col)
    for s in story.steps:
        mark = {True: "[green]ok[/]", False: "[red]failed[/]", None: "[yellow]skipped[/]"}[s.ok]
        text = s.result if s.ok is not False else f"{s.error}"
        t.add_row(f"{s.number} {s.name}", f"{mark} {escape(text)}", f"{s.seconds:.1f}")
    out.print()
    out.print(t)
    if data["ready_seconds"] is not None:
        since = "`./dev demo`" if story.from_dev else "the demo"
        first = data["first_result_seconds"]
        out.print(
            f"ready {data['ready_seconds']:.1f} s after {since} started"
            + (f", first result (a prediction) after {first:.1f} s" if first is not None else "")
            + f"; the whole story took {data['total_seconds']:.0f} s",
            highlight=False,
        )
    if story.state is None:
        out.print(f"\nNo devnet runs in {story.dir}: `r1os devnet up{story.dir_flag()}` starts one.")
        return
    if not data["kept"]:
        out.print(f"\nThe devnet is stopped (--no-keep): `r1os devnet up{story.dir_flag()}` starts it again.")
        return
    if data["dashboard"]:
        out.print(f"\n[bold]dashboard:[/] {data['dashboard']}", highlight=False)
    out.print("\n[bold]Try next[/] (with .venv/bin on your PATH):")
    for command, what in try_next(story):
        out.print(f"  [dim]# {escape(what)}[/]\n  {escape(command)}", highlight=False)
    out.print()
    out.print(
        "The devnet keeps running (--keep, the default)."
        f" Stop it with [bold]r1os devnet down{story.dir_flag()}[/].",
        highlight=False,
    )


# -- the command -----------------------------------------------------------------------------------------


def _started_at() -> tuple[float, bool]:
    raw = os.environ.get(STARTED_ENV)
    if raw:
        try:
            t0 = float(raw)
        except ValueError:
            pass
        else:
            if 0 < time.time() - t0 < 24 * 3600:
                return t0, True
    return time.time(), False


@handle_errors
def demo(
    dir: Path | None = DirOpt,
    keep: bool = typer.Option(
        True, "--keep/--no-keep", help="Leave the devnet running afterwards (the default) or stop it."
    ),
    quick: bool = typer.Option(False, "--quick", help="A shorter story: 2 EDIL rounds instead of 5."),
    json_out: bool = typer.Option(
        False, "--json", help="Print the summary as JSON (the steps as they happen go to stderr)."
    ),
) -> None:
    """Run the whole story on the devnet (starting one if none runs): an app, R1FS, CSTORE, EDIL,
    an epoch's rewards and a PoAI job; then what happened and the dashboard's URL."""
    t0, from_dev = _started_at()
    story = Story(
        dir=(dir or default_devnet_dir()).expanduser().resolve(),
        out=err_console if json_out else console,
        quick=quick,
        t0=t0,
        from_dev=from_dev,
    )
    story.out.print(
        f"[bold]r1os devnet demo[/]: the whole story on the devnet in {story.dir}", highlight=False
    )
    plan: list[tuple[str, str, Callable[[Story, Step], str]]] = [
        ("devnet", "The devnet is up: nodes, oracles, chain", step_devnet),
        (
            "inference",
            "Deploy examples/apps/inference (2 replicas) as a user and predict through a node without one",
            step_inference,
        ),
        ("r1fs", "Store a file in R1FS on one node, read it on another", step_r1fs),
        ("cstore", "Write and read CSTORE state in the user's namespace across two nodes", step_cstore),
        ("edil", "Train privately: an EDIL job (digits, CKKS), one node as the owner's", step_edil),
        ("rewards", "Close an epoch and claim the rewards an edge node earned", step_rewards),
        ("poai", "Pay a PoAI job: an app deployed with a funded escrow job", step_poai),
    ]
    for i, (name, title, fn) in enumerate(plan, 1):
        if i > 1 and story.state is None:
            story.steps.append(Step(i, name, title, result="the devnet is not up"))
            continue
        story.run_step(i, name, title, functools.partial(fn, story))
    if not keep and story.state is not None:
        from r1os.devnet import Devnet

        story.out.print("\nstopping the devnet (--no-keep)")
        Devnet(story.dir).down()
    data = summary(story, keep and story.state is not None)
    print_summary(story, data)
    if json_out:
        print_json(data)
    if not data["ok"]:
        raise typer.Exit(1)
