"""Log set-up for the server and worker processes: plain lines, or one JSON object per line.

Every line a process writes goes through the one handler set up here, also the lines of
transformers and huggingface_hub (which install handlers of their own) and Python warnings, so
that with `--log-format json` nothing but JSON reaches stderr. Progress bars are off: a server
log is read later, by people and by log collectors, not watched.
"""

import json
import logging
import sys

from pipeserve.server.settings import LogFormat

# The libraries that attach a stderr handler of their own to their root logger.
_LIBRARY_LOGGERS = ("transformers", "huggingface_hub")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _route_library_logs() -> None:
    # Importing these modules installs the libraries' handlers; neither imports torch, so a
    # worker can do it before it pins its device.
    import huggingface_hub.utils
    import transformers.utils.logging

    for name in _LIBRARY_LOGGERS:
        library = logging.getLogger(name)
        for handler in list(library.handlers):
            library.removeHandler(handler)
        library.propagate = True
    transformers.utils.logging.disable_progress_bar()  # "Loading weights"
    huggingface_hub.utils.disable_progress_bars()  # downloads


def configure_logging(level: str, fmt: LogFormat) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if fmt is LogFormat.JSON:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.captureWarnings(True)
    _route_library_logs()


def log_startup_failure(message: str, fmt: LogFormat) -> None:
    """The last line of a start-up that failed: as is in text mode (one line to read, no log
    prefix), a log line in JSON mode."""
    if fmt is LogFormat.JSON:
        logging.getLogger("pipeserve").error(message)
    else:
        print(message, file=sys.stderr)
