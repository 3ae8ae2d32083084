"""`python -m r1os.node`: run one node configured from `R1OS_*` environment variables."""

import sys

from r1os.node._run import main

sys.exit(main())
