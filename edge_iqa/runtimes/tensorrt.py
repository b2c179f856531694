"""TensorRT backend: ``.plan``/``.engine`` files built by ``edge-iqa export --format tensorrt``
(or its ``build_engine.sh``), run where the ``tensorrt`` package imports (an NVIDIA GPU).

An engine holds no metadata of ours: the model config comes from the ``<engine>.json`` sidecar
the exporter writes. Device buffers and the stream come from NVIDIA's CUDA runtime bindings
(:mod:`edge_iqa.runtimes.cuda_buffers`), so running an engine needs ``tensorrt`` and
``cuda-bindings``, not torch; engine building stays in :mod:`export.tensorrt`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError
from edge_iqa.runtimes.base import CONFIG_KEY, BatchFn, Loaded, importable, package_version

NAME = "tensorrt"
SUFFIXES = (".plan", ".engine")
DEFAULT_MAX_BATCH = 16  # the engine's optimisation profile: batches above it run in chunks


def unavailable() -> str | None:
    if not importable("tensorrt"):
        return ("TensorRT engines run only where the tensorrt package imports (an NVIDIA GPU); "
                "score its ONNX graph instead")
    if not (importable("cuda.bindings") or importable("cuda.cudart")):
        return "TensorRT engines need NVIDIA's CUDA runtime bindings for their buffers: pip install cuda-bindings"
    return None


def tensorrt_available() -> bool:
    return unavailable() is None


def version() -> str:
    return package_version("tensorrt")


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    sidecar = Path(str(engine_path) + ".json")
    if not sidecar.is_file():
        raise EdgeIQAError(f"{engine_path}: no {sidecar.name} next to the engine; it holds the model config "
                           "written by `edge-iqa export`")
    try:
        data = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EdgeIQAError(f"{sidecar}: not readable JSON ({err}); re-export the engine") from None
    if not isinstance(data, dict):
        raise EdgeIQAError(f"{sidecar}: holds no JSON object; re-export the engine")
    return data


def config_of_engine(engine_path: str | Path) -> ModelConfig:
    sidecar = read_sidecar(engine_path)
    if CONFIG_KEY not in sidecar:
        raise EdgeIQAError(f"{engine_path}: its .json sidecar holds no edge-iqa model config; re-export it")
    return ModelConfig.stored_in(engine_path, sidecar[CONFIG_KEY])


def trt_batch_fn(engine_path: str | Path, max_batch: int = DEFAULT_MAX_BATCH) -> BatchFn:
    """A Scorer batch function running the engine on the GPU (inputs in chunks of ``max_batch``).

    Photo engines give (N,) scores; burst engines (their sidecar's config has ``burst``) the
    (N, n_tasks, T) ``scores`` of the burst graph contract.
    """
    import tensorrt as trt

    from edge_iqa.runtimes.cuda_buffers import DeviceBuffers

    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(Path(engine_path).read_bytes())
    if engine is None:
        raise EdgeIQAError(f"{engine_path}: TensorRT cannot deserialize this engine (other TensorRT version or GPU?)")
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
    config = config_of_engine(engine_path)
    burst = config.burst is not None
    output = "scores" if burst else "score"  # export.metadata.output_name: the graph contract's output

    buffers = DeviceBuffers()

    def run_chunk(views: Sequence[np.ndarray]) -> np.ndarray:
        for name, view in zip(inputs, views):
            context.set_input_shape(name, tuple(view.shape))
            context.set_tensor_address(name, buffers.upload(name, view))
        shape = tuple(context.get_tensor_shape(output))
        context.set_tensor_address(output, buffers.address(output, int(np.prod(shape)) * 4))
        if not context.execute_async_v3(buffers.stream_handle):
            raise EdgeIQAError(f"{engine_path}: TensorRT execution failed")
        scores = buffers.download(output, shape)
        return scores if burst else scores.reshape(-1)

    def run(views: Sequence[np.ndarray]) -> np.ndarray:
        n = len(views[0])
        return np.concatenate([run_chunk([v[i:i + max_batch] for v in views]) for i in range(0, n, max_batch)])

    return run


def load(path: str | Path, *, threads: int = 0, device: str = "cuda") -> Loaded:
    """``threads`` does not apply (the GPU runs the engine); ``device`` is always the GPU."""
    config = config_of_engine(path)  # a bad sidecar is named before the missing runtime
    reason = unavailable()
    if reason:
        raise EdgeIQAError(f"{path}: {reason}")
    return Loaded(config, trt_batch_fn(path), NAME, version(), "cuda", Path(path), threads)
