"""PyTorch eager backend: ``.pt`` checkpoints on the CPU, or CUDA where torch sees a GPU.

The only backend that imports torch (and timm, through the model): what a training box runs,
and the FP32 reference every export's parity is measured against.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from edge_iqa.errors import EdgeIQAError
from edge_iqa.runtimes.base import BatchFn, Loaded, importable, package_version

NAME = "torch"
SUFFIXES = (".pt", ".pth")


def unavailable() -> str | None:
    if not importable("torch"):
        return "torch is not installed (the runtime-only install scores exports; pip install edge-iqa for checkpoints)"
    return None


def version() -> str:
    return package_version("torch")


def torch_batch_fn(model, device="cpu") -> BatchFn:
    """PyTorch as a batch function: (B,) scores, or (B, n_tasks, T) for a burst model
    (``forward_all_tasks``, the graph contract of :mod:`edge_iqa.burst_model`)."""
    import torch

    model = model.to(device).eval()
    forward = model.forward_all_tasks if getattr(model.config, "burst", None) is not None else model

    def run(views: Sequence[np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            inputs = [torch.as_tensor(v, device=device) for v in views]
            return forward(*inputs).float().cpu().numpy()

    return run


def load(path: str | Path, *, threads: int = 0, device: str = "cpu") -> Loaded:
    """``threads`` > 0 sets torch's intra-op pool for the whole process (torch has one pool)."""
    reason = unavailable()
    if reason:
        raise EdgeIQAError(f"{path}: {reason}")
    import torch

    from edge_iqa.checkpoint import load_checkpoint

    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EdgeIQAError(f"{path}: device {device!r} asked, but torch sees no CUDA GPU here; use device cpu")
    if threads:
        torch.set_num_threads(threads)
    model, _ = load_checkpoint(path)
    return Loaded(model.config, torch_batch_fn(model, device), NAME, version(), device, Path(path), threads)
