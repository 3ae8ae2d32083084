"""The chain half of a local devnet: a background anvil with the contracts deployed and nodes licensed.

Called by the devnet manager (`r1os devnet up|down|status`); everything lives under `<dir>/chain/`:
`anvil.json`/`anvil.pid` (the running anvil), `anvil.log`, `state.json` (chain state, saved when anvil
stops and loaded when it starts again, so a devnet restart keeps balances and licences) and
`deployment.json` (a `Deployment`: rpc, chain id, contract addresses, genesis, epoch length).

API (signatures are stable):

- `setup_devnet_chain(dir, edge_keys, oracle_addresses, epoch_seconds=60) -> ChainInfo`
  (blocking; `await setup_devnet_chain_async(...)` inside an event loop) starts anvil (or restarts it
  on its saved state), deploys the contracts unless they are already there (with Uniswap V2 and an
  R1/USDC pool seeded at $1 per R1, which prices the Node Deeds), registers the oracles
  (threshold = majority: 2 of 3), gives every node and oracle ETH for gas, and for each edge key
  (private key hex; the node key is also the operator key on a devnet) mints R1, buys one ND and
  links it to the node. Each oracle address gets the GND or an MND linked, so oracles are licensed
  nodes too. Idempotent: nodes already linked are left alone.
- `stop_devnet_chain(dir) -> bool` stops anvil (state saved); True if it was running.
- `chain_status(dir) -> {"rpc", "chain_id", "contracts"} | None` from `deployment.json` (no RPC call).
- `licence_of(dir, node) -> {"type": "ND"|"MND"|"GND", "token_id": int} | None`, read on-chain
  (blocking; `await licence_of_async(dir, node)` inside an event loop).
- `deployment_of(dir) -> Deployment` and `devnet_client(dir, key=None) -> ChainClient` for everything else.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel

from r1os.chain.anvil import Anvil, detached_info, dev_private_key, stop_detached
from r1os.chain.client import ChainClient
from r1os.chain.deploy import deploy
from r1os.chain.deployment import Deployment
from r1os.chain.provider import RpcProvider
from r1os.chain.units import R1_DECIMALS, USDC_DECIMALS
from r1os.errors import ChainError, DevnetError
from r1os.identity import NodeKey, normalize_address

log = logging.getLogger(__name__)
T = TypeVar("T")

NODE_ETH = 10 * 10**18
"""Gas money per node and oracle."""
SPARE_R1 = 1_000 * 10**R1_DECIMALS
"""R1 each edge operator keeps after buying its ND (for transfers and demos)."""
ORACLE_MND_AMOUNT = 100_000 * 10**R1_DECIMALS
POOL_R1 = 1_000_000 * 10**R1_DECIMALS
POOL_USDC = 1_000_000 * 10**USDC_DECIMALS
"""The devnet pool's first liquidity: $1 per R1. Its R1 is minted by the deployer, which a devnet
(only) makes an R1 minter, as it does to fund the operators' purchases."""
PRICE_SLACK_PERCENT = 2
"""How far above the quoted ND price an edge operator accepts to pay: the pool moves with each sale."""


class LicenceRef(BaseModel):
    type: str
    token_id: int


class ChainInfo(BaseModel):
    """What `setup_devnet_chain` made: where the chain is and which licence each node holds."""

    rpc: str
    chain_id: int
    contracts: dict[str, str]
    genesis_time: int
    epoch_seconds: int
    deployer: str
    deployment_file: str
    licences: dict[str, LicenceRef]
    """node address -> licence linked to it (edge nodes: ND; oracles: GND/MND)."""


def chain_dir(dir: Path) -> Path:
    return Path(dir) / "chain"


def deployment_of(dir: Path) -> Deployment:
    """The deployment of the devnet in `dir` (ChainError with a hint if there is none)."""
    return Deployment.load(chain_dir(dir) / "deployment.json")


def devnet_client(dir: Path, key: Any = None) -> ChainClient:
    """A client for the devnet chain in `dir`, signing with `key` (default: read-only)."""
    dep = deployment_of(dir)
    return ChainClient(dep, key, provider=RpcProvider(dep.rpc, devnet=True))


async def _start_anvil(cdir: Path) -> str:
    running = detached_info(cdir)
    if running is not None:
        return str(running["rpc"])
    try:
        info = await Anvil(state_dir=cdir).start_detached()
    except ChainError as exc:
        raise DevnetError(f"cannot start the devnet chain: {exc}", hint=exc.hint) from None
    return str(info["rpc"])


async def _existing_deployment(cdir: Path, rpc: str) -> Deployment | None:
    """The saved deployment if its contracts are still on this chain (state was reloaded)."""
    file = cdir / "deployment.json"
    if not file.exists():
        return None
    dep = Deployment.load(file)
    client = ChainClient(dep.model_copy(update={"rpc": rpc}))
    code = await client._run(
        "eth_getCode", lambda: client.w3.eth.get_code(client.contract("Controller").address)
    )
    if not code:
        log.warning("devnet chain state lost; deploying the contracts again")
        return None
    dep = dep.model_copy(update={"rpc": rpc})
    dep.save(file)
    return dep


async def _license_edge(admin: ChainClient, key: NodeKey) -> LicenceRef:
    node = admin.with_key(key)
    have = await node.licence_of(key.address)
    if have is not None:
        return LicenceRef(type=have.type, token_id=have.token_id)
    limit = await node.nd_price() * (100 + PRICE_SLACK_PERCENT) // 100
    await admin.send_eth(key.address, NODE_ETH)
    await admin.mint_r1(key.address, limit + SPARE_R1)
    token_id = await node.buy_nd(limit)
    await node.link(token_id, key.address)
    return LicenceRef(type="ND", token_id=token_id)


async def _license_oracles(admin: ChainClient, oracles: Sequence[str]) -> dict[str, LicenceRef]:
    """GND to the first oracle, an MND (held by the deployer) to each other one."""
    out: dict[str, LicenceRef] = {}
    for i, oracle in enumerate(oracles):
        have = await admin.licence_of(oracle)
        if have is not None:
            out[oracle] = LicenceRef(type=have.type, token_id=have.token_id)
            continue
        if await admin.eth_balance(oracle) < NODE_ETH // 2:
            await admin.send_eth(oracle, NODE_ETH)
        if i == 0 and (await admin.licence(1, "GND")).node is None:
            token_id, kind = 1, "GND"
        else:
            token_id, kind = await admin.mint_mnd(admin.sender, ORACLE_MND_AMOUNT // 10), "MND"
        await admin.link(token_id, oracle, kind)
        out[oracle] = LicenceRef(type=kind, token_id=token_id)
    return out


def _blocking(coro: Coroutine[Any, Any, T], async_name: str) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    coro.close()
    raise DevnetError(f"called from an event loop: use `await {async_name}(...)` there")


def setup_devnet_chain(
    dir: Path, edge_keys: list[str], oracle_addresses: list[str], epoch_seconds: int = 60
) -> ChainInfo:
    """Blocking form of `setup_devnet_chain_async` (for the devnet manager and scripts)."""
    return _blocking(
        setup_devnet_chain_async(dir, edge_keys, oracle_addresses, epoch_seconds),
        "setup_devnet_chain_async",
    )


async def setup_devnet_chain_async(
    dir: Path,
    edge_keys: list[str],
    oracle_addresses: list[str],
    epoch_seconds: int = 60,
) -> ChainInfo:
    """Start (or resume) the devnet chain in `dir/chain`, deployed and with every node licensed."""
    cdir = chain_dir(dir)
    cdir.mkdir(parents=True, exist_ok=True)
    oracles = [normalize_address(o) for o in oracle_addresses]
    keys = [NodeKey.from_hex(k) for k in edge_keys]
    rpc = await _start_anvil(cdir)
    try:
        deployer_key = dev_private_key(0)
        dep = await _existing_deployment(cdir, rpc)
        if dep is None:
            dep = await deploy(
                rpc,
                deployer_key,
                epoch_seconds=epoch_seconds,
                link_cooldown=epoch_seconds,
                mnd_cliff_epochs=2,
                oracles=oracles,
                uniswap="deploy",
                seed_pool=(POOL_R1, POOL_USDC),
                mint_seed=True,
                out=cdir / "deployment.json",
            )
        admin = ChainClient(dep, deployer_key, provider=RpcProvider(rpc, devnet=True))
        if not await admin.call("R1", "is_minter", admin.sender):
            await admin.transact("R1", "set_minter", admin.sender, True)
        for oracle in oracles:
            if not await admin.is_oracle(oracle):
                await admin.add_oracle(oracle)
        if oracles and await admin.min_signatures() != len(oracles) // 2 + 1:
            await admin.set_min_signatures(len(oracles) // 2 + 1)
        licences = await _license_oracles(admin, oracles)
        # Edge nodes buy concurrently (each signs its own transactions); the deployer's funding
        # transactions are serialised by its client's lock.
        refs = await asyncio.gather(*(_license_edge(admin, k) for k in keys))
        licences.update({k.address: ref for k, ref in zip(keys, refs, strict=True)})
    except BaseException:
        log.error("devnet chain setup failed; logs in %s", cdir / "anvil.log")
        raise
    (cdir / "licences.json").write_text(
        json.dumps({a: r.model_dump() for a, r in licences.items()}, indent=2) + "\n"
    )
    return ChainInfo(
        rpc=dep.rpc,
        chain_id=dep.chain_id,
        contracts=dep.contracts,
        genesis_time=dep.genesis_time,
        epoch_seconds=dep.epoch_seconds,
        deployer=dep.deployer,
        deployment_file=str(cdir / "deployment.json"),
        licences=licences,
    )


def stop_devnet_chain(dir: Path) -> bool:
    """Stop the devnet's anvil (its state is saved for the next start); True if it was running."""
    return stop_detached(chain_dir(dir))


def chain_status(dir: Path) -> dict[str, Any] | None:
    """`{"rpc", "chain_id", "contracts"}` of the devnet in `dir`, or None if it has no chain yet."""
    try:
        dep = deployment_of(dir)
    except ChainError:
        return None
    return {"rpc": dep.rpc, "chain_id": dep.chain_id, "contracts": dict(dep.contracts)}


def licence_of(dir: Path, node: str) -> dict[str, Any] | None:
    """`{"type": "ND"|"MND"|"GND", "token_id": int}` of the licence linked to `node`, or None."""
    return _blocking(licence_of_async(dir, node), "licence_of_async")


async def licence_of_async(dir: Path, node: str) -> dict[str, Any] | None:
    """The async form of `licence_of`."""
    lic = await devnet_client(dir).licence_of(node)
    return None if lic is None else {"type": lic.type, "token_id": lic.token_id}
