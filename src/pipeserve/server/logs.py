"""Log set-up for the server and worker processes: plain lines, or one JSON object per line.

Every line a process writes goes through the one handler set up here, also the lines of
transformers and huggingface_hub (which install handlers of their own) and Python warnings, so
that with `--log-format json` nothing but JSON reaches stderr. Progress bars are off, and
transformers' load report, a table in terminal colours, becomes one plain line: a server log is
read later, by people and by log collectors, not watched. JSON lines carry their time in ISO
8601, in UTC.
"""

import json
import logging
import re
import sys
from datetime import UTC, datetime

from pipeserve.server.settings import LogFormat


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


_TERMINAL_CODES = re.compile(r"\x1b\[[0-9;]*m")


def _load_report_in_one_line(record: logging.LogRecord) -> bool:
    """transformers' load report ("X LOAD REPORT from: PATH", then a table of key | status)
    as "X load report from: PATH (missing: k1, k2; unexpected: k3)"; other records as they are."""
    if not (record.name.startswith("transformers.") and "LOAD REPORT" in str(record.msg)):
        return True
    lines = _TERMINAL_CODES.sub("", record.getMessage()).splitlines()
    keys: dict[str, list[str]] = {}
    for line in lines[1:]:
        cells = [cell.strip() for cell in line.split("|")]
        if len(cells) > 1 and cells[0] and cells[0] != "Key" and cells[1].isupper():
            keys.setdefault(cells[1].lower(), []).append(cells[0])
    found = "; ".join(f"{status}: {', '.join(names)}" for status, names in keys.items())
    record.msg = lines[0].replace("LOAD REPORT", "load report") + (f" ({found})" if found else "")
    record.args = ()
    return True


def _route(library: str) -> None:
    logger = logging.getLogger(library)
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
    logger.propagate = True


def route_transformers_logs() -> None:
    """Routes transformers' lines through the handler, without its progress bars. Importing
    it takes seconds (it imports torch), so the server does it once it loads a model, after
    the checks that need none."""
    import transformers.utils.logging  # installs its handler, removed here

    _route("transformers")
    transformers.utils.logging.disable_progress_bar()  # "Loading weights"


def configure_logging(level: str, fmt: LogFormat, *, transformers: bool = True) -> None:
    """One handler for every line; `transformers` False leaves `route_transformers_logs` for
    later."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt is LogFormat.JSON:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s %(levelname)s %(message)s"))
    handler.addFilter(_load_report_in_one_line)
    logging.basicConfig(level=level.upper(), handlers=[handler], force=True)
    logging.captureWarnings(True)
    import huggingface_hub.utils  # installs its handler, removed here

    _route("huggingface_hub")
    huggingface_hub.utils.disable_progress_bars()  # downloads
    if transformers:
        route_transformers_logs()


def log_startup_failure(message: str, fmt: LogFormat) -> None:
    """The last line of a start-up that failed: as is in text mode (one line to read, no log
    prefix), a log line in JSON mode."""
    if fmt is LogFormat.JSON:
        logging.getLogger("pipeserve").error(message)
    else:
        print(message, file=sys.stderr)
