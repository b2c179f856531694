"""OpenVINO backend: the same ``.onnx`` exports ONNX Runtime scores, compiled for the CPU by
OpenVINO (what an Intel or AMD CPU box would pick instead of ONNX Runtime). A QDQ INT8 graph
becomes OpenVINO's FakeQuantize ops, which its low-precision transformations run as int8.

OpenVINO's ONNX frontend keeps the graph's ``metadata_props`` in the model's ``framework``
runtime info, so the config comes from the file alone, as in ONNX Runtime. ``threads`` sets
``INFERENCE_NUM_THREADS`` with one stream and the latency hint (one request at a time).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError
from edge_iqa.runtimes.base import CONFIG_KEY, Loaded, importable, package_version

NAME = "openvino"
SUFFIXES = (".onnx",)
DEVICES = {"cpu": "CPU", "gpu": "GPU", "npu": "NPU"}


def unavailable() -> str | None:
    if not importable("openvino"):
        return "openvino is not installed (pip install 'edge-iqa[openvino]' or pip install openvino)"
    return None


def version() -> str:
    return package_version("openvino")


def _config_of(model, path: Path) -> ModelConfig:
    try:
        text = model.get_rt_info(["framework", CONFIG_KEY]).astype(str)
    except RuntimeError:  # OpenVINO raises RuntimeError for a missing rt_info key
        raise EdgeIQAError(f"{path}: no {CONFIG_KEY!r} metadata; export it with `edge-iqa export`") from None
    return ModelConfig.stored_in(path, text)


def load(path: str | Path, *, threads: int = 0, device: str = "cpu") -> Loaded:
    reason = unavailable()
    if reason:
        raise EdgeIQAError(f"{path}: {reason}")
    import openvino as ov

    path = Path(path)
    if device not in DEVICES:
        raise EdgeIQAError(f"OpenVINO device {device!r} unknown; choose one of {', '.join(DEVICES)}")
    core = ov.Core()
    if DEVICES[device] not in core.available_devices:
        raise EdgeIQAError(f"OpenVINO sees no {DEVICES[device]} device here (it has "
                           f"{', '.join(core.available_devices)}); use device cpu")
    try:
        model = core.read_model(str(path))
    except RuntimeError as err:
        raise EdgeIQAError(f"{path}: OpenVINO cannot read it ({str(err).strip().splitlines()[0]})") from None
    config = _config_of(model, path)
    if len(model.inputs) != len(config.views):
        raise EdgeIQAError(f"{path}: not an edge-iqa export, the graph has {len(model.inputs)} input(s), its config "
                           f"{len(config.views)} view(s); re-export it with `edge-iqa export`")
    # f32: OpenVINO would otherwise run float layers in bf16/f16 where the CPU has them (a silent precision drop)
    properties = {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": "1", "INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        properties["INFERENCE_NUM_THREADS"] = str(threads)
    compiled = core.compile_model(model, DEVICES[device], properties)
    request = compiled.create_infer_request()
    burst = config.burst is not None

    def run(views: Sequence[np.ndarray]) -> np.ndarray:
        request.infer([np.ascontiguousarray(v, dtype=np.float32) for v in views])
        scores = np.array(request.get_output_tensor(0).data, dtype=np.float32)  # a copy: the buffer is reused
        return scores if burst else scores.reshape(-1)  # burst: (N, n_tasks, T)

    return Loaded(config, run, NAME, version(), DEVICES[device], path, threads)
