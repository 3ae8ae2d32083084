"""`python -m r1os` runs the CLI (the devnet starts nodes this way, with the same interpreter)."""

from r1os.cli.main import main

main()
