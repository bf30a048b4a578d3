"""`pipeserve serve` and `python -m pipeserve.server`: parse settings, serve, exit cleanly.

Kept free of torch imports: spawned workers re-import the main module.
"""

import asyncio
import os
import sys

from pydantic import ValidationError

from pipeserve.server import tracing
from pipeserve.server.errors import StartupError
from pipeserve.server.logs import configure_logging, log_startup_failure
from pipeserve.server.preflight import preflight
from pipeserve.server.quick_exit import exit_now
from pipeserve.server.settings import parse_settings, settings_problems
from pipeserve.server.terms import Terms


def main(argv: list[str] | None = None) -> int:
    try:
        settings = parse_settings(argv)
    except ValidationError as error:
        print(f"pipeserve serve: error: {settings_problems(error, Terms())}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format, transformers=False)
    # Concurrent calls already keep the cores busy; a tokenizer that also splits each call
    # across threads only spins them. An operator's choice stands.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        # Before torch and transformers load: a setting that cannot work fails in a second.
        preflight(settings)
        if settings.tracing:
            tracing.start("main")
        from pipeserve.server.app import serve

        asyncio.run(serve(settings))
    except StartupError as error:
        log_startup_failure(f"pipeserve serve: error: {error}", settings.log_format)
        return 1
    finally:
        tracing.stop()
    exit_now(0)


if __name__ == "__main__":
    sys.exit(main())
