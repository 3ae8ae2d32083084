"""Gas used by the r1os contracts' hot paths (claim, link, buy), against a plain ERC-20 transfer.

Buy and attest are measured twice: without a pool (owner-set price, shares paid in R1 / stablecoin
burned) and with the R1/USDC Uniswap V2 pool (deployed from its npm artifacts): the sale's swaps and
liquidity, and the burn share bought back as R1.

Runs the bytecode from `r1os.chain.compile` in titanoboa. Each figure is what a transaction receipt
would show: execution gas with fresh (cold) storage and account access, plus the 21,000 base cost and
the calldata cost, minus the capped refund. The baseline, measured in the same run, is an R1
`transfer` to an address that holds no R1 yet (the common case for a payout).

    .venv/bin/python bench/gas.py
"""

from __future__ import annotations

import json
from typing import Any

import boa
from eth_abi import encode
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import keccak, to_canonical_address

from r1os.chain.compile import compile_all

EPOCH = 60
COOLDOWN = 90
R1 = 10**18
N_ORACLES = 5

_compiled = compile_all()


def deploy(name: str, *args: Any) -> Any:
    c = _compiled[name]
    ctor = next((e for e in c.abi if e["type"] == "constructor"), {"inputs": []})
    types = [i["type"] for i in ctor["inputs"]]
    address, _ = boa.env.deploy(bytecode=c.bytecode + (encode(types, list(args)) if types else b""))
    return boa.loads_abi(json.dumps(c.abi), name=name).at(address)


def measure(contract: Any, fn: str, *args: Any, sender: str | None = None) -> int:
    """Receipt gas of one call made as a fresh transaction."""
    # end the previous "transaction": commit storage so EIP-2200/3529 SSTORE pricing sees the right
    # original values, and reset EIP-2929 warm/cold tracking (boa keeps both across calls otherwise)
    boa.env.evm.vm.state.lock_changes()
    boa.env.reset_gas_used()
    with boa.env.prank(sender or boa.env.eoa):
        getattr(contract, fn)(*args)
    comp = contract._computation
    data = bytes(comp.msg.data)
    intrinsic = 21_000 + sum(16 if b else 4 for b in data)
    total = intrinsic + comp.get_gas_used()
    return total - min(comp.get_gas_refund(), total // 5)


def sign_availability(oracles: list[Any], node: str, first: int, avails: list[int]) -> list[bytes]:
    last = first + len(avails) - 1
    inner = keccak(
        to_canonical_address(node) + first.to_bytes(32, "big") + last.to_bytes(32, "big") + bytes(avails)
    )
    return [bytes(o.sign_message(encode_defunct(primitive=inner)).signature) for o in oracles]


def sign_attestation(oracles: list[Any], escrow: str, job: int, epoch: int, nodes: list[str]) -> list[bytes]:
    words = b"".join(bytes(12) + to_canonical_address(n) for n in nodes)
    inner = keccak(to_canonical_address(escrow) + job.to_bytes(32, "big") + epoch.to_bytes(32, "big") + words)
    return [bytes(o.sign_message(encode_defunct(primitive=inner)).signature) for o in oracles]


def main() -> None:
    deployer = str(boa.env.eoa)
    genesis = boa.env.timestamp
    r1 = deploy("R1")
    ctrl = deploy("Controller", genesis, EPOCH, COOLDOWN, 2)
    lp, company = str(boa.env.generate_address()), str(boa.env.generate_address())
    nd = deploy("NDLicence", r1.address, ctrl.address, lp, company)
    mnd = deploy("MNDLicence", r1.address, ctrl.address)
    usdc = deploy("MockUSDC")
    escrow = deploy("PoAIEscrow", usdc.address, ctrl.address, "0x" + "00" * 20)
    r1.set_minter(nd.address, True)
    r1.set_minter(mnd.address, True)
    r1.set_minter(deployer, True)
    ctrl.set_licence_contracts(nd.address, mnd.address)
    oracles = [Account.from_key(keccak(f"bench oracle {i}".encode())) for i in range(N_ORACLES)]
    for o in oracles:
        ctrl.add_oracle(o.address)
    ctrl.set_min_signatures(3)

    rows: list[tuple[str, int]] = []

    # baseline: plain ERC-20 transfers
    holder = str(boa.env.generate_address())
    r1.mint(holder, 1000 * R1)
    fresh = str(boa.env.generate_address())
    base = measure(r1, "transfer", fresh, R1, sender=holder)
    rows.append(("R1.transfer to a new holder (baseline)", base))
    rows.append(("R1.transfer to an existing holder", measure(r1, "transfer", fresh, R1, sender=holder)))

    # buy
    buyers = [str(boa.env.generate_address()) for _ in range(3)]
    for b in buyers:
        r1.mint(b, 10_000 * R1)
        with boa.env.prank(b):
            r1.approve(nd.address, 2**256 - 1)
    price = nd.current_price()
    rows.append(("ND.buy (first deed ever)", measure(nd, "buy", price, sender=buyers[0])))
    rows.append(("ND.buy (buyer's first deed)", measure(nd, "buy", price, sender=buyers[1])))
    rows.append(("ND.buy (buyer's second deed)", measure(nd, "buy", price, sender=buyers[1])))

    # link
    node = str(boa.env.generate_address())
    rows.append(("ND.link (first link)", measure(nd, "link", 1, node, sender=buyers[0])))
    node2 = str(boa.env.generate_address())
    rows.append(("ND.link (second deed)", measure(nd, "link", 2, node2, sender=buyers[1])))

    # claims, with 3 of 5 oracle signatures
    first = ctrl.current_epoch()
    boa.env.time_travel(seconds=EPOCH * 450)
    epoch = first

    def claim(label: str, n: int, k: int = 3) -> None:
        nonlocal epoch
        avails = [230 + (i % 26) for i in range(n)]
        sigs = sign_availability(oracles[:k], node, epoch, avails)
        rows.append((label, measure(nd, "claim", 1, epoch, bytes(avails), sigs)))
        epoch += n

    claim("ND.claim, deed's first claim, 1 epoch", 1)
    for n in (1, 7, 30, 365):
        claim(f"ND.claim, {n} epoch(s), 3 signatures", n)
    # what each extra oracle signature costs
    for k in (1, 5):
        ctrl.set_min_signatures(k)
        claim(f"ND.claim, 1 epoch, {k} signature(s)", 1, k)
    ctrl.set_min_signatures(3)

    # relink after the cooldown (claims are up to date first)
    now = ctrl.current_epoch()
    del node2
    avails = [255] * (now - epoch)
    nd.claim(1, epoch, bytes(avails), sign_availability(oracles[:3], node, epoch, avails))
    rows.append(
        (
            "ND.link (relink to a new node)",
            measure(nd, "link", 1, str(boa.env.generate_address()), sender=buyers[0]),
        )
    )

    # MND and PoAI for context
    rows.append(("MND.mint_mnd", measure(mnd, "mint_mnd", str(boa.env.generate_address()), 1000 * R1)))
    job_owner = str(boa.env.generate_address())
    usdc.mint(job_owner, 10**12)
    with boa.env.prank(job_owner):
        usdc.approve(escrow.address, 2**256 - 1)
    rows.append(("PoAIEscrow.create_job", measure(escrow, "create_job", 4, 10, 10**6, sender=job_owner)))
    served = []
    for _ in range(4):
        b = buyers[2]
        with boa.env.prank(b):
            token = nd.buy(nd.current_price())
            n_ = str(boa.env.generate_address())
            nd.link(token, n_)
        served.append(n_)
    boa.env.time_travel(seconds=EPOCH)
    ep = ctrl.current_epoch() - 1
    sigs = sign_attestation(oracles[:3], escrow.address, 1, ep, served)
    rows.append(("PoAIEscrow.attest, 4 nodes", measure(escrow, "attest", 1, ep, served, sigs)))

    # the same with the R1/USDC pool
    from r1os.chain import dex

    def deploy_artifact(name: str, *args: Any) -> Any:
        art = dex.artifact(name)
        ctor = next((e for e in art.abi if e["type"] == "constructor"), {"inputs": []})
        types = [i["type"] for i in ctor["inputs"]]
        address, _ = boa.env.deploy(bytecode=art.bytecode + (encode(types, list(args)) if types else b""))
        return boa.loads_abi(json.dumps(art.abi), name=name).at(address)

    factory = deploy_artifact("UniswapV2Factory", deployer)
    router = deploy_artifact("UniswapV2Router02", factory.address, deploy_artifact("WETH9").address)
    r1.mint(deployer, 1_000_000 * R1)
    usdc.mint(deployer, 1_000_000 * 10**6)
    r1.approve(router.address, 2**256 - 1)
    usdc.approve(router.address, 2**256 - 1)
    router.addLiquidity(
        r1.address, usdc.address, 1_000_000 * R1, 1_000_000 * 10**6, 0, 0, deployer, boa.env.timestamp
    )
    nd.set_dex(router.address, usdc.address)
    escrow.set_dex(router.address, r1.address)
    boa.env.time_travel(seconds=EPOCH)
    pool_buyer = str(boa.env.generate_address())
    r1.mint(pool_buyer, 100_000 * R1)
    with boa.env.prank(pool_buyer):
        r1.approve(nd.address, 2**256 - 1)
    rows.append(("ND.buy with the pool (buyer's first deed)", measure(nd, "buy", 10**30, sender=pool_buyer)))
    boa.env.time_travel(seconds=10)
    rows.append(("ND.buy with the pool (second deed)", measure(nd, "buy", 10**30, sender=pool_buyer)))
    boa.env.time_travel(seconds=EPOCH)
    ep = ctrl.current_epoch() - 1
    sigs = sign_attestation(oracles[:3], escrow.address, 1, ep, served)
    rows.append(
        ("PoAIEscrow.attest, 4 nodes, R1 bought and burned", measure(escrow, "attest", 1, ep, served, sigs))
    )

    width = max(len(name) for name, _ in rows)
    print(f"{'call':<{width}}  {'gas':>9}  {'x transfer':>10}")
    print("-" * (width + 23))
    for name, gas in rows:
        print(f"{name:<{width}}  {gas:>9,}  {gas / base:>10.2f}")


if __name__ == "__main__":
    main()
