"""Score with an exported ONNX model in ONNX Runtime.

Every edge-iqa ONNX export stores its ``ModelConfig`` as JSON in the model's
``metadata_props`` under ``edge_iqa.config``, so the file alone fixes the views, input names
and score range.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError

CONFIG_KEY = "edge_iqa.config"


def onnx_session(path: str | Path, threads: int = 0):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own Fail/InvalidGraph types
        raise EdgeIQAError(f"{path}: ONNX Runtime cannot load it ({str(err).splitlines()[0]})") from None


def config_of_session(session, path: str | Path) -> ModelConfig:
    meta = session.get_modelmeta().custom_metadata_map
    if CONFIG_KEY not in meta:
        raise EdgeIQAError(f"{path}: no {CONFIG_KEY!r} metadata; export it with `edge-iqa export`")
    return ModelConfig.from_json(meta[CONFIG_KEY])


def load_onnx_scorer(path: str | Path, threads: int = 0):
    from edge_iqa.scoring import Scorer

    session = onnx_session(path, threads)
    config = config_of_session(session, path)
    names = [i.name for i in session.get_inputs()]

    def run(views: Sequence[np.ndarray]) -> np.ndarray:
        feeds = {name: np.ascontiguousarray(v, dtype=np.float32) for name, v in zip(names, views)}
        return session.run(None, feeds)[0].reshape(-1)

    return Scorer(config, run, source=str(path))
