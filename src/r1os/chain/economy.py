"""Simulate the r1os token economy on the real contracts, epoch by epoch.

`simulate(scenario, out_dir)` deploys the contracts (`r1os.chain.deploy.deploy`, with the Uniswap pool
when the deployment makes one) on a private anvil and drives them through a scenario: Node Deeds sold
per epoch (each one bought, linked to its own node and claimed for), Master Node Deeds assigned at
the start, the Genesis Node Deed claimed every epoch, PoAI jobs paid into the escrow every epoch and
attested the epoch after, and every licence claiming its oracle-signed availability (drawn from the
scenario's distribution) every `claim_every` epochs, staggered by link epoch, with a last round at the
end. Each epoch's transactions are sent as one JSON-RPC batch and mined in one block.

What it writes under `out_dir`: `economy.csv` (one row per epoch: cumulative R1 minted by ND, MND
and GND, burned, total supply, ND sold, PoAI volume, adoption, withheld MND rewards, pool price and
liquidity when there is a pool) and `supply.png` / `market.png` (matplotlib). The figures come from
the receipts' events, and at the end they are checked against the contracts' own state: the sum of
every licence's `claimed_amount`, and `R1.totalSupply()` (minted - burned). A mismatch raises.

Scenarios are JSON files (`examples/economy/*.json`); `load_scenario` also takes a bare name
(`paper`, `low-adoption`) and looks it up there.
"""

from __future__ import annotations

import csv
import logging
import random
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import rlp
from eth_abi.abi import decode, encode
from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from r1os.chain.anvil import Anvil, dev_private_key
from r1os.chain.deploy import deploy
from r1os.chain.digests import sign_attestation, sign_availability
from r1os.errors import ChainError
from r1os.identity import NodeKey

log = logging.getLogger(__name__)

R1 = 10**18
USDC = 10**6
MAX_SUPPLY = 161_803_398 * R1
MAX_UINT = 2**256 - 1
DAY = 86_400
MAX_CLAIM_EPOCHS = 1080
ND_TIERS: tuple[tuple[int, int], ...] = (
    (500, 89),
    (750, 144),
    (1000, 233),
    (1500, 377),
    (2000, 610),
    (2500, 987),
    (3000, 1597),
)
ND_TIERS += ((3500, 2584), (4000, 4181), (5000, 6765), (7000, 10946), (9500, 17711))
"""(USD, units) of the Node Deed sale's tiers (docs/economy.md)."""


def tier_usd(sold: int) -> int:
    """USD price of the next deed after `sold` were sold (0 when sold out)."""
    for usd, units in ND_TIERS:
        if sold < units:
            return usd
        sold -= units
    return 0


MAX_SCENARIO_BYTES = 1_000_000
SCENARIO_DIRS = (Path(__file__).resolve().parents[3] / "examples" / "economy",)
"""Where bare scenario names are looked up (the repository's examples/economy)."""


Epoch = Annotated[int, Field(ge=0, le=5000)]
Share = Annotated[float, Field(ge=0, le=1)]


class Scenario(BaseModel):
    """What happens over the simulated epochs. Schedules are (epoch, value) points, linear between
    points and flat after the last one."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100)
    description: str = Field("", max_length=2000)
    epochs: int = Field(1080, ge=2, le=5000)
    seed: int = 1
    nd_sold: list[tuple[Epoch, Annotated[int, Field(ge=0, le=46_224)]]] = Field(
        description="(epoch, Node Deeds sold so far)", min_length=1, max_length=1000
    )
    poai_usd_per_epoch: list[tuple[Epoch, Annotated[float, Field(ge=0, le=10**9)]]] = Field(
        description="(epoch, USD paid into PoAI jobs in that epoch)", min_length=1, max_length=1000
    )
    availability: list[tuple[Annotated[int, Field(ge=0, le=255)], Annotated[float, Field(ge=0)]]] = Field(
        default=[(255, 1.0)], description="(availability byte 0..255, share of node-epochs)", min_length=1
    )
    mnd_percent: list[Annotated[float, Field(gt=0, le=2)]] = Field(
        default=[], description="each MND's assignment, % of the supply (at most 2 each)", max_length=500
    )
    claim_every: int = Field(90, ge=1, le=MAX_CLAIM_EPOCHS)
    mnd_cliff_epochs: int = Field(223, ge=0, le=5000)
    mnd_claim_every: int = Field(10, ge=1, le=MAX_CLAIM_EPOCHS)
    pool: bool = Field(True, description="deploy Uniswap V2 and an R1/USDC pool (needs its npm artifacts)")
    pool_r1: float = Field(1_000_000, gt=0, le=10**8, description="R1 seeded into the pool (minted for it)")
    pool_usdc: float = Field(1_000_000, gt=0, le=10**12, description="USDC seeded into the pool")
    nd_sell_share: Share = Field(
        0.5, description="with a pool, share of their mined R1 Node Deed owners sell on it"
    )
    gnd_sell_share: Share = Field(
        0.05, description="with a pool, share of the GND's R1 the company sells on it"
    )
    buy_margin: float = Field(
        1.05, ge=1, le=10, description="with a pool, buyers swap this times the deed's USD price for R1 first"
    )

    @model_validator(mode="after")
    def _totals(self) -> Scenario:
        if sum(w for _, w in self.availability) <= 0:
            raise ValueError("the availability shares add up to 0")
        if sum(self.mnd_percent) > 26.1:
            raise ValueError("the MNDs' assignments exceed 26.1% of the supply")
        return self


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A scenario from a JSON file, or by name (letters, digits, - and _) from examples/economy."""
    path = Path(name_or_path)
    if not path.is_file():
        name = str(name_or_path)
        found = [d / f"{name}.json" for d in SCENARIO_DIRS if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", name)]
        found = [f for f in found if f.is_file()]
        if not found:
            known = sorted(p.stem for d in SCENARIO_DIRS if d.exists() for p in d.glob("*.json"))
            raise ChainError(f"no scenario {name!r}", hint=f"a JSON file, or one of {', '.join(known)}")
        path = found[0]
    try:
        if path.stat().st_size > MAX_SCENARIO_BYTES:
            raise ChainError(f"scenario {path} is larger than {MAX_SCENARIO_BYTES} bytes")
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ChainError(f"cannot read scenario {path}: {exc}") from None
    try:
        return Scenario.model_validate_json(text)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "scenario"
        log.warning("scenario %s refused: %s: %s", path, where, first["msg"])
        raise ChainError(f"scenario {path}: {where}: {first['msg']}") from None


def schedule(points: Sequence[tuple[int, float]], epoch: int) -> float:
    """A piecewise-linear schedule at `epoch` (flat before the first and after the last point)."""
    pts = sorted(points)
    if epoch <= pts[0][0]:
        return float(pts[0][1])
    for (e0, v0), (e1, v1) in zip(pts, pts[1:], strict=False):
        if epoch <= e1:
            return v0 + (v1 - v0) * (epoch - e0) / (e1 - e0) if e1 > e0 else float(v1)
    return float(pts[-1][1])


# --- ABI helpers ----------------------------------------------------------------------------------


def _selector(signature: str) -> bytes:
    return keccak(text=signature)[:4]


def _types(signature: str) -> list[str]:
    inner = signature[signature.index("(") + 1 : -1]
    return [t for t in inner.split(",") if t]


def calldata(signature: str, *args: Any) -> bytes:
    return _selector(signature) + encode(_types(signature), list(args))


def _topic(signature: str) -> str:
    return "0x" + keccak(text=signature).hex()


T_CLAIMED = _topic("RewardsClaimed(uint256,address,uint256,uint256,uint256)")
T_WITHHELD = _topic("WithheldReleased(uint256,address,uint256)")
T_TRANSFER = _topic("Transfer(address,address,uint256)")
ZERO_TOPIC = "0x" + "00" * 32


# --- results --------------------------------------------------------------------------------------

COLUMNS = (
    "epoch",
    "nd_sold",
    "poai_volume_usd",
    "adoption",
    "minted_nd",
    "minted_mnd",
    "minted_gnd",
    "minted_other",
    "burned",
    "total_supply",
    "mnd_withheld",
    "pool_price_usd",
    "pool_r1",
    "pool_usdc",
)
"""CSV columns; R1 amounts in whole R1 (float), counts as integers."""


@dataclass
class Totals:
    """Cumulative wei figures, from the receipts' events."""

    minted_nd: int = 0
    minted_mnd: int = 0
    minted_gnd: int = 0
    minted: int = 0  # every R1 Transfer from 0x0
    burned: int = 0  # every R1 Transfer to 0x0

    @property
    def minted_other(self) -> int:
        return self.minted - self.minted_nd - self.minted_mnd - self.minted_gnd


@dataclass
class SimulationResult:
    scenario: str
    epochs: int
    seconds: float
    totals: Totals
    total_supply: int
    nd_sold: int
    poai_volume: int
    adoption: int
    mnd_withheld: int
    transactions: int
    has_pool: bool
    contracts: dict[str, str] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        t = self.totals
        return {
            "scenario": self.scenario,
            "epochs": self.epochs,
            "seconds": round(self.seconds, 1),
            "transactions": self.transactions,
            "nd_sold": self.nd_sold,
            "poai_volume_usd": self.poai_volume / USDC,
            "adoption": self.adoption / 10**18,
            "minted_nd_r1": t.minted_nd / R1,
            "minted_mnd_r1": t.minted_mnd / R1,
            "minted_gnd_r1": t.minted_gnd / R1,
            "minted_other_r1": t.minted_other / R1,
            "burned_r1": t.burned / R1,
            "circulating_r1": self.total_supply / R1,
            "mnd_withheld_r1": self.mnd_withheld / R1,
            "pool": self.has_pool,
            "files": [str(f) for f in self.files],
        }


# --- the driver ----------------------------------------------------------------------------------


@dataclass
class _Licence:
    kind: str  # "ND", "MND" or "GND"
    token: int
    node: str
    next_epoch: int
    start: int  # first epoch that earns (link epoch, or the MND's mining start)
    pending: bool = False  # a claim is in the current batch


class _Rpc:
    BATCH = 400  # anvil refuses much larger batches

    def __init__(self, url: str) -> None:
        self.http = httpx.AsyncClient(timeout=300.0)
        self.url = url
        self.ids = 0

    async def batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        """Results of `calls` (method, params), sent as JSON-RPC batches of at most BATCH calls."""
        out: list[Any] = []
        for i in range(0, len(calls), self.BATCH):
            out += await self._batch(calls[i : i + self.BATCH])
        return out

    async def _batch(self, calls: Sequence[tuple[str, list[Any]]]) -> list[Any]:
        if not calls:
            return []
        body = []
        for method, params in calls:
            self.ids += 1
            body.append({"jsonrpc": "2.0", "id": self.ids, "method": method, "params": params})
        r = await self.http.post(self.url, json=body)
        r.raise_for_status()
        got = r.json()
        if not isinstance(got, list):
            raise ChainError(f"the node refused a batch of {len(body)} calls: {got.get('error', got)}")
        replies = {x["id"]: x for x in got}
        out = []
        for req in body:
            rep = replies[req["id"]]
            if "error" in rep:
                raise ChainError(f"{req['method']} failed: {rep['error'].get('message')}")
            out.append(rep["result"])
        return out

    async def call(self, method: str, *params: Any) -> Any:
        return (await self.batch([(method, list(params))]))[0]

    async def close(self) -> None:
        await self.http.aclose()


class _Economy:
    """One simulation run against a deployment on an anvil that only this run uses."""

    BLOCK_TXS = 300  # anvil slows down on blocks of thousands of transactions

    def __init__(self, scenario: Scenario, rpc: _Rpc, addresses: dict[str, str], genesis: int) -> None:
        self.sc = scenario
        self.rpc = rpc
        self.a = addresses
        self.genesis = genesis
        self.rng = random.Random(scenario.seed)
        self.admin = NodeKey(bytes.fromhex(dev_private_key(0)[2:]))
        self.oracle = NodeKey(bytes.fromhex(dev_private_key(1)[2:]))
        self.nonces: dict[str, int] = {}
        self.chain_id = 31337
        self.licences: list[_Licence] = []
        self.totals = Totals()
        self.txs = 0
        self.jobs: dict[int, int] = {}  # epoch -> job id
        self.job_count = 0
        self.deferred_sales = 0
        self.service_node: str | None = None
        self.av_values = [v for v, _ in scenario.availability]
        self.av_weights = [w for _, w in scenario.availability]
        self.pair = addresses.get("R1USDCPair")
        self.buyer = NodeKey(keccak(text="r1os economy simulation ND buyer")) if self.pair else self.admin
        self.sold_marks = (0, 0)  # ND and GND R1 minted when their owners last sold a share
        self.r1_is_token0 = True

    # -- chain access --
    def _tx(
        self, to: str, data: bytes, gas: int = 3_000_000, sender: NodeKey | None = None, value: int = 0
    ) -> str:
        """A signed legacy (EIP-155) transaction, raw hex; nonces are counted here, per sender."""
        key = sender or self.admin
        nonce = self.nonces.get(key.address, 0)
        fields = [nonce, 1, gas, bytes.fromhex(to[2:]), value, data]
        sig = key.sign_digest(keccak(rlp.encode([*fields, self.chain_id, 0, 0])))
        v = sig[64] - 27 + 2 * self.chain_id + 35
        raw: bytes = rlp.encode(
            [*fields, v, int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big")]
        )
        self.nonces[key.address] = nonce + 1
        return "0x" + raw.hex()

    async def _view(self, calls: Sequence[tuple[str, str, Sequence[str]]]) -> list[Any]:
        """eth_call a list of (contract name, signature, output types) in one batch."""
        reqs = [
            ("eth_call", [{"to": self.a[c], "data": "0x" + _selector(sig).hex()}, "latest"])
            for c, sig, _ in calls
        ]
        raw = await self.rpc.batch(reqs)
        out = []
        for (_, _, types), r in zip(calls, raw, strict=True):
            vals = decode(list(types), bytes.fromhex(r[2:]))
            out.append(vals[0] if len(vals) == 1 else vals)
        return out

    async def _calls(self, to: str, datas: Sequence[bytes], types: Sequence[str]) -> list[Any]:
        reqs = [("eth_call", [{"to": to, "data": "0x" + d.hex()}, "latest"]) for d in datas]
        out = []
        for r in await self.rpc.batch(reqs):
            vals = decode(list(types), bytes.fromhex(r[2:]))
            out.append(vals[0] if len(vals) == 1 else vals)
        return out

    async def _send_block(self, raw_txs: Sequence[str], timestamp: int) -> list[dict[str, Any]]:
        """Send the transactions, mine them in blocks of at most BLOCK_TXS from `timestamp` on (a
        second apart), and return their receipts in order."""
        receipts: list[dict[str, Any]] = []
        for k, i in enumerate(range(0, len(raw_txs), self.BLOCK_TXS)):
            chunk = raw_txs[i : i + self.BLOCK_TXS]
            hashes = await self.rpc.batch([("eth_sendRawTransaction", [tx]) for tx in chunk])
            await self.rpc.call("evm_mine", timestamp + k)
            got = await self.rpc.call("eth_getBlockReceipts", "latest")
            if [r["transactionHash"] for r in got] != hashes:
                raise ChainError(
                    "a block did not hold the transactions sent", hint="is the anvil ours alone?"
                )
            receipts += got
        self.txs += len(raw_txs)
        self._account(receipts)
        return receipts

    def _account(self, receipts: Sequence[dict[str, Any]]) -> None:
        nd, mnd, r1 = self.a["NDLicence"].lower(), self.a["MNDLicence"].lower(), self.a["R1"].lower()
        t = self.totals
        for rc in receipts:
            if int(rc["status"], 16) != 1:
                continue
            for lg in rc["logs"]:
                addr, topics = lg["address"].lower(), lg["topics"]
                if addr == r1 and topics[0] == T_TRANSFER:
                    amount = int(lg["data"], 16)
                    if topics[1] == ZERO_TOPIC:
                        t.minted += amount
                    if topics[2] == ZERO_TOPIC:
                        t.burned += amount
                elif topics[0] == T_CLAIMED and addr in (nd, mnd):
                    amount = int(lg["data"][-64:], 16)
                    if addr == nd:
                        t.minted_nd += amount
                    elif int(topics[1], 16) == 1:
                        t.minted_gnd += amount
                    else:
                        t.minted_mnd += amount
                elif topics[0] == T_WITHHELD and addr == mnd:
                    t.minted_mnd += int(lg["data"][-64:], 16)

    def _epoch_time(self, epoch: int) -> int:
        return self.genesis + epoch * DAY + 1

    def _fresh_node(self) -> str:
        return to_checksum_address(self.rng.randbytes(20))

    # -- what each epoch does --
    def _claim_tx(self, lic: _Licence, last: int) -> str | None:
        first = max(lic.next_epoch, lic.start)
        if last < first:
            return None
        n = min(last - first + 1, MAX_CLAIM_EPOCHS)
        avails = bytes(self.rng.choices(self.av_values, self.av_weights, k=n))
        sig = sign_availability(self.oracle, lic.node, first, avails)
        contract = self.a["NDLicence" if lic.kind == "ND" else "MNDLicence"]
        data = calldata("claim(uint256,uint256,bytes,bytes[])", lic.token, first, avails, [sig])
        lic.next_epoch = first + n
        return self._tx(contract, data, gas=200_000 + 700 * n)

    def _due(self, lic: _Licence, epoch: int, final: bool) -> bool:
        if max(lic.next_epoch, lic.start) >= epoch:
            return False
        every = self.sc.mnd_claim_every if lic.kind == "MND" else self.sc.claim_every
        return final or lic.kind == "GND" or (epoch - lic.start) % every == 0

    async def setup(self) -> None:
        count = await self.rpc.call("eth_getTransactionCount", self.admin.address, "latest")
        self.nonces[self.admin.address] = int(count, 16)
        # R1 minted while deploying (the pool's seed) counts as minted otherwise
        (self.totals.minted,) = await self._view([("R1", "totalSupply()", ["uint256"])])
        txs = [
            self._tx(self.a["R1"], calldata("approve(address,uint256)", self.a["NDLicence"], MAX_UINT)),
            self._tx(self.a["USDC"], calldata("mint(address,uint256)", self.admin.address, 10**15 * USDC)),
            self._tx(self.a["USDC"], calldata("approve(address,uint256)", self.a["PoAIEscrow"], MAX_UINT)),
        ]
        (nd_source,) = await self._view([("MNDLicence", "adoption_nd()", ["address"])])
        if int(nd_source, 16) == 0:
            txs.append(
                self._tx(
                    self.a["MNDLicence"],
                    calldata(
                        "set_adoption_sources(address,address)", self.a["NDLicence"], self.a["PoAIEscrow"]
                    ),
                )
            )
        # the GND and the MNDs, all held by the admin, each linked to its own node
        gnd_node = self._fresh_node()
        txs.append(self._tx(self.a["MNDLicence"], calldata("link(uint256,address)", 1, gnd_node)))
        self.licences.append(_Licence("GND", 1, gnd_node, 0, 1))
        links: list[str] = []  # sent in a second block, once the holders have gas money
        # Node Deed buyers: with a pool they buy R1 on it with USDC; without, the GND holder sells
        # them its R1 (the admin is both)
        if self.pair:
            b = self.buyer
            txs.append(self._tx(b.address, b"", gas=21_000, value=10**20))
            txs.append(self._tx(self.a["USDC"], calldata("mint(address,uint256)", b.address, 10**15 * USDC)))
            router = self.a["UniswapV2Router02"]
            links.append(
                self._tx(self.a["R1"], calldata("approve(address,uint256)", router, MAX_UINT), sender=b)
            )
            txs.append(self._tx(self.a["R1"], calldata("approve(address,uint256)", router, MAX_UINT)))
            links.append(
                self._tx(self.a["USDC"], calldata("approve(address,uint256)", router, MAX_UINT), sender=b)
            )
            links.append(
                self._tx(
                    self.a["R1"],
                    calldata("approve(address,uint256)", self.a["NDLicence"], MAX_UINT),
                    sender=b,
                )
            )
        # each MND has its own holder (the 2% cap is per holder), who links it; anyone may claim
        for i, pct in enumerate(self.sc.mnd_percent):
            amount = int(MAX_SUPPLY * pct) // 100
            token = 2 + i
            node = self._fresh_node()
            holder = NodeKey(keccak(text=f"r1os economy simulation MND holder {i}"))
            txs.append(self._tx(holder.address, b"", gas=21_000, value=10**18))
            mint = calldata("mint_mnd(address,uint256)", holder.address, amount)
            txs.append(self._tx(self.a["MNDLicence"], mint))
            link = calldata("link(uint256,address)", token, node)
            links.append(self._tx(self.a["MNDLicence"], link, sender=holder))
            self.licences.append(_Licence("MND", token, node, 0, max(0, self.sc.mnd_cliff_epochs)))
        latest = await self.rpc.call("eth_getBlockByNumber", "latest", False)
        now = int(latest["timestamp"], 16)
        if now + 2 >= self._epoch_time(1):
            raise ChainError("deploying took longer than an epoch", hint="try again on a less busy machine")
        receipts = await self._send_block(txs, now + 1)
        receipts += await self._send_block(links, now + 2)
        failed = [i for i, r in enumerate(receipts) if int(r["status"], 16) != 1]
        if failed:
            raise ChainError(f"setting up the simulation failed (transactions {failed} reverted)")
        if self.pair:
            (token0,) = await self._calls(self.pair, [calldata("token0()")], ["address"])
            self.r1_is_token0 = token0.lower() == self.a["R1"].lower()

    def _sell(self, seller: NodeKey, amount: int) -> str:
        path = [self.a["R1"], self.a["USDC"]]
        swap = calldata(
            "swapExactTokensForTokens(uint256,uint256,address[],address,uint256)",
            amount,
            0,
            path,
            seller.address,
            2**63,
        )
        return self._tx(self.a["UniswapV2Router02"], swap, gas=300_000, sender=seller)

    async def epoch(self, e: int, final: bool = False) -> None:
        txs: list[str] = []
        may_fail: set[int] = set()
        # with a pool: owners sell a share of what they mined last epoch (a sale fails, and is
        # dropped, when the owner's R1 went into deeds meanwhile)
        t = self.totals
        if self.pair and not final:
            for seller, mined, share in (
                (self.buyer, t.minted_nd - self.sold_marks[0], self.sc.nd_sell_share),
                (self.admin, t.minted_gnd - self.sold_marks[1], self.sc.gnd_sell_share),
            ):
                if int(mined * share) > 0:
                    may_fail.add(len(txs))
                    txs.append(self._sell(seller, int(mined * share)))
            self.sold_marks = (t.minted_nd, t.minted_gnd)
        # the GND first: its R1 is what the company sells to Node Deed buyers
        for lic in self.licences:
            if lic.kind == "GND" and self._due(lic, e, final):
                tx = self._claim_tx(lic, e - 1)
                if tx:
                    txs.append(tx)
        # PoAI: attest last epoch's job, open this epoch's
        job = self.jobs.pop(e - 1, None)
        if job is not None and self.service_node:
            sig = sign_attestation(self.oracle, self.a["PoAIEscrow"], job, e - 1, [self.service_node])
            txs.append(
                self._tx(
                    self.a["PoAIEscrow"],
                    calldata(
                        "attest(uint256,uint256,address[],bytes[])", job, e - 1, [self.service_node], [sig]
                    ),
                    gas=1_500_000,
                )
            )
        # Node Deed sales: buy and link
        (sold,) = await self._view([("NDLicence", "total_minted()", ["uint256"])])
        sales: list[tuple[int, int, str]] = []  # (index of the link transaction, token, node)
        if not final:
            want = int(schedule(self.sc.nd_sold, e)) - int(sold)
            for k in range(max(0, min(want, 46_224 - int(sold)))):
                token, node = int(sold) + 1 + k, self._fresh_node()
                if self.pair:  # the buyer's R1 comes from the pool
                    usdc_in = int(tier_usd(token - 1) * self.sc.buy_margin * USDC)
                    path = [self.a["USDC"], self.a["R1"]]
                    swap = calldata(
                        "swapExactTokensForTokens(uint256,uint256,address[],address,uint256)",
                        usdc_in,
                        0,
                        path,
                        self.buyer.address,
                        2**63,
                    )
                    txs.append(self._tx(self.a["UniswapV2Router02"], swap, gas=400_000, sender=self.buyer))
                buy = calldata("buy(uint256)", MAX_UINT)
                txs.append(self._tx(self.a["NDLicence"], buy, gas=1_500_000, sender=self.buyer))
                link = calldata("link(uint256,address)", token, node)
                txs.append(self._tx(self.a["NDLicence"], link, gas=400_000, sender=self.buyer))
                sales.append((len(txs) - 1, token, node))
            spend = int(schedule(self.sc.poai_usd_per_epoch, e) * USDC)
            if spend > 0 and self.service_node:
                txs.append(
                    self._tx(
                        self.a["PoAIEscrow"], calldata("create_job(uint256,uint256,uint256)", 1, 1, spend)
                    )
                )
                self.job_count += 1
                self.jobs[e] = self.job_count
        for lic in self.licences:
            if lic.kind != "GND" and self._due(lic, e, final):
                tx = self._claim_tx(lic, e - 1)
                if tx:
                    txs.append(tx)
        receipts = await self._send_block(txs, self._epoch_time(e))
        sale_txs = may_fail | set(
            range(sales[0][0] - (3 if self.pair else 2) + 1, sales[-1][0] + 1) if sales else ()
        )
        for i, r in enumerate(receipts):
            if int(r["status"], 16) != 1 and i not in sale_txs:
                raise ChainError(f"epoch {e}: transaction {i} to {r['to']} reverted")
        # a sale fails when the company has no R1 left to sell: it is tried again next epoch
        for link_index, token, node in sales:
            if int(receipts[link_index]["status"], 16) == 1:
                self.licences.append(_Licence("ND", token, node, e, e))
                self.service_node = self.service_node or node
            else:
                self.deferred_sales += 1

    async def snapshot(self, e: int) -> dict[str, Any]:
        (supply, sold, volume, adoption) = await self._view(
            [
                ("R1", "totalSupply()", ["uint256"]),
                ("NDLicence", "total_minted()", ["uint256"]),
                ("PoAIEscrow", "total_volume()", ["uint256"]),
                ("MNDLicence", "adoption()", ["uint256"]),
            ]
        )
        mnds = [lic.token for lic in self.licences if lic.kind == "MND"]
        withheld = sum(
            await self._calls(
                self.a["MNDLicence"], [calldata("withheld_amount(uint256)", t) for t in mnds], ["uint256"]
            )
        )
        price = r1_pool = usdc_pool = None
        if self.pair:
            ((r0, r1_, _),) = await self._calls(
                self.pair, [calldata("getReserves()")], ["uint112", "uint112", "uint32"]
            )
            r1_pool, usdc_pool = (r0, r1_) if self.r1_is_token0 else (r1_, r0)
            price = (usdc_pool / USDC) / (r1_pool / R1) if r1_pool else None
        t = self.totals
        return {
            "epoch": e,
            "nd_sold": int(sold),
            "poai_volume_usd": int(volume) / USDC,
            "adoption": int(adoption) / 10**18,
            "minted_nd": t.minted_nd / R1,
            "minted_mnd": t.minted_mnd / R1,
            "minted_gnd": t.minted_gnd / R1,
            "minted_other": t.minted_other / R1,
            "burned": t.burned / R1,
            "total_supply": int(supply) / R1,
            "mnd_withheld": withheld / R1,
            "pool_price_usd": price,
            "pool_r1": None if r1_pool is None else r1_pool / R1,
            "pool_usdc": None if usdc_pool is None else usdc_pool / USDC,
            "_wei": (int(supply), int(sold), int(volume), int(adoption), withheld),
        }

    async def check_against_contracts(self, total_supply: int) -> None:
        """The event totals must equal the contracts' state: claimed amounts and the R1 supply."""
        t = self.totals
        nds = [lic.token for lic in self.licences if lic.kind == "ND"]
        mnds = [lic.token for lic in self.licences if lic.kind == "MND"]
        claimed_nd = 0
        for i in range(0, len(nds), 2000):
            chunk = [calldata("claimed_amount(uint256)", tok) for tok in nds[i : i + 2000]]
            claimed_nd += sum(await self._calls(self.a["NDLicence"], chunk, ["uint256"]))
        claimed = await self._calls(
            self.a["MNDLicence"],
            [calldata("claimed_amount(uint256)", tok) for tok in [1, *mnds]],
            ["uint256"],
        )
        checks = {
            "ND minted == sum of NDLicence.claimed_amount": (t.minted_nd, claimed_nd),
            "GND minted == MNDLicence.claimed_amount(1)": (t.minted_gnd, claimed[0]),
            "MND minted == sum of MNDLicence.claimed_amount": (t.minted_mnd, sum(claimed[1:])),
            "minted - burned == R1.totalSupply()": (t.minted - t.burned, total_supply),
        }
        bad = [f"{k}: {a} != {b}" for k, (a, b) in checks.items() if a != b]
        if bad:
            raise ChainError("the simulation's totals disagree with the contracts: " + "; ".join(bad))


async def simulate(
    scenario: Scenario,
    out_dir: Path | None = None,
    *,
    epochs: int | None = None,
    plot: bool = True,
    progress: Callable[[int, int], None] | None = None,
    anvil: SimulationAnvil | None = None,
) -> SimulationResult:
    """Run `scenario` (its first `epochs` epochs if given) on a private anvil; write CSV and plots.

    `anvil`: a started `SimulationAnvil` to run on (left running, so a caller can read the chain
    afterwards); by default one is started and stopped here."""
    n_epochs = min(epochs or scenario.epochs, scenario.epochs)
    started = time.perf_counter()
    own = anvil is None
    if anvil is None:
        anvil = SimulationAnvil()
        await anvil.start()
    rpc = _Rpc(anvil.rpc_url)
    try:
        oracle = NodeKey(bytes.fromhex(dev_private_key(1)[2:]))
        pool: dict[str, Any] = {}
        if scenario.pool:
            from r1os.chain import dex

            if not dex.available():
                raise ChainError(
                    "the scenario wants an R1/USDC pool but Uniswap V2's artifacts are missing",
                    hint='npm install at the repository root, or set "pool": false in the scenario',
                )
            seed = (int(scenario.pool_r1 * R1), int(scenario.pool_usdc * USDC))
            pool = {"uniswap": "deploy", "seed_pool": seed, "mint_seed": True}
        deployment = await deploy(
            anvil.rpc_url,
            dev_private_key(0),
            epoch_seconds=DAY,
            mnd_cliff_epochs=scenario.mnd_cliff_epochs,
            oracles=[oracle.address],
            min_signatures=1,
            **pool,
        )
        await rpc.call("evm_setAutomine", False)
        eco = _Economy(scenario, rpc, dict(deployment.contracts), deployment.genesis_time)
        await eco.setup()
        rows = []
        for e in range(1, n_epochs + 1):
            await eco.epoch(e, final=e == n_epochs)
            rows.append(await eco.snapshot(e))
            if progress:
                progress(e, n_epochs)
        last = rows[-1]
        supply, sold, volume, adoption, withheld = last["_wei"]
        await eco.check_against_contracts(supply)
    finally:
        await rpc.close()
        if own:
            await anvil.stop()
    for r in rows:
        r.pop("_wei")
    result = SimulationResult(
        scenario=scenario.name,
        epochs=n_epochs,
        seconds=time.perf_counter() - started,
        totals=eco.totals,
        total_supply=supply,
        nd_sold=sold,
        poai_volume=volume,
        adoption=adoption,
        mnd_withheld=withheld,
        transactions=eco.txs,
        has_pool=eco.pair is not None,
        contracts=dict(deployment.contracts),
        rows=rows,
    )
    if out_dir is not None:
        result.files = write_outputs(result, out_dir, plot=plot)
    return result


class SimulationAnvil(Anvil):
    """anvil for a simulation: no block gas limit (one block per epoch) and a free gas price."""

    def _argv(self) -> list[str]:
        return [*super()._argv(), "--disable-block-gas-limit", "--base-fee", "0", "--prune-history"]


# --- outputs --------------------------------------------------------------------------------------


def write_outputs(result: SimulationResult, out_dir: Path, *, plot: bool = True) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "economy.csv"
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        for row in result.rows:
            w.writerow({k: ("" if row[k] is None else row[k]) for k in COLUMNS})
    files = [path]
    if plot:
        files += plot_outputs(result, out_dir)
    return files


def plot_outputs(result: SimulationResult, out_dir: Path) -> list[Path]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise ChainError(
            "matplotlib is not installed", hint="pip install -e '.[dev]' (or pip install matplotlib)"
        ) from exc
    rows = result.rows
    x = [r["epoch"] for r in rows]
    mil = 1e6
    fig, ax = plt.subplots(figsize=(10, 6))
    ax.plot(
        x,
        [r["total_supply"] / mil for r in rows],
        label="circulating (total supply)",
        linewidth=2.2,
        color="black",
    )
    ax.plot(x, [r["minted_nd"] / mil for r in rows], label="minted by Node Deeds")
    ax.plot(x, [r["minted_mnd"] / mil for r in rows], label="minted by Master Node Deeds")
    ax.plot(x, [r["minted_gnd"] / mil for r in rows], label="minted by the Genesis Node Deed")
    ax.plot(x, [r["burned"] / mil for r in rows], label="burned", linestyle="--")
    ax.plot(x, [r["mnd_withheld"] / mil for r in rows], label="MND withheld (adoption < 1)", linestyle=":")
    ax.set_xlabel("epoch (days)")
    ax.set_ylabel("million R1")
    ax.set_title(f"R1 supply, scenario {result.scenario!r}")
    ax2 = ax.twinx()
    ax2.plot(x, [r["adoption"] for r in rows], color="grey", alpha=0.5, label="adoption (right axis)")
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("adoption")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    supply_png = out_dir / "supply.png"
    fig.savefig(supply_png, dpi=110)
    plt.close(fig)

    fig, (a1, a2, a3) = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    if result.has_pool:
        a1.plot(x, [r["pool_price_usd"] for r in rows], label="R1 price on the R1/USDC pool")
        a2.plot(x, [r["pool_r1"] / mil for r in rows], label="R1 in the pool (million R1)")
        a2.plot(x, [r["pool_usdc"] / mil for r in rows], label="USDC in the pool (million USD)")
        a2.plot(x, [2 * r["pool_usdc"] / mil for r in rows], label="liquidity, both sides (million USD)")
        a1.legend(loc="upper left", fontsize=8)
        a2.legend(loc="upper left", fontsize=8)
    else:
        a1.text(0.5, 0.5, "no pool in this deployment", ha="center", transform=a1.transAxes)
    a1.set_ylabel("USD per R1")
    a2.set_ylabel("million")
    a3.plot(x, [r["nd_sold"] for r in rows], color="tab:orange", label="Node Deeds sold")
    a3.set_ylabel("Node Deeds")
    a3b = a3.twinx()
    a3b.plot(
        x, [r["poai_volume_usd"] / mil for r in rows], color="tab:purple", label="PoAI volume (million USD)"
    )
    a3b.set_ylabel("million USD")
    h1, l1 = a3.get_legend_handles_labels()
    h2, l2 = a3b.get_legend_handles_labels()
    a3.legend(h1 + h2, l1 + l2, loc="upper left", fontsize=8)
    a3.set_xlabel("epoch (days)")
    a1.set_title(f"R1/USDC pool and adoption inputs, scenario {result.scenario!r}")
    for a in (a1, a2, a3):
        a.grid(alpha=0.3)
    fig.tight_layout()
    market_png = out_dir / "market.png"
    fig.savefig(market_png, dpi=110)
    plt.close(fig)
    return [supply_png, market_png]
