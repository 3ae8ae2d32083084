"""`r1os node`: run an edge (or oracle) node."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from pydantic import ValidationError

from r1os.cli._common import console, handle_errors, print_json, run, setup_logging
from r1os.errors import ConfigError

if TYPE_CHECKING:
    from r1os.node import Node, NodeConfig, Service

app = typer.Typer(no_args_is_help=True, add_completion=False)


@app.command("start")
@handle_errors
def start(
    home: Path | None = typer.Option(None, "--home", help="State folder (default ~/.r1os/<network>/node)."),
    network: str | None = typer.Option(None, "--network", help="Network name (default: devnet)."),
    broker: str | None = typer.Option(
        None, "--broker", help="MQTT broker URL (default: mqtt://127.0.0.1:1883)."
    ),
    http: str | None = typer.Option(
        None, "--http", help="HOST:PORT of the HTTP API (default: 127.0.0.1:31234)."
    ),
    public_url: str | None = typer.Option(None, "--public-url", help="URL peers use to reach the HTTP API."),
    oracle: bool = typer.Option(False, "--oracle", help="Also run the oracle services."),
    heartbeat: float | None = typer.Option(
        None, "--heartbeat", help="Heartbeat interval in seconds (default: 10)."
    ),
    sync_interval: float | None = typer.Option(
        None, "--sync-interval", help="Seconds between CSTORE anti-entropy rounds (default: 5)."
    ),
    oracles: str | None = typer.Option(None, "--oracles", help="Comma-separated oracle addresses."),
    oracle_urls: str | None = typer.Option(
        None, "--oracle-urls", help="Comma-separated oracle HTTP URLs to ask for dAuth admission."
    ),
    chain_deployment: Path | None = typer.Option(
        None, "--chain-deployment", help="Contracts' deployment JSON (oracles check licences with it)."
    ),
    light_key: bool = typer.Option(
        False, "--light-key", help="Faster key derivation for a new key (devnets)."
    ),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
) -> None:
    """Start a node in the foreground; Ctrl-C or SIGTERM stops it cleanly."""
    from r1os.node import Node, NodeConfig

    setup_logging(log_level)
    overrides: dict[str, Any] = {
        "home": home,
        "network": network,
        "broker": broker,
        "http": http,
        "public_url": public_url,
        "heartbeat_interval": heartbeat,
        "key_strength": "light" if light_key else None,
        "cstore_sync_interval": sync_interval,
        "oracles": [a.strip() for a in oracles.split(",") if a.strip()] if oracles else None,
        "oracle_urls": [u.strip() for u in oracle_urls.split(",") if u.strip()] if oracle_urls else None,
        "chain_deployment": chain_deployment,
    }
    if oracle:
        overrides["oracle"] = True
    try:
        config = NodeConfig(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"{'.'.join(map(str, first['loc']))}: {first['msg']}") from None
    run_node(Node(config, services=build_services(config)))


def run_node(node: Node) -> None:
    """Run the node on uvloop where it is installed (its sockets and callbacks cost a fraction of the
    pure-Python loop's: HTTP requests, MQTT traffic and block transfers all go through them);
    `R1OS_EVENT_LOOP=asyncio` picks the standard loop."""
    if os.environ.get("R1OS_EVENT_LOOP", "uvloop") != "asyncio":
        try:
            import uvloop
        except ImportError:
            pass
        else:
            uvloop.run(node.run())
            return
    run(node.run())


def build_services(config: NodeConfig) -> list[Service]:
    """The services every node runs, in start order (later ones may use earlier ones)."""
    from r1os.cstore import CStoreService
    from r1os.dauth import DauthService
    from r1os.r1fs import R1fsService

    return [
        CStoreService(
            sync_interval=config.cstore_sync_interval,
            fsync=config.cstore_fsync,
            oracles=frozenset(a.lower() for a in config.oracles),
        ),
        DauthService(
            network=config.network,
            oracle=config.oracle,
            oracles=config.oracles,
            oracle_urls=config.oracle_urls,
            deployment=config.chain_deployment,
            broker_url=config.broker,
        ),
        R1fsService(),
        *oracle_services(config),
    ]


def oracle_services(config: NodeConfig) -> list[Service]:
    """OracleSync on oracle nodes; auto-claim on nodes that asked for it."""
    from r1os.oracle import AutoClaimService, OracleSyncService, settings_from

    out: list[Service] = [OracleSyncService(settings_from(config))] if config.oracle else []
    if config.auto_claim_epochs:
        out.append(AutoClaimService(config.auto_claim_epochs, config.chain_deployment))
    return out


@app.command("info")
@handle_errors
def info(
    url: str = typer.Option("http://127.0.0.1:31234", "--node", help="The node's HTTP API URL."),
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
) -> None:
    """Show what a running node reports about itself."""
    import httpx

    from r1os.errors import NodeError

    try:
        data = httpx.get(f"{url}/v1/node", timeout=5).json()
    except httpx.HTTPError as exc:
        raise NodeError(f"cannot reach the node at {url}: {exc}", hint="is it running?") from None
    if json_out:
        print_json(data)
        return
    for key in ("address", "ai_address", "network", "version", "url", "oracle", "uptime", "broker_connected"):
        console.print(f"[dim]{key:>16}[/] {data.get(key)}", highlight=False)


from r1os.cli.dauth import admission  # noqa: E402

app.command("admission")(admission)
