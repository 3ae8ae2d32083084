"""`python -m r1os.node start ...`: the node command alone, without loading every CLI group."""

from r1os.cli.node import app

app(prog_name="r1os node")
