"""Score with an exported ONNX model in ONNX Runtime.

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
    """The graph takes one float NCHW RGB input per view (NTCHW for a burst model: T frames), of
    the view's size where the size is fixed."""
    if len(inputs) != len(config.views):
        _mismatch(path, f"the graph has {len(inputs)} input(s), its config has {len(config.views)} view(s)")
    lead = ["N"] if config.burst is None else ["N", "T"]
    for spec, view in zip(inputs, config.views):
        height, width = view.output_size((0, 0)) if view.kind != "full" else ("H", "W")
        wanted = [*lead, 3, height, width]
        if spec.type != "tensor(float)":
            _mismatch(path, f"input {spec.name!r} is {spec.type}, the view {view.spec()} gives tensor(float)")
        shape = list(spec.shape)
        fixed = [isinstance(w, int) for w in wanted]
        if len(shape) != len(wanted) or any(f and isinstance(g, int) and g != w
                                            for f, g, w in zip(fixed, shape, wanted)):
            what = "a burst model's view" if config.burst is not None else "the view"
            _mismatch(path, f"input {spec.name!r} has shape {_dims(shape)}, {what} {view.spec()} gives "
                            f"{_dims(wanted)}")


def check_outputs(outputs, config: ModelConfig, path: str | Path) -> None:
    """A photo graph gives one score per image; a burst graph one (N, n_tasks, T) output."""
    if config.burst is None:
        return  # photo graphs: (N,) or (N, 1), checked as before by their scores' count
    tasks = len(config.burst.tasks)
    shape = list(outputs[0].shape) if outputs else []
    if len(outputs) != 1 or len(shape) != 3 or (isinstance(shape[1], int) and shape[1] != tasks):
        got = ", ".join(f"{o.name} {_dims(list(o.shape))}" for o in outputs) or "none"
        _mismatch(path, f"a burst model gives one output (N, {tasks} tasks, T), the graph gives {got}")


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
    check_outputs(session.get_outputs(), config, path)
    names = [i.name for i in session.get_inputs()]
    burst = config.burst is not None

    def run(views: Sequence[np.ndarray]) -> np.ndarray:
        feeds = {name: np.ascontiguousarray(v, dtype=np.float32) for name, v in zip(names, views)}
        scores = session.run(None, feeds)[0]
        return scores if burst else scores.reshape(-1)  # burst: (N, n_tasks, T)

    return Scorer(config, run, source=str(path))
