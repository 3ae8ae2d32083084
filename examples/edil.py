"""EDIL through the SDK: train examples/edil/digits.yaml privately (CKKS) over a devnet, with fewer rounds.

    R1OS_API_URL=http://127.0.0.1:31234 python examples/edil.py [--rounds 3]

Three other nodes each train on their own part of the data; only updates travel, encrypted, and only the
owner's node (the one at $R1OS_API_URL) decrypts the aggregate and tests it on its held-out split. Needs a
network of at least 4 nodes (`./dev demo` or `r1os devnet up` start 5). The job's owner is the key in
$R1OS_PRIVATE_KEY (hex), else a fresh key made here.
"""

import argparse
from pathlib import Path

import yaml

from r1os.sdk import NodeKey, Session, key_from_env

DIGITS = Path(__file__).parent / "edil" / "digits.yaml"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3, help="training rounds (the file says 30)")
    parser.add_argument("--spec", type=Path, default=DIGITS, help=f"job spec (default {DIGITS})")
    args = parser.parse_args()

    spec = yaml.safe_load(args.spec.read_text())
    spec["rounds"] = args.rounds  # a spec is a file, its text, or (as here) the parsed dict

    with Session(key=key_from_env() or NodeKey.generate()) as s:  # the node URL comes from $R1OS_API_URL
        job = s.edil.submit(spec)
        print(f"job {job.job_id} ({job.name}): {job.rounds} rounds, privacy {job.privacy}")
        print(f"  participants {job.participants}, aggregator {job.aggregator}")

        # Each finished round: who contributed, and the aggregate's accuracy on the owner's test split.
        done = s.edil.wait(
            job.job_id,
            timeout=600,
            on_round=lambda _job, r: print(
                f"  round {r.round}: {len(r.included)} updates, accuracy {r.test_accuracy}"
            ),
        )
        print(f"{done.phase}: test accuracy {done.test_accuracy} after {done.rounds_done} rounds")
        print(
            f"model saved to {s.edil.save_model(job.job_id)}"
        )  # <name>-<job>.npz, only the owner may fetch it


if __name__ == "__main__":
    main()
