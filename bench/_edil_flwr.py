"""Flower's side of bench/edil.py: a FedAvg server or one client, run in the Flower venv.

Flower cannot share r1os's venv (every flwr >= 1.20 pins rich < 15 and typer < 0.21; r1os needs
rich >= 15 and typer >= 0.29), so bench/edil.py starts these processes with a venv of their own
(bench/requirements-flwr.txt) and puts the repo's src/ on PYTHONPATH: the model, its training and the
data parts are r1os's own (`r1os.edil._models`, `r1os.edil._data`), only the FL framework differs.

    python bench/_edil_flwr.py server --config CFG.json --address 127.0.0.1:PORT --out RESULT.json
    python bench/_edil_flwr.py client --config CFG.json --address 127.0.0.1:PORT --part I

The server is Flower's `start_server` (gRPC, bidirectional streams) with its `FedAvg` strategy; the
clients are `NumPyClient`s started with `start_client`. Both are deprecated in favour of SuperLink and
SuperNodes but still shipped; they keep one long-lived process per client, as r1os nodes do.

The server measures, per round: when round 1 is configured (the clients are connected), when each
round's global model has been measured on the test split (the end of the round, as r1os's owner), the
bytes of the parameters it sends each client and the bytes each client sends back (the serialized
numpy arrays Flower puts in its messages), the test accuracy, and the seconds each client's
`train_local` took (the client measures it and returns it in its fit metrics).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import numpy as np  # noqa: E402

from r1os.edil._data import load  # noqa: E402
from r1os.edil._models import Layout, evaluate, init_params, local_seed, train_local  # noqa: E402


def _layout(cfg: dict[str, Any]) -> Layout:
    return Layout(cfg["family"], tuple(cfg["sizes"]))


def server(cfg: dict[str, Any], address: str, out: Path) -> None:
    from flwr.common import ndarrays_to_parameters
    from flwr.server import ServerConfig, start_server
    from flwr.server.strategy import FedAvg

    lay = _layout(cfg)
    test = load(cfg["owner_data"])
    n = len(cfg["parts"])
    marks: dict[str, Any] = {"start": None, "end": [], "accuracy": [], "down": [], "up": [], "train": []}

    class TimedFedAvg(FedAvg):  # type: ignore[misc]
        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            if server_round == 1:  # round 1 starts once every client is connected
                client_manager.wait_for(n, timeout=3600)
                marks["start"] = time.time()
            marks["down"].append(sum(len(t) for t in parameters.tensors))
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            marks["up"].append([sum(len(t) for t in res.parameters.tensors) for _, res in results])
            marks["train"].append([float(res.metrics.get("train_s", "nan")) for _, res in results])
            if failures:
                print(f"round {server_round}: {len(failures)} failures: {failures}", file=sys.stderr)
            return super().aggregate_fit(server_round, results, failures)

    def evaluate_fn(server_round: int, arrays: list[np.ndarray], config: Any) -> Any:
        if server_round == 0:
            return None
        acc = evaluate(lay, arrays[0], test.X, test.y)
        marks["end"].append(time.time())
        marks["accuracy"].append(acc)
        return 0.0, {"accuracy": acc}

    strategy = TimedFedAvg(
        fraction_fit=1.0,
        fraction_evaluate=0.0,
        min_fit_clients=n,
        min_available_clients=n,
        evaluate_fn=evaluate_fn,
        on_fit_config_fn=lambda r: {"server_round": r},
        initial_parameters=ndarrays_to_parameters([init_params(lay, cfg["seed"])]),
    )
    start_server(server_address=address, config=ServerConfig(num_rounds=cfg["rounds"]), strategy=strategy)
    out.write_text(json.dumps(marks))


def client(cfg: dict[str, Any], address: str, part: int) -> None:
    from flwr.client import NumPyClient, start_client

    lay = _layout(cfg)
    data = load(cfg["parts"][part])

    class Participant(NumPyClient):  # type: ignore[misc]
        def fit(self, parameters: list[np.ndarray], config: dict[str, Any]) -> Any:
            r = int(config["server_round"])
            t0 = time.perf_counter()
            w = train_local(
                lay, parameters[0], data.X, data.y, epochs=cfg["local_epochs"], lr=cfg["lr"],
                batch_size=cfg["batch_size"], seed=local_seed(cfg["seed"], r, part),
            )  # fmt: skip
            return [w], data.n, {"train_s": time.perf_counter() - t0}

    start_client(server_address=address, client=Participant().to_client(), insecure=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("role", choices=["server", "client"])
    ap.add_argument("--config", type=Path, required=True)
    ap.add_argument("--address", required=True)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--part", type=int, default=0)
    args = ap.parse_args()
    cfg = json.loads(args.config.read_text())
    if args.role == "server":
        assert args.out is not None
        server(cfg, args.address, args.out)
    else:
        client(cfg, args.address, args.part)


if __name__ == "__main__":
    main()
