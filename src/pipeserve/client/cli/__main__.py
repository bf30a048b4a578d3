"""`python -m pipeserve.client.cli`: the `pipeserve` command."""

import sys

from pipeserve.client.cli.main import main

sys.exit(main())
