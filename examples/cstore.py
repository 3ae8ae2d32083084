"""CSTORE, the network's replicated key-value store, through the SDK: set, get, hash fields, list, delete.

    R1OS_API_URL=http://127.0.0.1:31234 python examples/cstore.py

Writes are signed by the key in $R1OS_PRIVATE_KEY (hex), else by a fresh key made here; a key writes to
its own namespace `app:<address>:`, which every node replicates and anyone may read.
"""

import argparse

from r1os.sdk import NodeKey, Session, key_from_env


def main() -> None:
    argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    ).parse_args()
    key = key_from_env() or NodeKey.generate()
    with Session(key=key) as s:  # the node URL comes from $R1OS_API_URL
        ns = s.cstore.namespace  # "app:<address>:"
        print(f"node {s.url}, writing as {key.address} in namespace {ns}")

        # Plain keys: any JSON value, optionally with a time to live (seconds).
        s.cstore.set(ns + "greeting", {"text": "hello", "from": "examples/cstore.py"})
        print("get greeting ->", s.cstore.get(ns + "greeting"))

        # Hashes: one key, many fields.
        s.cstore.hset(ns + "visits", "alice", 3)
        s.cstore.hset(ns + "visits", "bob", 5)
        print("hgetall visits ->", s.cstore.hgetall(ns + "visits"))

        # Listing by prefix, then cleaning up.
        print("keys ->", sorted(s.cstore.keys(ns)))
        s.cstore.delete(ns + "greeting")
        s.cstore.hdel(ns + "visits", "alice")
        print(
            "after delete: greeting ->",
            s.cstore.get(ns + "greeting"),
            "| visits ->",
            s.cstore.hgetall(ns + "visits"),
        )


if __name__ == "__main__":
    main()
