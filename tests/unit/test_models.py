"""Several models in one server, as planned before any loads: the --model flags name them, the
CPU workers of all models split the cores, and models on one GPU share it. Served:
tests/e2e/test_models.py."""

import pytest

from pipeserve.server.settings import Settings
from pipeserve.server.workers import devices


def test_model_flags_name_the_models():
    settings = Settings(model=("clf=/m/sst2", "hub-org/encoder-v2", "/m/ner/"))
    assert [s.model_name for s in settings.per_model()] == ["clf", "encoder-v2", "ner"]
    assert [s.model_source for s in settings.per_model()] == [
        "/m/sst2",
        "hub-org/encoder-v2",
        "/m/ner/",
    ]
    assert settings.default_name == "clf"
    assert Settings(model="a=x,b=y", default_model="b").default_name == "b"
    with pytest.raises(ValueError, match="given twice"):
        Settings(model=("/one/model", "/two/model"))
    with pytest.raises(ValueError, match="not a served model"):
        Settings(model=("a=x",), default_model="b")


def test_cpu_workers_of_all_models_split_the_cores(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5})
    one, two = devices.plan_models([("cpu", 1), ("cpu", 2)])
    assert [d.cpus for d in one + two] == [(0, 1), (2, 3), (4, 5)]
    assert devices.shared_devices(["a", "b"], [one, two]) == [{0: ()}, {0: (), 1: ()}]
    # More workers than cores: cores are shared, and ModelInfo says with whom.
    monkeypatch.setattr(devices.os, "sched_getaffinity", lambda pid: {0, 1})
    one, two = devices.plan_models([("cpu", 2), ("cpu", 1)])
    assert devices.shared_devices(["a", "b"], [one, two]) == [{0: ("b/0",), 1: ()}, {0: ("a/0",)}]


def test_models_on_one_gpu_share_it(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-a,GPU-b")
    one, two = devices.plan_models([("0", 1), ("auto", 1)])
    assert [d.label for d in one + two] == ["cuda:GPU-a", "cuda:GPU-a", "cuda:GPU-b"]
    assert devices.shared_devices(["a", "b"], [one, two]) == [{0: ("b/0",)}, {0: ("a/0",), 1: ()}]
