"""Which device each worker gets: GPUs by CUDA_VISIBLE_DEVICES, or disjoint core sets."""

import pytest

from pipeserve.server.errors import StartupError
from pipeserve.server.settings import Settings
from pipeserve.server.workers import devices
from pipeserve.server.workers.devices import check_precision, plan_devices, split_cores


def test_cores_are_split_into_disjoint_contiguous_sets():
    specs = split_cores([0, 1, 2, 3, 4, 5, 6], 3)
    assert [s.cpus for s in specs] == [(0, 1, 2), (3, 4), (5, 6)]
    assert [s.label for s in specs] == ["cpu:0-2", "cpu:3-4", "cpu:5-6"]


def test_more_workers_than_cores_share_cores():
    assert [s.cpus for s in split_cores([0, 1], 3)] == [(0,), (1,), (0,)]


def test_visible_gpus_are_pinned_one_per_worker(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert [s.label for s in plan_devices("auto", 2)] == ["cuda:3", "cuda:3", "cuda:5", "cuda:5"]
    assert [s.label for s in plan_devices("1", 1)] == ["cuda:5"]
    assert all(s.gpu is None for s in plan_devices("cpu", 2))


def test_auto_without_gpus_uses_the_cpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    specs = plan_devices("auto", 2)
    assert all(s.gpu is None and s.cpus for s in specs)


def test_auto_gives_a_lone_cpu_model_two_workers_and_shared_devices_one(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    (alone,) = devices.plan_models([("cpu", 0)])
    assert [d.cpus for d in alone] == [(0, 1), (2, 3)]
    one, two = devices.plan_models([("cpu", 0), ("cpu", 0)])
    assert [d.cpus for d in one + two] == [(0, 1), (2, 3)]
    one, two = devices.plan_models([("cpu", 3), ("cpu", 0)])  # asked stays as asked
    assert (len(one), len(two)) == (3, 1)
    (beside,) = devices.plan_models([("cpu", 0)], cpu_models_beside=1)  # LoadModel's case
    assert [d.cpus for d in beside] == [(0, 1, 2, 3)]
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {0})
    (alone,) = devices.plan_models([("cpu", 0)])
    assert [d.cpus for d in alone] == [(0,)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    (gpus,) = devices.plan_models([("auto", 0)])
    assert [d.label for d in gpus] == ["cuda:3", "cuda:5"]


def test_asking_for_a_gpu_that_is_not_visible_stops_startup(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(StartupError, match="GPU 1 is not visible"):
        plan_devices("0,1", 1)


def test_int8_is_refused_on_a_gpu_and_float16_on_a_cpu():
    int8, float16 = Settings(quantize="int8"), Settings(dtype="float16")
    with pytest.raises(StartupError, match="int8 runs on CPU workers only"):
        check_precision(int8, on_gpu=True)
    with pytest.raises(StartupError, match="float16 needs a GPU"):
        check_precision(float16, on_gpu=False)
    check_precision(int8, on_gpu=False)
    check_precision(float16, on_gpu=True)
