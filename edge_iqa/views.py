"""Views: turn one decoded photo into the tensors each branch of the model sees.

- ``resize``: center-crop to the view's aspect, then resize (antialiased bilinear), the global
  branch of the AIM 2024 UHD-IQA baseline and winners.
- ``center_crop``: native pixels from the middle of the photo.
- ``fragments``: the photo is cut into a G×G grid and one P×P native-pixel patch is taken from
  each cell and spliced into a (G·P)×(G·P) mosaic (Wu et al., "FAST-VQA: Efficient End-to-End
  Video Quality Assessment with Fragment Sampling", ECCV 2022), the distortion branch of the
  AIM 2024 winners.
- ``full``: the photo at native resolution.

Views are deterministic when ``rng`` is None (evaluation, export parity, profiling) and draw
random crop offsets only when a training ``rng`` is given. Outputs are float32 CHW in [0, 1];
normalisation lives inside the model.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from PIL import Image

from edge_iqa.config import ViewConfig
from edge_iqa.errors import ImageError


def _aspect_crop_box(width: int, height: int, out_h: int, out_w: int, rng: np.random.Generator | None):
    """The largest box of aspect out_w:out_h inside the image; centred unless rng is given."""
    target = out_w / out_h
    if width / height > target:
        crop_w, crop_h = height * target, float(height)
    else:
        crop_w, crop_h = float(width), width / target
    left = (width - crop_w) * (rng.random() if rng is not None else 0.5)
    top = (height - crop_h) * (rng.random() if rng is not None else 0.5)
    return (left, top, left + crop_w, top + crop_h)


def _to_chw(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array.transpose(2, 0, 1), dtype=np.float32) / np.float32(255.0)


def _too_small(view: ViewConfig, width: int, height: int, need_w: int, need_h: int, what: str) -> ImageError:
    return ImageError(
        f"image of {width}x{height} px is smaller than the {view.spec()} view needs ({what} of "
        f"{need_w}x{need_h} px); use a resize view or a smaller crop/patch"
    )


def resize_view(image: Image.Image, view: ViewConfig, rng: np.random.Generator | None = None) -> np.ndarray:
    out_h, out_w = view.size
    box = _aspect_crop_box(image.width, image.height, out_h, out_w, rng)
    return _to_chw(np.asarray(image.resize((out_w, out_h), Image.BILINEAR, box=box)))


def center_crop_view(image: Image.Image, view: ViewConfig, rng: np.random.Generator | None = None) -> np.ndarray:
    out_h, out_w = view.size
    if image.width < out_w or image.height < out_h:
        raise _too_small(view, image.width, image.height, out_w, out_h, "a crop")
    if rng is None:
        left, top = (image.width - out_w) // 2, (image.height - out_h) // 2
    else:
        left = int(rng.integers(0, image.width - out_w + 1))
        top = int(rng.integers(0, image.height - out_h + 1))
    return _to_chw(np.asarray(image.crop((left, top, left + out_w, top + out_h))))


def fragments_view(image: Image.Image, view: ViewConfig, rng: np.random.Generator | None = None) -> np.ndarray:
    grid, patch = view.grid, view.patch
    cell_w, cell_h = image.width // grid, image.height // grid
    if cell_w < patch or cell_h < patch:
        raise _too_small(view, image.width, image.height, grid * patch, grid * patch, "a grid of patches")
    pixels = np.asarray(image)
    mosaic = np.empty((grid * patch, grid * patch, 3), dtype=np.uint8)
    for row in range(grid):
        for col in range(grid):
            if rng is None:
                dy, dx = (cell_h - patch) // 2, (cell_w - patch) // 2
            else:
                dy, dx = int(rng.integers(0, cell_h - patch + 1)), int(rng.integers(0, cell_w - patch + 1))
            y, x = row * cell_h + dy, col * cell_w + dx
            mosaic[row * patch:(row + 1) * patch, col * patch:(col + 1) * patch] = pixels[y:y + patch, x:x + patch]
    return _to_chw(mosaic)


def full_view(image: Image.Image, view: ViewConfig, rng: np.random.Generator | None = None) -> np.ndarray:
    return _to_chw(np.asarray(image))


VIEW_FUNCTIONS = {
    "resize": resize_view,
    "center_crop": center_crop_view,
    "fragments": fragments_view,
    "full": full_view,
}


def apply_view(image: Image.Image, view: ViewConfig, rng: np.random.Generator | None = None) -> np.ndarray:
    """One view of an RGB PIL image as a float32 CHW array in [0, 1]."""
    return VIEW_FUNCTIONS[view.kind](image, view, rng)


def apply_views(
    image: Image.Image, views: Sequence[ViewConfig], rng: np.random.Generator | None = None
) -> list[np.ndarray]:
    """Every view of the model, in order: the model's inputs for one photo."""
    return [apply_view(image, view, rng) for view in views]


def draft_size(views: Sequence[ViewConfig], source: tuple[int, int]) -> tuple[int, int] | None:
    """The smallest (width, height) the decoder may downscale a (width, height) source to.

    Only resize views tolerate a downscaled source; any other view needs native pixels and
    gives None. Used with Pillow's JPEG ``draft()`` so libjpeg downscales in the DCT domain.
    """
    if any(view.kind != "resize" for view in views):
        return None
    width, height = source
    scale = 0.0
    for view in views:
        out_h, out_w = view.size
        left, top, right, bottom = _aspect_crop_box(width, height, out_h, out_w, None)
        scale = max(scale, out_w / (right - left), out_h / (bottom - top))
    if scale >= 1.0:
        return None
    return (math.ceil(width * scale), math.ceil(height * scale))
