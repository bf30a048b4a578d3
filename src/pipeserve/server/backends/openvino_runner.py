"""The openvino backend: a model converted ahead of time (openvino_export.py), compiled for
this worker's CPU cores with the OpenVINO runtime alone: no torch, no transformers.

Float32 is asked for explicitly: on a CPU with bfloat16 units OpenVINO computes in bfloat16
unless told otherwise, which is not what --dtype float32 promises.
"""

import json
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from pipeserve.server.backends.runner import ModelRunner
from pipeserve.server.settings import DType

MODEL_FILE = "model.xml"
MANIFEST_FILE = "manifest.json"
_PRECISION_HINT = {DType.FLOAT32: "f32", DType.BFLOAT16: "bf16"}


class UnsupportedPrecision(ValueError):
    """The CPU has no units for the precision asked (emulating it would be slower, not faster)."""


def cpu_capabilities(core: ov.Core) -> list[str]:
    """What OpenVINO's CPU plugin can compute natively here, e.g. ["FP32", "INT8", "BF16"]."""
    return list(core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def compile_config(core: ov.Core, dtype: DType, threads: int) -> dict[str, Any]:
    """The CPU plugin's settings for `dtype` on `threads` cores, one inference at a time."""
    if dtype not in _PRECISION_HINT:
        raise UnsupportedPrecision(f"the openvino backend does not compute in {dtype} on CPU")
    capabilities = cpu_capabilities(core)
    if dtype is DType.BFLOAT16 and "BF16" not in capabilities:
        raise UnsupportedPrecision(
            "--dtype bfloat16 on the openvino backend needs a CPU with bfloat16 units "
            f"(AVX-512 BF16 or AMX); this one offers {', '.join(capabilities)}. "
            "Use --dtype float32, or --quantize int8 for speed"
        )
    return {
        "INFERENCE_PRECISION_HINT": _PRECISION_HINT[dtype],
        "INFERENCE_NUM_THREADS": threads,
        # A worker runs one batch at a time: one stream, latency first.
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
    }


def read_manifest(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST_FILE).read_text(encoding="utf-8"))


class OpenVINORunner(ModelRunner):
    def __init__(self, compiled: ov.CompiledModel, model_class: str) -> None:
        self.model_class = model_class
        self._request = compiled.create_infer_request()
        self._inputs = {port.get_any_name() for port in compiled.inputs}
        self._names = [port.get_any_name() for port in compiled.outputs]
        self.probe()

    @classmethod
    def load(cls, folder: Path, dtype: DType, threads: int) -> "OpenVINORunner":
        core = ov.Core()
        config = compile_config(core, dtype, threads)
        compiled = core.compile_model(str(folder / MODEL_FILE), "CPU", config)
        return cls(compiled, read_manifest(folder)["model_class"])

    def forward(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        token_type_ids: np.ndarray | None,
        outputs=None,
    ) -> dict[str, np.ndarray]:
        feed = {"input_ids": input_ids, "attention_mask": attention_mask}
        if "token_type_ids" in self._inputs:
            # As transformers does when none are given: every token in segment 0.
            feed["token_type_ids"] = (
                np.zeros_like(input_ids) if token_type_ids is None else token_type_ids
            )
        results = self._request.infer(feed)
        by_name = dict(zip(self._names, results.to_tuple(), strict=True))
        names = self._names if outputs is None else outputs
        return {name: np.asarray(by_name[name], dtype=np.float32) for name in names}
