"""`r1os edil`: train a model over the network's nodes with private aggregation (EDIL), through any node.

The node a job is submitted to (`--node`) is its owner's node: it keeps the job's secret, tests each
round's model on its held-out split and keeps the model. The job belongs to who submits it: the key from
`--key`, else $R1OS_KEY / $R1OS_PRIVATE_KEY, else, on the node's machine, the node's operator (its token,
found as for every command), else your default key. `stop` and `model` are for the job's owner (or the
node's operator), at the owner's node; `status` and `ls` need no key and work on any node. See
docs/edil-cli.md.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.markup import escape
from rich.table import Table

from r1os.cli._access import CallerKeyOpt, NodeOpt, TokenOpt, access, node_session, open_session
from r1os.cli._common import (
    JsonOpt,
    console,
    err_console,
    handle_errors,
    print_json,
    print_listing,
    spinner,
    table,
)

if TYPE_CHECKING:
    from r1os.sdk import Session
    from r1os.sdk._edil import JobView, RoundView

app = typer.Typer(no_args_is_help=True)

SpecArg = typer.Argument(..., help="The job spec (YAML or JSON).", exists=True, dir_okay=False, readable=True)
JobArg = typer.Argument(..., help="The job's id (`r1os edil ls` lists them).")
WaitOpt = typer.Option(True, "--wait/--no-wait", help="Wait until the job ends, showing each round.")
TimeoutOpt = typer.Option(
    None, "--timeout", min=0, help="Seconds to wait for the job to end (default: no limit; it goes on)."
)
#: Submitting makes the owner's CKKS context and loads its test split: more than a read's time.
SUBMIT_TIMEOUT = 120.0


# -- who asks ------------------------------------------------------------------------------------------


def _owner_session(
    node: str | None, key_file: Path | None, token: str | None, *, sign_reads: bool = False
) -> contextlib.AbstractContextManager[Session]:
    """The job's owner: a key (signing reads too for `model`), else the node's operator."""
    caller = access(node, key_file, token, writes=True)
    if sign_reads and caller.key is not None:
        caller = replace(caller, sign_reads=True)
    return open_session(caller, timeout=SUBMIT_TIMEOUT)


# -- printing ------------------------------------------------------------------------------------------


def _accuracy(value: float | None) -> str:
    return f"{value:.4f}" if value is not None else "-"


def _phase(phase: str) -> str:
    colour = {"done": "green", "training": "yellow"}.get(phase, "red")
    return f"[{colour}]{escape(phase)}[/]"


def _short(address: str) -> str:
    return f"{address[:10]}…" if len(address) > 12 else address


def _round_row(r: RoundView) -> tuple[str, ...]:
    refused = ", ".join(f"{_short(p)}: {why}" for p, why in sorted(r.refused.items())) or "-"
    return (
        str(r.round),
        str(len(r.included)),
        ", ".join(_short(p) for p in r.dropped) or "-",
        escape(refused),
        str(r.samples),
        _accuracy(r.test_accuracy),
        f"{r.seconds:.1f}",
    )


def rounds_table(job: JobView) -> Table:
    return table(
        f"{job.name} ({job.job_id}): {job.rounds_done}/{job.rounds} rounds",
        ("round", "included", "dropped", "refused", "samples", "test accuracy", "seconds"),
        (_round_row(r) for r in job.history),
    )


def _summary(job: JobView) -> None:
    lines = [
        f"job:          {job.job_id} ({escape(job.name)})",
        f"phase:        {_phase(job.phase)}" + (f" - {escape(job.error)}" if job.error else ""),
        f"rounds:       {job.rounds_done}/{job.rounds}",
        f"accuracy:     {_accuracy(job.test_accuracy)} (the owner's held-out split)",
        f"model:        {job.model_cid}",
        f"privacy:      {escape(job.privacy)}",
        f"owner:        {job.owner}",
        f"owner's node: {job.owner_node}",
        f"aggregator:   {job.aggregator}",
        "participants: " + ", ".join(job.participants),
    ]
    for line in lines:
        console.print(line, highlight=False)


def _wait(s: Session, job: JobView, timeout: float | None, json_out: bool) -> JobView:
    """Wait for the job to end, printing each round as it completes (to stderr under --json)."""
    from r1os.sdk._edil import round_line

    out = err_console if json_out else console
    with spinner(f"training {job.name}: round 1/{job.rounds}") as say:

        def on_round(j: JobView, r: RoundView) -> None:
            out.print(f"  {round_line(j, r)}", highlight=False)
            if r.round < j.rounds:
                say(f"training {j.name}: round {r.round + 1}/{j.rounds}")

        return s.edil.wait(job.job_id, timeout=timeout, on_round=on_round)


def _submitted(job: JobView) -> None:
    console.print(
        f"submitted: [bold]{escape(job.name)}[/] (job {job.job_id}) to {job.owner_node}:"
        f" {len(job.participants)} participant(s), aggregator {job.aggregator}, {escape(job.privacy)},"
        f" {job.rounds} round(s)",
        highlight=False,
    )


def _result(job: JobView) -> None:
    console.print(
        f"done: test accuracy [bold]{_accuracy(job.test_accuracy)}[/] after {job.rounds_done}/{job.rounds}"
        " round(s)",
        highlight=False,
    )
    console.print(f"model: {job.model_cid}", highlight=False)
    console.print(f"[dim]download it: r1os edil model {job.job_id} -o {job.name}.npz[/]", highlight=False)


# -- commands ------------------------------------------------------------------------------------------


@app.command("train")
@handle_errors
def train(
    spec: Path = SpecArg,
    node: str | None = NodeOpt,
    json_out: bool = JsonOpt,
    wait: bool = WaitOpt,
    timeout: float | None = TimeoutOpt,
    key_file: Path | None = CallerKeyOpt,
    token: str | None = TokenOpt,
) -> None:
    """Train a model over the network from a job spec: submit it to the node (the owner's node), show each
    round as it completes, print the test accuracy and the model's CID."""
    from r1os.sdk._edil import JobFailed, read_spec

    job_spec = read_spec(spec)  # a bad spec is named before anything is sent
    with _owner_session(node, key_file, token) as s:
        job = s.edil.submit(job_spec)
        if not json_out:
            _submitted(job)
        if not wait:
            if json_out:
                print_json(job.model_dump(mode="json"))
            else:
                console.print(f"[dim]follow it: r1os edil status {job.job_id}[/]", highlight=False)
            return
        try:
            final = _wait(s, job, timeout, json_out)
        except JobFailed as exc:
            if json_out:
                print_json(exc.job.model_dump(mode="json"))
            raise
        except KeyboardInterrupt:
            err_console.print(
                f"interrupted: job {job.job_id} goes on (`r1os edil status {job.job_id}`,"
                f" `r1os edil stop {job.job_id}`)"
            )
            raise typer.Exit(130) from None
    if json_out:
        print_json(final.model_dump(mode="json"))
        return
    _result(final)


@app.command("status")
@handle_errors
def status(
    job_id: str = JobArg,
    node: str | None = NodeOpt,
    json_out: bool = JsonOpt,
    key_file: Path | None = CallerKeyOpt,
    token: str | None = TokenOpt,
) -> None:
    """Show a job: phase, rounds done, test accuracy, model CID, its nodes and each round's updates."""
    with node_session(node, key_file, token) as s:
        job = s.edil.status(job_id)
    if json_out:
        print_json(job.model_dump(mode="json"))
        return
    _summary(job)
    if job.history:
        console.print(rounds_table(job))


@app.command("ls")
@handle_errors
def ls(
    node: str | None = NodeOpt,
    json_out: bool = JsonOpt,
    key_file: Path | None = CallerKeyOpt,
    token: str | None = TokenOpt,
) -> None:
    """List the network's training jobs: phase, rounds done, test accuracy, newest first."""
    with node_session(node, key_file, token) as s:
        jobs = s.edil.list()
    print_listing(
        jobs,
        json_out,
        title="training jobs",
        columns=("job", "name", "phase", "rounds", "test accuracy", "privacy", "owner"),
        row=lambda j: (
            j.job_id,
            escape(j.name),
            _phase(j.phase),
            f"{j.rounds_done}/{j.rounds}",
            _accuracy(j.test_accuracy),
            escape(j.privacy),
            j.owner,
        ),
        empty="no training jobs",
    )


@app.command("model")
@handle_errors
def model(
    job_id: str = JobArg,
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Where to write the .npz (default: NAME-JOB.npz here)."
    ),
    node: str | None = NodeOpt,
    key_file: Path | None = CallerKeyOpt,
    token: str | None = TokenOpt,
) -> None:
    """Download a job's current model (.npz: params and meta) from its owner's node (the owner or the
    node's operator)."""
    with _owner_session(node, key_file, token, sign_reads=True) as s:
        path = s.edil.save_model(job_id, output)
    size = path.stat().st_size
    console.print(f"saved {path} ({_size(size)})", highlight=False)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


@app.command("stop")
@handle_errors
def stop(
    job_id: str = JobArg,
    node: str | None = NodeOpt,
    key_file: Path | None = CallerKeyOpt,
    token: str | None = TokenOpt,
) -> None:
    """Stop a training job (its owner or the node's operator, at the owner's node); its model so far stays."""
    with _owner_session(node, key_file, token) as s:
        job = s.edil.stop(job_id)
    already = "" if job.phase == "stopped" else "had already ended: "
    console.print(
        f"{job.job_id} ({escape(job.name)}): {already}{_phase(job.phase)}"
        f" after {job.rounds_done}/{job.rounds} round(s)",
        highlight=False,
    )
