"""ONNX Runtime backend: ``.onnx`` exports on the CPU execution provider, or the CUDA and
TensorRT execution providers where this onnxruntime build has them (``device="cuda"`` /
``"tensorrt"``).

Every edge-iqa ONNX export stores its ``ModelConfig`` as JSON in the model's
``metadata_props`` under ``edge_iqa.config``, so the file alone fixes the views, input names
and score range. The graph's inputs are checked against those views when the file is loaded,
so a foreign model carrying copied metadata is refused in one line, not mid-run.

A burst model's graph (the contract of :mod:`edge_iqa.burst_model`) takes (N, T, 3, H, W)
per view and gives ``scores`` (N, n_tasks, T); its batch function returns that array as is,
a photo model's the (N,) scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError
from edge_iqa.runtimes.base import CONFIG_KEY, EXPORT_KEY, Loaded, check_graph, importable

NAME = "onnxruntime"
SUFFIXES = (".onnx",)
PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider", "tensorrt": "TensorrtExecutionProvider"}


def unavailable() -> str | None:
    if not importable("onnxruntime"):
        return "onnxruntime is not installed (pip install onnxruntime)"
    return None


def version() -> str:
    import onnxruntime as ort

    return ort.__version__


def providers_for(device: str) -> list[str]:
    """Execution providers for ``device`` (cpu, cuda, tensorrt), the CPU one last as fallback
    for nodes the accelerator does not take; one line when this build lacks the provider."""
    import onnxruntime as ort

    if device not in PROVIDERS:
        raise EdgeIQAError(f"ONNX Runtime device {device!r} unknown; choose one of {', '.join(PROVIDERS)}")
    wanted = PROVIDERS[device]
    if wanted not in ort.get_available_providers():
        raise EdgeIQAError(f"this onnxruntime build has no {wanted} (it has {', '.join(ort.get_available_providers())}); "
                           "install onnxruntime-gpu on a machine with an NVIDIA GPU, or use device cpu")
    return [wanted] if device == "cpu" else [wanted, PROVIDERS["cpu"]]


def onnx_session(path: str | Path, threads: int = 0, device: str = "cpu"):
    """An InferenceSession; ``threads`` > 0 fixes the intra-op pool (one inter-op thread: the
    graph runs sequentially), 0 leaves ONNX Runtime's default (one thread per core)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    providers = providers_for(device)
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
        raise EdgeIQAError(f"{path}: ONNX Runtime cannot load it ({str(err).splitlines()[0]})") from None


def config_of_session(session, path: str | Path) -> ModelConfig:
    meta = session.get_modelmeta().custom_metadata_map
    if CONFIG_KEY not in meta:
        raise EdgeIQAError(f"{path}: no {CONFIG_KEY!r} metadata; export it with `edge-iqa export`")
    return ModelConfig.stored_in(path, meta[CONFIG_KEY])


def warn_saturating_weights(session, path: str | Path) -> None:
    """One warning when a graph with 8-bit U8S8 weights (``export --cpu-weight-bits 8``) runs on a core whose
    integer kernels saturate (x86 without VNNI): its scores then differ from those of a VNNI or ARM machine."""
    import json
    import warnings

    from edge_iqa.bench import cpu_name, int8_sums_saturate

    settings = session.get_modelmeta().custom_metadata_map.get(EXPORT_KEY, "{}")
    try:
        bits = json.loads(settings).get("cpu_weight_bits")
    except (ValueError, AttributeError):
        return
    if bits == 8 and int8_sums_saturate():
        warnings.warn(f"{Path(path).name}: 8-bit INT8 weights on {cpu_name()}, a CPU without VNNI: ONNX Runtime's "
                      "AVX2 kernel saturates some int16 sums, so its scores differ from a VNNI or ARM machine's; "
                      "export with --cpu-weight-bits 7 for the same scores on every x86 CPU", stacklevel=3)


def load(path: str | Path, *, threads: int = 0, device: str = "cpu") -> Loaded:
    reason = unavailable()
    if reason:
        raise EdgeIQAError(f"{path}: {reason}")
    session = onnx_session(path, threads, device)
    config = config_of_session(session, path)
    check_graph(session.get_inputs(), session.get_outputs(), config, path)
    if device == "cpu":
        warn_saturating_weights(session, path)
    names = [i.name for i in session.get_inputs()]
    burst = config.burst is not None

    def run(views: Sequence[np.ndarray]) -> np.ndarray:
        feeds = {name: np.ascontiguousarray(v, dtype=np.float32) for name, v in zip(names, views)}
        scores = session.run(None, feeds)[0]
        return scores if burst else scores.reshape(-1)  # burst: (N, n_tasks, T)

    return Loaded(config, run, NAME, version(), session.get_providers()[0], Path(path), threads)

