"""Deeploy through the SDK: deploy the echo app, wait until it is healthy, call it through a node, delete it.

    R1OS_API_URL=http://127.0.0.1:31234 python examples/apps.py

The app is examples/apps/echo (two replicas of a small HTTP server, placed by the oracles on nodes that run
apps). The key in $R1OS_PRIVATE_KEY (hex), else a fresh key made here, owns the app: only it may change or
delete it. Any node forwards `/apps/<owner>/<name>/...` to a healthy replica, wherever it runs.
"""

import argparse
from pathlib import Path

from r1os.sdk import NodeKey, Session, key_from_env

ECHO = Path(__file__).parent / "apps" / "echo" / "app.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spec", type=Path, default=ECHO, help=f"app spec (default {ECHO})")
    parser.add_argument("--timeout", type=float, default=120, help="seconds to wait for healthy replicas")
    parser.add_argument("--keep", action="store_true", help="leave the app running")
    args = parser.parse_args()
    key = key_from_env() or NodeKey.generate()

    with Session(key=key) as s:  # the node URL comes from $R1OS_API_URL
        print(f"node {s.url}; {len(s.apps.nodes())} node(s) run apps; owner {key.address}")
        view = s.apps.deploy(args.spec)
        print(f"deployed {view.app} v{view.version}: {view.replicas_wanted} replica(s) wanted")

        ready = s.apps.wait(
            view.name, timeout=args.timeout, on_change=lambda v: print(f"  {v.healthy} healthy")
        )
        print(f"ready: {ready.healthy} healthy on {sorted({r.node for r in ready.replicas})}")

        # Call the app through the node (which forwards to a replica on whichever node runs it).
        answer = s.request("GET", f"/apps/{key.address.lower()}/{view.name}/hello?from=sdk")
        print("GET /hello ->", answer)

        if args.keep:
            print(f"kept; delete it with: r1os app delete {view.name}")
            return
        s.apps.delete(view.name)
        print(f"deleted {view.name}")


if __name__ == "__main__":
    main()
