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
