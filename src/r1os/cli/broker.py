"""`r1os broker`: run the embedded MQTT broker (amqtt) as its own process."""

from __future__ import annotations

import typer

from r1os.cli._common import err_console, handle_errors, run, setup_logging

app = typer.Typer(no_args_is_help=True)


@app.callback()
def _group() -> None:
    """Run an MQTT broker for a devnet or a small network."""


@app.command("start")
@handle_errors
def start(
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(1883, "--port", help="TCP port (0 picks a free one)."),
    log_level: str = typer.Option("WARNING", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
) -> None:
    """Run a broker in the foreground and print its URL; Ctrl-C or SIGTERM stops it cleanly."""
    from r1os.transport.broker import EmbeddedBroker, serve

    setup_logging(log_level)

    def ready(broker: EmbeddedBroker) -> None:
        # The URL alone on stdout, so scripts can read it; the rest goes to stderr.
        print(broker.url, flush=True)
        err_console.print(f"[dim]broker listening on {broker.url}; Ctrl-C to stop[/]", highlight=False)

    run(serve(host, port, on_ready=ready))
    err_console.print("[dim]broker stopped[/]", highlight=False)


@app.command("gate")
@handle_errors
def gate(
    upstream: str = typer.Option(
        ..., "--upstream", help="The broker behind the gate: mqtt://HOST:PORT or unix:///PATH (its socket)."
    ),
    network: str = typer.Option("devnet", "--network", help="Network name (the login text names it)."),
    oracles: str = typer.Option(..., "--oracles", help="Comma-separated oracle addresses."),
    oracle_urls: str = typer.Option(
        ..., "--oracle-urls", help="Comma-separated oracle HTTP URLs, or @FILE with one URL per line."
    ),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on."),
    port: int = typer.Option(1883, "--port", help="TCP port (0 picks a free one)."),
    log_level: str = typer.Option("INFO", "--log-level", help="DEBUG, INFO, WARNING or ERROR."),
) -> None:
    """Put dAuth in front of an external broker (mosquitto): only oracles and admitted nodes get in.

    Reads each client's MQTT CONNECT, checks the login (username = address, password = its
    signature) and the admitted set the oracles serve, then forwards the connection to --upstream,
    which should listen where only the gate reaches it (a Unix socket, or 127.0.0.1). Clients whose
    admission is revoked are disconnected within 5 s. Prints its URL on stdout."""
    import asyncio
    import contextlib
    import logging
    import signal
    from pathlib import Path

    from r1os.dauth.broker import BrokerGate
    from r1os.transport import MqttGate, parse_broker_url

    setup_logging(log_level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    target: tuple[str, int] | str
    if upstream.startswith("unix://"):
        target = upstream.removeprefix("unix://")
    else:
        up = parse_broker_url(upstream)
        target = (up.host, up.port)

    def split(text: str) -> list[str]:
        return [x.strip() for x in text.split(",") if x.strip()]

    if oracle_urls.startswith("@"):
        dauth = BrokerGate(network, split(oracles), [], oracle_urls_file=Path(oracle_urls[1:]))
    else:
        dauth = BrokerGate(network, split(oracles), split(oracle_urls))

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop.set)
        refresher = asyncio.create_task(dauth.refresh_loop())
        try:
            async with MqttGate(target, dauth.authorize, host=host, port=port,
                                allowed=dauth.allowed) as g:  # fmt: skip
                print(g.url, flush=True)
                err_console.print(f"[dim]dAuth gate on {g.url} in front of {upstream}[/]", highlight=False)
                await stop.wait()
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await dauth.close()

    run(serve())
