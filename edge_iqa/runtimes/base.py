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

CONFIG_KEY = "edge_iqa.config"  # the ModelConfig JSON in every export's metadata (ONNX props, sidecar, CoreML)
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
