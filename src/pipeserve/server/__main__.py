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
from pipeserve.server.model.source import check_model_source
from pipeserve.server.settings import parse_settings


def main(argv: list[str] | None = None) -> int:
    try:
        settings = parse_settings(argv)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in error.errors()
        )
        print(f"pipeserve serve: invalid settings: {problems}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    # Concurrent calls already keep the cores busy; a tokenizer that also splits each call
    # across threads only spins them. An operator's choice stands.
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        if settings.tracing:
            tracing.start("main")
        # Before torch and transformers load: a wrong --model fails in a second, not in ten.
        for entry in settings.per_model():
            check_model_source(entry.model_source)
        from pipeserve.server.app import serve

        asyncio.run(serve(settings))
    except StartupError as error:
        log_startup_failure(f"pipeserve serve: error: {error}", settings.log_format)
        return 1
    finally:
        tracing.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
