"""`r1os economy`: simulate the token economy on the real contracts (a private anvil)."""

from __future__ import annotations

from pathlib import Path

import typer

from r1os.cli._common import JsonOpt, console, handle_errors, print_json, run, spinner, table

app = typer.Typer(no_args_is_help=True)


@app.command("simulate")
@handle_errors
def simulate(
    scenario: str = typer.Option(
        "paper",
        "--scenario",
        help="Scenario JSON file, or a name from examples/economy (paper, low-adoption).",
    ),
    out: Path = typer.Option(
        Path("economy-out"), "--out", help="Folder for economy.csv, supply.png, market.png."
    ),
    epochs: int | None = typer.Option(None, "--epochs", min=2, help="Stop after this many epochs."),
    plot: bool = typer.Option(True, "--plot/--no-plot", help="Draw the PNG plots (matplotlib)."),
    json_out: bool = JsonOpt,
) -> None:
    """Drive the contracts through a scenario's epochs (default 1,080) and plot R1 supply.

    Deploys the contracts on a private anvil, then each epoch sells Node Deeds, pays PoAI jobs and
    claims every licence's rewards; the final totals are checked against the contracts' state.
    """
    from r1os.chain.economy import load_scenario
    from r1os.chain.economy import simulate as run_simulation

    sc = load_scenario(scenario)
    with spinner(f"simulating {sc.name!r}") as update:
        result = run(
            run_simulation(
                sc,
                out,
                epochs=epochs,
                plot=plot,
                progress=lambda e, n: update(f"simulating {sc.name!r}: epoch {e}/{n}"),
            )
        )
    data = result.summary()
    if json_out:
        print_json(data)
        return
    rows = [
        ("minted by Node Deeds", f"{data['minted_nd_r1']:,.0f} R1"),
        ("minted by Master Node Deeds", f"{data['minted_mnd_r1']:,.0f} R1"),
        ("minted by the Genesis Node Deed", f"{data['minted_gnd_r1']:,.0f} R1"),
        ("minted otherwise (pool seed)", f"{data['minted_other_r1']:,.0f} R1"),
        ("burned", f"{data['burned_r1']:,.0f} R1"),
        ("circulating (total supply)", f"{data['circulating_r1']:,.0f} R1"),
        ("MND rewards withheld", f"{data['mnd_withheld_r1']:,.0f} R1"),
        ("Node Deeds sold", f"{data['nd_sold']:,}"),
        ("PoAI volume", f"${data['poai_volume_usd']:,.0f}"),
        ("adoption", f"{data['adoption']:.4f}"),
    ]
    console.print(
        table(f"{sc.name}: {result.epochs} epochs in {data['seconds']} s", ("", "at the end"), rows)
    )
    console.print("totals equal the contracts' balances (claimed amounts, R1 total supply)", highlight=False)
    for f in result.files:
        console.print(f"wrote {f}", highlight=False)
