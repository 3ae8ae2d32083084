"""`r1os node`: run an edge (or oracle) node."""

from __future__ import annotations

from pathlib import Path

import typer

from r1os.cli._access import CallerKeyOpt, NodeOpt, TokenOpt, node_session
from r1os.cli._common import console, handle_errors, print_json

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
    """Start a node in the foreground; Ctrl-C or SIGTERM stops it cleanly.

    Every setting can also come from the environment (`R1OS_NETWORK`, `R1OS_CSTORE__SYNC_INTERVAL`, ...;
    see docs/node.md); flags win over the environment."""
    from r1os.node import Node, build_services, config_from, run_node, setup_logging

    setup_logging(log_level)
    config = config_from(
        home=home,
        network=network,
        broker=broker,
        http=http,
        public_url=public_url,
        heartbeat_interval=heartbeat,
        key_strength="light" if light_key else None,
        cstore={"sync_interval": sync_interval} if sync_interval is not None else None,
        oracles=[a.strip() for a in oracles.split(",") if a.strip()] if oracles else None,
        oracle_urls=[u.strip() for u in oracle_urls.split(",") if u.strip()] if oracle_urls else None,
        chain_deployment=chain_deployment,
        oracle=True if oracle else None,
    )
    run_node(Node(config, services=build_services(config)))


@app.command("info")
@handle_errors
def info(
    url: str | None = NodeOpt,
    json_out: bool = typer.Option(False, "--json", help="Print JSON."),
    key_file: Path | None = CallerKeyOpt,
    token: str | None = TokenOpt,
) -> None:
    """Show what a running node reports about itself."""
    with node_session(url, key_file, token, timeout=5) as s:
        data = s.node()
    if json_out:
        print_json(data)
        return
    keys = (
        "address",
        "ai_address",
        "network",
        "version",
        "url",
        "oracle",
        "uptime",
        "heartbeat_mode",
        "broker_connected",
    )
    for key in keys:
        console.print(f"[dim]{key:>16}[/] {data.get(key)}", highlight=False)


from r1os.cli.dauth import admission  # noqa: E402

app.command("admission")(admission)
