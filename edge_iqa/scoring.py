"""Scoring API: ``edge_iqa.load(path).score(image)`` for checkpoints and exported artifacts.

A ``Scorer`` pairs a model config (which fixes the views) with a batch function of any
backend — PyTorch, ONNX Runtime, later TensorRT or CoreML — that maps the view arrays of a
batch to scores. Files are decoded in a DataLoader; one that fails is reported in its row and
never stops the others.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from edge_iqa.config import ModelConfig
from edge_iqa.data.loader import ViewDataset, collate_views, load_views
from edge_iqa.errors import EdgeIQAError, ImageError
from edge_iqa.io import MAX_PIXELS, load_image, to_rgb_image
from edge_iqa.views import apply_views, draft_size

BatchFn = Callable[[Sequence[np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class ScoreResult:
    path: str
    score: float | None
    error: str | None = None


def torch_batch_fn(model: torch.nn.Module, device: str | torch.device = "cpu") -> BatchFn:
    model = model.to(device).eval()

    def run(views: Sequence[np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            inputs = [torch.as_tensor(v, device=device) for v in views]
            return model(*inputs).float().cpu().numpy()

    return run


def iter_view_batches(paths: Sequence[str | Path], config: ModelConfig, batch_size: int = 8,
                      num_workers: int = 0, max_pixels: int | None = MAX_PIXELS,
                      ) -> Iterator[tuple[list[np.ndarray], list[int], list[int]]]:
    """Yield (view arrays, indices decoded, indices that failed) batch by batch, in order."""
    dataset = ViewDataset(paths, config.views, max_pixels=max_pixels)
    full_view = any(v.kind == "full" for v in config.views)
    loader = DataLoader(dataset, batch_size=1 if full_view else batch_size, num_workers=num_workers,
                        collate_fn=_collate_with_indices)
    start = 0
    for batch, size in loader:
        expected = list(range(start, start + size))
        start += size
        if batch is None:
            yield [], [], expected
            continue
        views, _, indices = batch
        done = indices.tolist()
        yield [v.numpy() for v in views], done, sorted(set(expected) - set(done))


def _collate_with_indices(items):
    return collate_views(items), len(items)


class Scorer:
    def __init__(self, config: ModelConfig, batch_fn: BatchFn, source: str = ""):
        self.config = config
        self.batch_fn = batch_fn
        self.source = source
        self.max_pixels = MAX_PIXELS  # load_image's decompression-bomb limit for files (None: none)

    def views_of(self, image) -> list[np.ndarray]:
        """The model inputs for one path, PIL image or array (batch dimension added)."""
        if isinstance(image, (str, Path)):
            image = load_image(image, draft_to=lambda size: draft_size(self.config.views, size),
                               max_pixels=self.max_pixels)
        else:
            image = to_rgb_image(image)
        return [a[None] for a in apply_views(image, self.config.views)]

    def score(self, image) -> float:
        """Quality of one photo, in the model's score range (higher is better)."""
        return float(self.batch_fn(self.views_of(image))[0])

    def iter_score_paths(self, paths: str | Path | Sequence[str | Path], batch_size: int = 8,
                         num_workers: int = 0, progress: bool = False) -> Iterator[ScoreResult]:
        """Score many files, yielding one result per path in order, batch by batch as they are
        scored (so a caller can save them as they come); a file that fails gets its error."""
        from tqdm import tqdm

        paths = _path_list(paths)
        bar = tqdm(total=len(paths), unit="img", disable=not progress, desc="scoring")
        try:
            for views, done, failed in iter_view_batches(paths, self.config, batch_size, num_workers, self.max_pixels):
                scores = dict(zip(done, self.batch_fn(views).tolist())) if done else {}
                for i in sorted([*done, *failed]):
                    yield (ScoreResult(paths[i], float(scores[i])) if i in scores
                           else ScoreResult(paths[i], None, _error_of(paths[i], self.config, self.max_pixels)))
                bar.update(len(done) + len(failed))
        finally:
            bar.close()

    def score_paths(self, paths: str | Path | Sequence[str | Path], batch_size: int = 8, num_workers: int = 0,
                    progress: bool = False) -> list[ScoreResult]:
        """Score many files (or one path); a file that fails gets its error in its row."""
        return list(self.iter_score_paths(paths, batch_size, num_workers, progress))


def _path_list(paths: str | Path | Sequence[str | Path]) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        return [str(paths)]  # one path, not one row per character
    return [str(p) for p in paths]


def _error_of(path: str, config: ModelConfig, max_pixels: int | None = MAX_PIXELS) -> str:
    """Re-open a file that failed in a worker to get its one-line error for the result row."""
    try:
        load_views(path, config.views, max_pixels=max_pixels)
    except ImageError as err:
        return str(err)
    return "failed to decode"


def load(path: str | Path, device: str = "cpu") -> Scorer:
    """A scorer for a checkpoint (``.pt``) or an exported artifact.

    ``.onnx`` runs in ONNX Runtime; ``.plan``/``.engine`` (TensorRT) and ``.mlpackage`` (CoreML)
    run where their runtime imports and otherwise fail with one line saying so.
    """
    path = Path(path)
    if path.suffix in (".plan", ".engine", ".mlpackage"):
        from export.scorers import load_artifact_scorer

        return load_artifact_scorer(path)
    if path.suffix == ".onnx":
        from edge_iqa.onnx_runtime import load_onnx_scorer

        return load_onnx_scorer(path)
    if path.suffix in (".pt", ".pth"):
        from edge_iqa.checkpoint import load_checkpoint

        model, _ = load_checkpoint(path)
        return Scorer(model.config, torch_batch_fn(model, device), source=str(path))
    raise EdgeIQAError(f"{path}: unknown model file type; give a .pt checkpoint or an .onnx, .plan/.engine "
                       "or .mlpackage export")
