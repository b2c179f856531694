"""Torch datasets that decode photos and apply a model's views.

``ViewDataset`` yields ``(views, target, index)`` for one photo: the model's input tensors, the
normalised target (or NaN when unlabeled) and the row index so callers can join results back.
A photo that fails to decode is reported once and dropped from its batch by
``collate_views``, so one corrupt file never stops an epoch or a scoring run.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from edge_iqa.config import ViewConfig
from edge_iqa.errors import ImageError
from edge_iqa.io import MAX_PIXELS, load_image
from edge_iqa.views import apply_views, draft_size

log = logging.getLogger("edge_iqa.data")


def load_views(path: str | Path, views: Sequence[ViewConfig], rng: np.random.Generator | None = None,
               max_pixels: int | None = MAX_PIXELS) -> list[np.ndarray]:
    """Decode ``path`` (with JPEG draft downscaling where the views allow it) and apply ``views``."""
    image = load_image(path, draft_to=lambda size: draft_size(views, size), max_pixels=max_pixels)
    try:
        return apply_views(image, views, rng)
    except ImageError as err:
        raise ImageError(f"{path}: {err}") from None


class ViewDataset(Dataset):
    def __init__(self, paths: Sequence[str | Path], views: Sequence[ViewConfig],
                 targets: Sequence[float] | None = None, train: bool = False, seed: int = 0,
                 max_pixels: int | None = MAX_PIXELS):
        self.paths = [Path(p) for p in paths]
        self.max_pixels = max_pixels
        self.views = tuple(views)
        self.targets = list(targets) if targets is not None else [math.nan] * len(self.paths)
        self.train = train
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Training crops differ per epoch but are reproducible from (seed, epoch, index)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        rng = np.random.default_rng((self.seed, self.epoch, index)) if self.train else None
        try:
            arrays = load_views(self.paths[index], self.views, rng, self.max_pixels)
        except ImageError as err:
            log.warning("skipped: %s", err)
            return None
        if self.train and rng.random() < 0.5:  # a mirrored photo has the same quality
            arrays = [a[:, :, ::-1] for a in arrays]
        tensors = tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in arrays)
        return tensors, torch.tensor(self.targets[index], dtype=torch.float32), index


def collate_views(items):
    """Stack one batch, dropping photos that failed to decode (``None`` items)."""
    items = [item for item in items if item is not None]
    if not items:
        return None
    views = tuple(torch.stack(group) for group in zip(*(item[0] for item in items)))
    targets = torch.stack([item[1] for item in items])
    indices = torch.tensor([item[2] for item in items])
    return views, targets, indices
