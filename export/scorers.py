"""Scorers for exported artifacts whose runtime is not ONNX Runtime: TensorRT engines, CoreML packages.

``load_artifact_scorer(path)`` gives an :class:`edge_iqa.scoring.Scorer` for ``.plan``/``.engine``
(TensorRT, config from the JSON sidecar) and ``.mlpackage`` (CoreML, config from the package
metadata); :func:`edge_iqa.scoring.load` routes those suffixes here and ``.onnx`` to ONNX Runtime.
Where the runtime is missing it says so in one line instead of scoring with something else.
"""

from __future__ import annotations

from pathlib import Path

from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError
from edge_iqa.onnx_runtime import CONFIG_KEY

ENGINE_SUFFIXES = (".plan", ".engine")


def load_artifact_scorer(path: str | Path):
    from edge_iqa.scoring import Scorer

    path = Path(path)
    if not path.exists():
        raise EdgeIQAError(f"{path}: file not found")
    if path.suffix in ENGINE_SUFFIXES:
        from export.tensorrt import read_sidecar, tensorrt_available, trt_batch_fn

        sidecar = read_sidecar(path)
        if CONFIG_KEY not in sidecar:
            raise EdgeIQAError(f"{path}: its .json sidecar holds no edge-iqa model config; re-export it")
        config = ModelConfig.from_dict(sidecar[CONFIG_KEY])
        if not tensorrt_available():
            raise EdgeIQAError(f"{path}: TensorRT engines run only where the tensorrt package imports (a GPU); "
                               "score its ONNX graph instead")
        return Scorer(config, trt_batch_fn(path), source=str(path))
    if path.suffix == ".mlpackage":
        from export.coreml import coreml_batch_fn, coreml_runtime_available, read_coreml_metadata

        metadata = read_coreml_metadata(path)
        if CONFIG_KEY not in metadata:
            raise EdgeIQAError(f"{path}: a CoreML package without edge-iqa's model config; score the packages "
                               "`edge-iqa export` writes")
        config = ModelConfig.from_json(metadata[CONFIG_KEY])
        if not coreml_runtime_available():
            raise EdgeIQAError(f"{path}: CoreML packages predict only on macOS; score the ONNX export here")
        return Scorer(config, coreml_batch_fn(path), source=str(path))
    raise EdgeIQAError(f"{path}: unknown artifact type; give .plan/.engine or .mlpackage")
