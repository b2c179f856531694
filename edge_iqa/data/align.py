"""Tile-wise registration of a burst frame to its reference, HDR+-style, for the burst merges.

The burst merges of :mod:`edge_iqa.data.merges` need each frame in the reference's geometry.
A frame of a hand-held burst is shifted by the hand's shake, slightly rotated and, in real
footage, locally displaced by parallax and moving objects, so one global translation is not
enough. :func:`align` estimates a smooth per-pixel flow, coarse to fine:

1. a global translation by phase correlation (Kuglin & Hines 1975) of the two grey images
   (Hann-windowed), with a parabolic sub-pixel peak;
2. on a Gaussian pyramid, from the coarsest level down, an exhaustive search of integer
   offsets in ``±radius`` px per tile around the current flow, by the tile's mean squared
   difference, with a parabolic sub-pixel refinement of the best offset per axis — the tile
   alignment of HDR+ (Hasinoff et al., "Burst photography for high dynamic range and
   low-light imaging on mobile cameras", SIGGRAPH Asia 2016, Sec. 4);
3. at full resolution a few Lucas–Kanade iterations per tile (Lucas & Kanade 1981), as the
   handheld super-resolution pipeline refines HDR+'s tiles (Wronski et al., "Handheld
   Multi-Frame Super-Resolution", SIGGRAPH 2019, Sec. 5.1).

Tiles overlap by half; the tile flows are interpolated bilinearly between tile centres into a
per-pixel flow. A small rotation is a flow that is linear in the pixel position, which
bilinear interpolation between tile centres reproduces exactly, so the flow survives a
rotation that a single translation cannot follow.

Choices where the papers leave room (or work at other sizes): tiles are 16 px (HDR+ uses 16
or 32 px on raw frames of 12+ MP; the bursts here are 48–128 px); the search radius is 2 px
per level (HDR+: 4 at coarse levels, 1 at the finest); the pyramid halves the image while its
shorter side is at least two tiles; images are aligned in grey (channel mean) after a
σ = 1 px Gaussian that keeps noise from steering the search; Lucas–Kanade uses the mean of
both images' gradients and a small ridge so that flat tiles keep their estimate.

Convention: ``flow[y, x] = (dy, dx)`` such that ``moving`` sampled at ``(y + dy, x + dx)``
matches ``fixed`` at ``(y, x)``; :func:`warp` applies it with bilinear interpolation
(``scipy.ndimage.map_coordinates``, order 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class AlignConfig:
    """Parameters of :func:`align`; the defaults are the choices the module docstring states."""

    tile: int = 16
    radius: int = 2
    lk_iterations: int = 3
    prefilter_sigma: float = 1.0
    max_levels: int = 4

    def __post_init__(self) -> None:
        if self.tile < 4 or self.tile % 2:
            raise ValueError(f"tile must be an even number of pixels >= 4, got {self.tile}")
        if self.radius < 1:
            raise ValueError(f"radius must be >= 1, got {self.radius}")


def gray(img: np.ndarray) -> np.ndarray:
    """The channel mean of an HxWx3 image (or the image itself if it is HxW), float32."""
    img = np.asarray(img, dtype=np.float32)
    return img.mean(axis=-1) if img.ndim == 3 else img


def warp(img: np.ndarray, flow: np.ndarray, order: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``img`` sampled at ``(y + flow[..., 0], x + flow[..., 1])`` (bilinear; ``order`` 3: cubic
    spline), and the mask of pixels whose sample fell inside ``img`` (outside, the nearest edge
    pixel is used)."""
    img = np.asarray(img, dtype=np.float32)
    h, w = flow.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    coords = np.stack([yy + flow[..., 0], xx + flow[..., 1]])
    hi, wi = img.shape[:2]
    inside = (coords[0] >= -0.5) & (coords[0] <= hi - 0.5) & (coords[1] >= -0.5) & (coords[1] <= wi - 0.5)
    if img.ndim == 2:
        return ndimage.map_coordinates(img, coords, order=order, mode="nearest"), inside
    out = np.empty((h, w, img.shape[2]), dtype=np.float32)
    for c in range(img.shape[2]):
        out[..., c] = ndimage.map_coordinates(img[..., c], coords, order=order, mode="nearest")
    return out, inside


def phase_correlation(fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """The translation ``(dy, dx)`` with ``moving(p + d) ≈ fixed(p)``, to sub-pixel precision."""
    h, w = fixed.shape
    window = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
    a = np.fft.rfft2((fixed - fixed.mean()) * window)
    b = np.fft.rfft2((moving - moving.mean()) * window)
    cross = b * np.conj(a)
    cross /= np.abs(cross) + 1e-12
    corr = np.fft.irfft2(cross, s=(h, w))
    peak = np.unravel_index(int(np.argmax(corr)), corr.shape)
    shift = np.empty(2)
    for axis, (p, n) in enumerate(zip(peak, (h, w))):
        before = corr[(peak[0] - 1) % h, peak[1]] if axis == 0 else corr[peak[0], (peak[1] - 1) % w]
        after = corr[(peak[0] + 1) % h, peak[1]] if axis == 0 else corr[peak[0], (peak[1] + 1) % w]
        shift[axis] = (p if p <= n // 2 else p - n) + _parabola_vertex(before, corr[peak], after)
    return shift


def _parabola_vertex(before, centre, after):
    """Offset in (-0.5, 0.5) of the extremum of the parabola through three equally spaced values."""
    denom = before - 2.0 * centre + after
    safe = np.where(np.abs(denom) > 1e-12, denom, 1.0)
    return np.where(np.abs(denom) > 1e-12, np.clip(0.5 * (before - after) / safe, -0.5, 0.5), 0.0)


class _TileGrid:
    """Centres of half-overlapping tiles on an HxW image, and bilinear tile → pixel interpolation."""

    def __init__(self, shape: tuple[int, int], tile: int) -> None:
        self.shape, self.tile = shape, tile
        self.stride = tile // 2
        self.cy = self._centres(shape[0])
        self.cx = self._centres(shape[1])

    def _centres(self, n: int) -> np.ndarray:
        first = min(self.tile // 2, (n - 1) / 2)
        count = max(1, int((n - 1 - 2 * first) // self.stride) + 1)
        return first + self.stride * np.arange(count)

    def sample(self, per_pixel: np.ndarray) -> np.ndarray:
        """Values of a per-pixel map at the tile centres (bilinear)."""
        yy, xx = np.meshgrid(self.cy, self.cx, indexing="ij")
        coords = np.stack([yy, xx])
        if per_pixel.ndim == 2:
            return ndimage.map_coordinates(per_pixel, coords, order=1, mode="nearest")
        return np.stack([ndimage.map_coordinates(per_pixel[..., k], coords, order=1, mode="nearest")
                         for k in range(per_pixel.shape[-1])], axis=-1)

    def box_mean(self, per_pixel: np.ndarray) -> np.ndarray:
        """Mean of a per-pixel map over each tile (box of ``tile`` px centred on the centre)."""
        return self.sample(ndimage.uniform_filter(per_pixel, size=self.tile, mode="nearest"))

    def to_pixels(self, grid: np.ndarray) -> np.ndarray:
        """A per-tile flow (gy, gx, 2) interpolated bilinearly to every pixel (H, W, 2)."""
        h, w = self.shape
        gy = (np.arange(h, dtype=np.float32) - self.cy[0]) / self.stride
        gx = (np.arange(w, dtype=np.float32) - self.cx[0]) / self.stride
        coords = np.stack(np.meshgrid(gy, gx, indexing="ij"))
        return np.stack([ndimage.map_coordinates(grid[..., k], coords, order=1, mode="nearest")
                         for k in range(2)], axis=-1).astype(np.float32)


def _pyramid(img: np.ndarray, levels: int) -> list[np.ndarray]:
    """Finest first; each level is the previous one Gaussian-blurred (σ = 1) and halved."""
    out = [img]
    for _ in range(levels - 1):
        out.append(ndimage.gaussian_filter(out[-1], 1.0, mode="nearest")[::2, ::2])
    return out


def _levels(shape: tuple[int, int], config: AlignConfig) -> int:
    n, side = 1, min(shape)
    while n < config.max_levels and side / 2 ** n >= 2 * config.tile:
        n += 1
    return n


def _resize_flow(flow: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A per-pixel flow of one pyramid level carried to the next finer one (values doubled)."""
    h, w = shape
    sy, sx = flow.shape[0] / h, flow.shape[1] / w
    yy = (np.arange(h, dtype=np.float32) + 0.5) * sy - 0.5
    xx = (np.arange(w, dtype=np.float32) + 0.5) * sx - 0.5
    coords = np.stack(np.meshgrid(yy, xx, indexing="ij"))
    scale = (1.0 / sy, 1.0 / sx)
    return np.stack([ndimage.map_coordinates(flow[..., k], coords, order=1, mode="nearest") * scale[k]
                     for k in range(2)], axis=-1).astype(np.float32)


def _search(fixed: np.ndarray, moving: np.ndarray, flow: np.ndarray, config: AlignConfig) -> np.ndarray:
    """One pyramid level of the tile search: the refined per-pixel flow."""
    grid = _TileGrid(fixed.shape, config.tile)
    warped, _ = warp(moving, flow)
    r = config.radius
    padded = np.pad(warped, r, mode="edge")
    h, w = fixed.shape
    offsets = range(-r, r + 1)
    cost = np.empty((2 * r + 1, 2 * r + 1, grid.cy.size, grid.cx.size), dtype=np.float32)
    for i, oy in enumerate(offsets):
        for j, ox in enumerate(offsets):
            shifted = padded[r + oy : r + oy + h, r + ox : r + ox + w]
            cost[i, j] = grid.box_mean((shifted - fixed) ** 2)
    flat = cost.reshape((2 * r + 1) ** 2, *cost.shape[2:])
    best = np.argmin(flat, axis=0)
    bi, bj = np.divmod(best, 2 * r + 1)
    ti, tj = np.meshgrid(np.arange(grid.cy.size), np.arange(grid.cx.size), indexing="ij")

    def at(i, j):
        return cost[np.clip(i, 0, 2 * r), np.clip(j, 0, 2 * r), ti, tj]

    centre = at(bi, bj)
    sub_y = np.where((bi > 0) & (bi < 2 * r), _parabola_vertex(at(bi - 1, bj), centre, at(bi + 1, bj)), 0.0)
    sub_x = np.where((bj > 0) & (bj < 2 * r), _parabola_vertex(at(bi, bj - 1), centre, at(bi, bj + 1)), 0.0)
    step = np.stack([bi - r + sub_y, bj - r + sub_x], axis=-1).astype(np.float32)
    tiles = grid.sample(flow) + step
    # A 3x3 median over the tile grid: a flat tile's search is a guess, its neighbours' is not.
    tiles = np.stack([ndimage.median_filter(tiles[..., k], size=3, mode="nearest") for k in range(2)], axis=-1)
    return grid.to_pixels(tiles)


def _lucas_kanade(fixed: np.ndarray, moving: np.ndarray, flow: np.ndarray, config: AlignConfig) -> np.ndarray:
    """Tile-wise Lucas–Kanade refinement of a per-pixel flow at full resolution."""
    grid = _TileGrid(fixed.shape, config.tile)
    tiles = grid.sample(flow)
    fy, fx = np.gradient(fixed)
    for _ in range(config.lk_iterations):
        warped, _ = warp(moving, grid.to_pixels(tiles))
        wy, wx = np.gradient(warped)
        gy, gx = 0.5 * (fy + wy), 0.5 * (fx + wx)
        err = warped - fixed
        a, b, c = grid.box_mean(gy * gy), grid.box_mean(gy * gx), grid.box_mean(gx * gx)
        ey, ex = grid.box_mean(gy * err), grid.box_mean(gx * err)
        ridge = 1e-2 * (a + c).mean() + 1e-9
        a, c = a + ridge, c + ridge
        det = a * c - b * b
        dy = -(c * ey - b * ex) / det
        dx = -(a * ex - b * ey) / det
        tiles = tiles + np.clip(np.stack([dy, dx], axis=-1), -1.0, 1.0).astype(np.float32)
    return grid.to_pixels(tiles)


def align(fixed: np.ndarray, moving: np.ndarray, config: AlignConfig = AlignConfig()) -> np.ndarray:
    """The per-pixel flow (H, W, 2) that registers ``moving`` onto ``fixed`` (same size)."""
    f = ndimage.gaussian_filter(gray(fixed), config.prefilter_sigma, mode="nearest")
    m = ndimage.gaussian_filter(gray(moving), config.prefilter_sigma, mode="nearest")
    if f.shape != m.shape:
        raise ValueError(f"frames must have one size, got {f.shape} and {m.shape}")
    levels = _levels(f.shape, config)
    fixed_pyr, moving_pyr = _pyramid(f, levels), _pyramid(m, levels)
    shift = phase_correlation(f, m) / 2 ** (levels - 1)
    flow = np.broadcast_to(shift.astype(np.float32), (*fixed_pyr[-1].shape, 2)).copy()
    for level in range(levels - 1, -1, -1):
        if flow.shape[:2] != fixed_pyr[level].shape:
            flow = _resize_flow(flow, fixed_pyr[level].shape)
        flow = _search(fixed_pyr[level], moving_pyr[level], flow, config)
    return _lucas_kanade(f, m, flow, config)
