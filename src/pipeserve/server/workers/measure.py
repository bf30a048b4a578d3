"""The child process that measures `--backend auto`'s two candidates (`backends/speed.py`) on
one worker's device: pinned and threaded as that worker will be, both runners loaded as the
worker loads one. It exits afterwards, so torch's and OpenVINO's memory go with it."""

from multiprocessing.connection import Connection

from pipeserve.server.logs import configure_logging
from pipeserve.server.schema import WorkerSpec
from pipeserve.server.settings import Backend
from pipeserve.server.workers.worker import load_spec, pin


def run_measure(spec: WorkerSpec, vocab_size: int, conn: Connection) -> None:
    """Sends the CPU seconds each backend spent (`speed.measure`), or why it could not."""
    configure_logging(spec.log_level, spec.log_format)
    try:
        device = pin(spec)
        from pipeserve.server.backends.speed import measure

        runners = {b: load_spec(spec, device, b) for b in (Backend.TORCH, Backend.OPENVINO)}
        conn.send(measure(runners, vocab_size))
    except Exception as exc:  # one line for the operator; auto then keeps its rule
        conn.send(f"{type(exc).__name__}: {exc}")
