"""Score with an exported ONNX model in ONNX Runtime.

Every edge-iqa ONNX export stores its ``ModelConfig`` as JSON in the model's
``metadata_props`` under ``edge_iqa.config``, so the file alone fixes the views, input names
and score range. The graph's inputs are checked against those views when the file is loaded,
so a foreign model carrying copied metadata is refused in one line, not mid-run.
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


def check_inputs(inputs, config: ModelConfig, path: str | Path) -> None:
    """The graph takes one float NCHW RGB input per view, of the view's size where the size is fixed."""
    if len(inputs) != len(config.views):
        _mismatch(path, f"the graph has {len(inputs)} input(s), its config has {len(config.views)} view(s)")
    for spec, view in zip(inputs, config.views):
        height, width = view.output_size((0, 0)) if view.kind != "full" else ("H", "W")
        wanted = ["N", 3, height, width]
        if spec.type != "tensor(float)":
            _mismatch(path, f"input {spec.name!r} is {spec.type}, the view {view.spec()} gives tensor(float)")
        shape = list(spec.shape)
        fixed = [isinstance(w, int) for w in wanted]
        if len(shape) != 4 or any(f and isinstance(g, int) and g != w for f, g, w in zip(fixed, shape, wanted)):
            _mismatch(path, f"input {spec.name!r} has shape {_dims(shape)}, the view {view.spec()} gives "
                            f"{_dims(wanted)}")


def _dims(shape) -> str:
    return "x".join("?" if d is None else str(d) for d in shape)


def _mismatch(path: str | Path, problem: str) -> None:
    raise EdgeIQAError(f"{path}: not an edge-iqa export, its inputs do not match its edge_iqa.config metadata "
                       f"({problem}); re-export it with `edge-iqa export`")


def load_onnx_scorer(path: str | Path, threads: int = 0):
    from edge_iqa.scoring import Scorer

    session = onnx_session(path, threads)
    config = config_of_session(session, path)
    check_inputs(session.get_inputs(), config, path)
    names = [i.name for i in session.get_inputs()]

    def run(views: Sequence[np.ndarray]) -> np.ndarray:
        feeds = {name: np.ascontiguousarray(v, dtype=np.float32) for name, v in zip(names, views)}
        return session.run(None, feeds)[0].reshape(-1)

    return Scorer(config, run, source=str(path))
