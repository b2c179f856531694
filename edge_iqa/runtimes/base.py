"""What every runtime backend gives: a loaded artifact as a batch function plus its facts.

A backend module (one per runtime, listed in :data:`edge_iqa.runtimes.RUNTIMES`) defines
``NAME``, ``SUFFIXES``, ``unavailable() -> str | None`` (None when it can run here, else one
line saying why not), ``version() -> str`` and ``load(path, *, threads=0, device="cpu") ->
Loaded``. This module imports nothing heavy: scoring an export needs numpy, Pillow and the
runtime, never torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from edge_iqa.config import ModelConfig
from edge_iqa.errors import EdgeIQAError

CONFIG_KEY = "edge_iqa.config"  # the ModelConfig JSON in every export's metadata (ONNX props, sidecar, CoreML)
EXPORT_KEY = "edge_iqa.export"  # the export settings (export.metadata writes them)
BatchFn = Callable[[Sequence[np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class Loaded:
    """An artifact loaded in a runtime. ``batch_fn`` maps one array per view (N, 3, H, W), or
    (N, T, 3, H, W) for a burst model, to (N,) scores, or (N, n_tasks, T) for a burst model.
    ``threads`` is the intra-op thread count asked for (0: the runtime's default)."""

    config: ModelConfig
    batch_fn: BatchFn
    runtime: str
    version: str
    device: str
    path: Path
    threads: int = 0


def package_version(dist: str) -> str:
    """The installed version of distribution ``dist``, or ``"not installed"``."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "not installed"


def importable(module: str) -> bool:
    """Whether ``module`` can be found, without importing it."""
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def check_graph(inputs, outputs, config: ModelConfig, path: str | Path) -> None:
    """An ONNX graph's ports against its stored config, so that a foreign model carrying copied
    metadata is refused in one line when it is loaded, not mid-run. ``inputs``/``outputs``: ports
    with ``name``, ``type`` (``"tensor(float)"``) and ``shape`` (an int per fixed dimension; a
    name or None per free one), as ONNX Runtime gives them and :mod:`edge_iqa.runtimes.openvino`
    makes them."""
    _check_inputs(inputs, config, path)
    _check_outputs(outputs, config, path)


def _check_inputs(inputs, config: ModelConfig, path: str | Path) -> None:
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


def _check_outputs(outputs, config: ModelConfig, path: str | Path) -> None:
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
