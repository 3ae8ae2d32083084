"""Proof of availability and rewards through the SDK: a node's availability per epoch as the oracles agreed
it, what its licence can claim now, and the claim (R1 minted to the licence owner).

    R1OS_API_URL=http://127.0.0.1:31234 python examples/rewards.py [--node 0x...] [--no-claim]

$R1OS_API_URL must be an oracle node (on a `./dev demo` / `r1os devnet up` devnet: node-01..node-03). The
contracts are found in the devnet's folder (--devnet, default ~/.r1os/devnet: DIR/chain/deployment.json)
or a deployment file (--deployment). The claim is sent by the key in $R1OS_PRIVATE_KEY (hex), else by a
fresh key made here, which a devnet's faucet gives gas; anyone may send a claim, the R1 goes to the owner.
"""

import argparse
from pathlib import Path

from r1os.errors import R1osError
from r1os.sdk import NodeKey, Session, key_from_env

R1 = 10**18


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--node", help="the node's address (default: the node at $R1OS_API_URL)")
    parser.add_argument("--devnet", type=Path, help="devnet folder (default ~/.r1os/devnet)")
    parser.add_argument("--deployment", type=Path, help="deployment JSON (instead of a devnet's)")
    parser.add_argument("--no-claim", action="store_true", help="only show what could be claimed")
    args = parser.parse_args()
    key = key_from_env() or NodeKey.generate()

    with Session(key=key, devnet=args.devnet, deployment=args.deployment) as s:
        node = args.node or s.node()["address"]
        print(f"oracle {s.url}; chain epoch {s.chain.current_epoch()}")

        # What the oracles agreed: one 0..255 value per closed epoch, signed by a quorum of them.
        avail = s.oracle.availability(node)
        values = [e["value"] for e in avail["epochs"]]
        print(f"availability of {node} over epochs {avail['first_epoch']}..{avail['last_epoch']}: {values}")

        # The licence linked to the node, and what a claim would mint now.
        licence = s.licences.of_node(node)
        if licence is None:
            print("no licence is linked to this node: nothing to claim")
            return
        lic = licence
        print(f"licence {lic.type} #{lic.token_id} of {lic.owner}: {lic.claimed / R1:g} R1 claimed so far")
        try:
            claimable = s.rewards.claimable(node)
        except R1osError as exc:  # NothingToClaim: no ended epoch that the oracles closed waits
            print(exc)
            return
        signed = claimable.signed
        print(
            f"claimable: epochs {signed.first_epoch}..{signed.last_epoch} -> {claimable.amount / R1:g} R1"
            f" ({len(signed.signatures)} oracle signatures)"
        )
        if args.no_claim:
            return

        # Whoever sends the claim pays its gas: on a devnet the faucet funds a fresh key.
        if s.token.balances(key.address).eth == 0:
            s.token.faucet(key.address, r1=0)
            print(f"faucet: gas for {key.address}")
        claim = s.rewards.claim(signed)
        print(
            f"claimed {claim.amount / R1:g} R1 for {claim.type} #{claim.token_id};"
            f" {claim.owner} now holds {claim.balance / R1:g} R1"
        )


if __name__ == "__main__":
    main()
