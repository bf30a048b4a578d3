"""Which devices the workers are pinned to: GPUs by CUDA_VISIBLE_DEVICES, or CPU core sets.

Runs in the server process without importing torch, so the server never creates a CUDA
context of its own.
"""

import os
import shutil
import subprocess
from collections.abc import Sequence

from pipeserve.server.errors import StartupError
from pipeserve.server.schema import DeviceSpec
from pipeserve.server.settings import DType, Quantize, Settings

# A model's workers on a CPU it has to itself, unless --workers-per-device says otherwise.
_CPU_WORKERS = 2


def visible_gpus() -> list[str]:
    """GPUs this process may use, as CUDA_VISIBLE_DEVICES would name them."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        return [g.strip() for g in env.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        listing = subprocess.run(
            ["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(listing.splitlines()) if line.startswith("GPU ")]


def _chosen_gpus(devices: str, gpus: list[str]) -> list[str]:
    """The GPUs `devices` asks for (none: CPU). GPU indices count the visible GPUs."""
    if devices == "auto":
        return gpus
    if devices == "cpu":
        return []
    indices = [int(i) for i in devices.split(",")]
    missing = [i for i in indices if i >= len(gpus)]
    if missing:
        raise StartupError(
            f"--devices {devices}: GPU {missing[0]} is not visible ({len(gpus)} GPUs visible)"
        )
    return [gpus[i] for i in indices]


def plan_devices(devices: str, workers_per_device: int) -> list[DeviceSpec]:
    """One DeviceSpec per worker of one model."""
    return plan_models([(devices, workers_per_device)])[0]


def plan_models(
    asks: Sequence[tuple[str, int]], cpu_models_beside: int = 0
) -> list[list[DeviceSpec]]:
    """Each model's workers' devices, from its (devices, workers per device; 0: auto). Models
    may share GPUs; the CPU workers of all models together split the cores, so that they do not
    oversubscribe them. `cpu_models_beside`: models already served on the CPU, which auto
    counts as sharing it."""
    gpus = visible_gpus()
    chosen = [_chosen_gpus(devices, gpus) for devices, _ in asks]
    available = sorted(os.sched_getaffinity(0))
    cpu_models = cpu_models_beside + sum(1 for on in chosen if not on)
    counts = [
        asked or _auto_workers(bool(on), cpu_models, len(available))
        for (_, asked), on in zip(asks, chosen, strict=True)
    ]
    cpu_workers = sum(n for n, on in zip(counts, chosen, strict=True) if not on)
    cores = split_cores(available, cpu_workers) if cpu_workers else []
    plans = []
    for workers, on in zip(counts, chosen, strict=True):
        if on:
            plans.append([DeviceSpec(gpu=g) for g in on for _ in range(workers)])
        else:
            plans.append(cores[:workers])
            cores = cores[workers:]
    return plans


def _auto_workers(on_gpu: bool, cpu_models: int, cores: int) -> int:
    """Workers per device when none were asked for. On a CPU that one model has to itself,
    two workers on half the cores each: two batches side by side keep the cores busier than
    one batch on all of them, with less threads' synchronisation (README, Performance:
    about 1.2x the sentences/s of one worker on two cores). Models sharing the CPU get one each."""
    if on_gpu or cpu_models > 1:
        return 1
    return min(_CPU_WORKERS, cores)


def _overlap(a: DeviceSpec, b: DeviceSpec) -> bool:
    if a.gpu is not None or b.gpu is not None:
        return a.gpu == b.gpu
    return bool(set(a.cpus) & set(b.cpus))


def shared_devices(
    names: Sequence[str], plans: Sequence[Sequence[DeviceSpec]]
) -> list[dict[int, tuple[str, ...]]]:
    """For each model, worker id -> the workers of other models on the same device, as
    "MODEL/ID"."""
    return [
        {
            worker: tuple(
                f"{other}/{j}"
                for k, (other, theirs) in enumerate(zip(names, plans, strict=True))
                if k != i
                for j, their in enumerate(theirs)
                if _overlap(device, their)
            )
            for worker, device in enumerate(plan)
        }
        for i, plan in enumerate(plans)
    ]


def split_cores(cores: list[int], workers: int) -> list[DeviceSpec]:
    """Contiguous, disjoint core sets; with more workers than cores, cores are shared."""
    if workers >= len(cores):
        return [DeviceSpec(cpus=(cores[i % len(cores)],)) for i in range(workers)]
    size, extra = divmod(len(cores), workers)
    specs, start = [], 0
    for i in range(workers):
        end = start + size + (1 if i < extra else 0)
        specs.append(DeviceSpec(cpus=tuple(cores[start:end])))
        start = end
    return specs


def check_precision(settings: Settings, on_gpu: bool) -> None:
    """float16 kernels are for GPUs; torch's dynamic int8 quantisation is for CPUs."""
    if settings.dtype is DType.FLOAT16 and not on_gpu:
        raise StartupError("--dtype float16 needs a GPU; on CPU use bfloat16 or float32")
    if settings.quantize is Quantize.INT8 and on_gpu:
        raise StartupError("--quantize int8 runs on CPU workers only; on GPU use --dtype float16")


def plan_frontends(requested: int, devices: list[DeviceSpec]) -> int:
    """Front-end processes: as asked, else 1 on CPU workers (they use every core), and with
    GPUs a quarter of the cores their workers leave, at most 8 (1 on a 2-core machine)."""
    if requested:
        return requested
    if devices[0].gpu is None:
        return 1
    spare = len(os.sched_getaffinity(0)) - len(devices)
    return max(1, min(8, spare // 4))
