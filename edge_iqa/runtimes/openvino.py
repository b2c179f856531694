"""OpenVINO backend: the same ``.onnx`` exports ONNX Runtime scores, compiled for the CPU by
OpenVINO (what an Intel or AMD CPU box would pick instead of ONNX Runtime). A QDQ INT8 graph
becomes OpenVINO's FakeQuantize ops, which its low-precision transformations run as int8.

OpenVINO's ONNX frontend keeps the graph's ``metadata_props`` in the model's ``framework``
runtime info, so the config comes from the file alone, as in ONNX Runtime. ``threads`` sets
``INFERENCE_NUM_THREADS`` with one stream and the latency hint (one request at a time).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError
from edge_iqa.runtimes.base import CONFIG_KEY, Loaded, check_graph, importable, package_version

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


@dataclass(frozen=True)
class _Port:
    """An OpenVINO model port in ONNX Runtime's terms, for :func:`edge_iqa.runtimes.base.check_graph`."""

    name: str
    type: str
    shape: list


def _ports(ports) -> list[_Port]:
    import openvino as ov

    return [_Port(port.get_any_name(), "tensor(float)" if port.get_element_type() == ov.Type.f32
                  else f"tensor({port.get_element_type().get_type_name()})",
                  [d.get_length() if d.is_static else None for d in port.get_partial_shape()])
            for port in ports]


def _why_unread(message: str) -> str:
    """One line from OpenVINO's read error: the ops it could not convert (its lines ``-- OP with a
    message:``), or else its first line."""
    failed: set[str] = set()
    for line in message.splitlines():
        if line.startswith("-- "):  # "-- OP with a message:", "-- No conversion rule found for operations: A, B"
            ops = line[3:].split(" with a message")[0].split(": ")[-1]
            failed.update(op.strip() for op in ops.split(","))
    if not failed:
        return message.strip().splitlines()[0] if message.strip() else "no reason given"
    why = f"ops it cannot convert: {', '.join(sorted(failed))}"
    if any(op.startswith("com.microsoft.") for op in failed):
        why += "; that is ONNX Runtime's QOperator INT8 layout: export with --cpu-layout qdq for OpenVINO"
    return why


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
        raise EdgeIQAError(f"{path}: OpenVINO cannot read it ({_why_unread(str(err))})") from None
    config = _config_of(model, path)
    check_graph(_ports(model.inputs), _ports(model.outputs), config, path)
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
