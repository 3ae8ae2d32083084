"""Deploy the compiled r1os contracts once into titanoboa; every test runs inside a state snapshot.

The bytecode is the one `r1os.chain.compile` produces (what real deployments use), loaded into boa
through its ABI; oracles are eth_account keys that sign exactly as the r1os oracles do.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import boa
import pytest
from eth_abi import decode, encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from eth_utils import keccak

from r1os.chain.compile import CompiledContract, compile_all

from . import model

EPOCH = 60
COOLDOWN = 90
CLIFF = 3
N_ORACLES = 5
THRESHOLD = 3
R1 = 10**18
USDC = 10**6

_compiled: dict[str, CompiledContract] = {}


def compiled(name: str) -> CompiledContract:
    if not _compiled:
        _compiled.update(compile_all())
    return _compiled[name]


class DeployReverted(Exception):
    """A constructor reverted; the message is its revert reason."""


def deploy(name: str, *args: Any, sender: str | None = None) -> Any:
    """Deploy `name` from the compile helper's bytecode and return a boa ABI contract."""
    c = compiled(name)
    ctor = next((e for e in c.abi if e["type"] == "constructor"), {"inputs": []})
    types = [i["type"] for i in ctor["inputs"]]
    code = c.bytecode + (encode(types, list(args)) if types else b"")
    with boa.env.prank(sender or boa.env.eoa):
        address, computation = boa.env.deploy(bytecode=code)
    if computation.is_error:
        out = bytes(computation.output)
        reason = decode(["string"], out[4:])[0] if out[:4] == bytes.fromhex("08c379a0") else out.hex()
        raise DeployReverted(reason)
    return boa.loads_abi(json.dumps(c.abi), name=name).at(address)


def oracle_key(i: int) -> LocalAccount:
    return Account.from_key(keccak(f"r1os test oracle {i}".encode()))


def sign(inner: bytes, signers: Sequence[LocalAccount]) -> list[bytes]:
    return [bytes(a.sign_message(encode_defunct(primitive=inner)).signature) for a in signers]


@dataclass
class System:
    r1: Any
    ctrl: Any
    nd: Any
    mnd: Any
    usdc: Any
    escrow: Any
    deployer: str
    lp: str
    company: str
    genesis: int
    oracles: list[LocalAccount] = field(default_factory=list)

    # -- time --
    def epoch(self) -> int:
        return model.epoch_of(boa.env.timestamp, self.genesis, EPOCH)

    def advance_epochs(self, n: int) -> None:
        boa.env.time_travel(seconds=n * EPOCH)

    def advance(self, seconds: int) -> None:
        boa.env.time_travel(seconds=seconds)

    # -- accounts --
    def user(self, r1: int = 0, usdc: int = 0) -> str:
        addr = boa.env.generate_address()
        if r1:
            with boa.env.prank(self.deployer):
                self.r1.mint(addr, r1)
        if usdc:
            self.usdc.mint(addr, usdc)
        return str(addr)

    def node(self) -> str:
        return str(boa.env.generate_address())

    # -- signatures --
    def sign_availability(
        self, node: str, first: int, avails: Sequence[int], signers: Sequence[LocalAccount] | None = None
    ) -> list[bytes]:
        signers = self.oracles[:THRESHOLD] if signers is None else signers
        return sign(model.availability_inner(node, first, avails), signers)

    def sign_attestation(
        self, job_id: int, epoch: int, nodes: Sequence[str], signers: Sequence[LocalAccount] | None = None
    ) -> list[bytes]:
        signers = self.oracles[:THRESHOLD] if signers is None else signers
        return sign(model.attestation_inner(self.escrow.address, job_id, epoch, nodes), signers)

    # -- licences --
    def buy_nd(self, buyer: str) -> int:
        price = self.nd.current_price()
        with boa.env.prank(buyer):
            self.r1.approve(self.nd.address, price)
            return int(self.nd.buy(price))

    def linked_nd(self) -> tuple[str, int, str]:
        """A fresh owner with a deed linked to a fresh node: (owner, token_id, node)."""
        owner = self.user(r1=self.nd.current_price())
        token = self.buy_nd(owner)
        node = self.node()
        with boa.env.prank(owner):
            self.nd.link(token, node)
        return owner, token, node

    def claim_nd(self, token: int, first: int, avails: Sequence[int], node: str | None = None) -> int:
        node = node or self.nd.node_of(token)
        sigs = self.sign_availability(node, first, avails)
        return int(self.nd.claim(token, first, bytes(avails), sigs))


def _deploy_system() -> System:
    deployer = str(boa.env.eoa)
    genesis = boa.env.timestamp
    r1 = deploy("R1")
    ctrl = deploy("Controller", genesis, EPOCH, COOLDOWN, CLIFF)
    lp, company = str(boa.env.generate_address()), str(boa.env.generate_address())
    nd = deploy("NDLicence", r1.address, ctrl.address, lp, company)
    mnd = deploy("MNDLicence", r1.address, ctrl.address)
    usdc = deploy("MockUSDC")
    escrow = deploy("PoAIEscrow", usdc.address, ctrl.address, "0x" + "00" * 20)
    r1.set_minter(nd.address, True)
    r1.set_minter(mnd.address, True)
    ctrl.set_licence_contracts(nd.address, mnd.address)
    oracles = [oracle_key(i) for i in range(N_ORACLES)]
    for o in oracles:
        ctrl.add_oracle(o.address)
    ctrl.set_min_signatures(THRESHOLD)
    r1.set_minter(deployer, True)
    return System(r1, ctrl, nd, mnd, usdc, escrow, deployer, lp, company, genesis, oracles)


@pytest.fixture(scope="session")
def system_base() -> System:
    return _deploy_system()


@pytest.fixture(autouse=True)
def _isolate(system_base: System) -> Iterator[None]:
    """Every test runs in a snapshot: its state changes and clock moves are rolled back after it."""
    with boa.env.anchor():
        yield


@pytest.fixture
def s(system_base: System) -> System:
    """The deployed system (genesis at the session start; each test starts in epoch 0)."""
    return system_base


_layouts: dict[str, dict[str, Any]] = {}


def storage_slot(name: str, var: str, key: int | None = None) -> int:
    """Storage slot of top-level variable `var` of contract `name` (or of `var[key]` for a HashMap)."""
    if name not in _layouts:
        from pathlib import Path

        from vyper.compiler import compile_code
        from vyper.compiler.input_bundle import FilesystemInputBundle

        from r1os.chain.compile import search_paths, source_path

        path = source_path(name)
        bundle = FilesystemInputBundle([Path(p) for p in search_paths()])
        out = compile_code(
            path.read_text(),
            contract_path=path.name,
            resolved_path=path,
            input_bundle=bundle,
            output_formats=["layout"],
        )
        _layouts[name] = out["layout"]["storage_layout"]
    slot = int(_layouts[name][var]["slot"])
    if key is None:
        return slot
    return int.from_bytes(keccak(slot.to_bytes(32, "big") + key.to_bytes(32, "big")), "big")


def poke(contract: Any, name: str, var: str, value: int, key: int | None = None) -> None:
    """Write a storage word directly: to reach states (a sold-out tier) too slow to reach by calls."""
    boa.env.set_storage(contract.address, storage_slot(name, var, key), value)


def events(contract: Any, name: str) -> list[Any]:
    """Events called `name` emitted by `contract` in its last call."""
    return [
        e for e in contract.get_logs() if type(e).__name__ == name and str(e.address) == str(contract.address)
    ]
