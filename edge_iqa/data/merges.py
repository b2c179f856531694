"""Real burst merges that need no network weights, and the frame labels they define.

A burst frame is worth what it adds to the downstream task's output. Following the burst IQA
paper (Liang et al., "Burst Image Quality Assessment: A New Benchmark and Unified Framework
for Multiple Downstream Tasks"), the label of frame i for task m is

    Δᵢ = PSNR(mergeₘ(B), y) − PSNR(mergeₘ(B ∖ {bᵢ}), y)   [dB]

where y is the clean scene in the reference frame's geometry: a frame whose removal costs
PSNR is valuable (Δ > 0), a redundant one has Δ ≈ 0 and a harmful one Δ < 0. The reference
frame is never removed: :func:`frame_labels` gives it NaN.

Two tasks (:data:`TASKS`), both in plain numpy/scipy on float32 HxWx3 images in [0, 1]:

- ``denoise`` — :func:`merge_denoise`, the robust merge of HDR+ (Hasinoff et al., "Burst
  photography for high dynamic range and low-light imaging on mobile cameras", SIGGRAPH Asia
  2016): every frame is aligned to the reference (:mod:`edge_iqa.data.align`) and averaged
  with per-pixel weights w = 1 / (1 + max(d² − 2σ², 0) / (c·σ²)), the pixel-domain form of
  HDR+'s Wiener shrinkage, where d² is the local (Gaussian σ = 1.5 px) mean of the squared
  aligned difference to the reference, averaged over channels, σ² the noise variance and
  c = 0.5. 2σ² is what two independent noisy copies of one scene differ by, so a well-aligned
  frame gets w ≈ 1, and a misaligned, blurred, occluded or pure-noise region gets w ≈ 0. The
  reference always has weight 1. HDR+ merges 2D-DFT tiles and applies c·σ² per frequency
  (c = 8); the pixel domain is our choice (it keeps leave-one-out merges a weighted sum), and
  so are c = 0.5 and warping by cubic splines rather than bilinearly: on 36 bursts of the
  package photos (8 frames of 64 px) they gave the best mean gain over the reference frame
  (+5.3 dB; c = 4 gave +3.9 dB and lost to the reference on 8 bursts; bilinear warps blur
  fine texture by more than the noise the merge removes).
- ``sr2`` — :func:`merge_sr`, shift-and-add of the aligned low-resolution frames onto the ×2
  grid by normalised convolution (Knutsson & Westin, "Normalized and differential
  convolution", CVPR 1993), as handheld multi-frame super-resolution does (Wronski et al.,
  "Handheld Multi-Frame Super-Resolution", SIGGRAPH 2019): each sample of each frame is
  splatted onto the high-resolution grid at its position in the reference's geometry with an
  isotropic Gaussian (σ = 0.5 high-resolution px, 5x5 taps; Wronski uses anisotropic kernels
  steered by the local structure), weighted by a robustness weight, and the splatted values
  are divided by the splatted weights. The robustness compares local means, as Wronski's
  does: d² is the squared difference of the Gaussian-smoothed (σ = 1 px) frame and the
  smoothed reference warped into the frame's geometry, and w = 1 / (1 + max(d² − 2σ²κ, 0) /
  (c·(2σ²κ + τ²))) with κ = 1 / (4π) the smoothing's noise gain, c = 2 and τ = 0.01 (the
  level of aliasing that two shifted samplings of a sharp scene differ by). Holes — grid
  points few samples reach — are filled from the bicubically upsampled reference, softly:
  the output is (Σ splats + λ·up(ref)) / (Σ weights + λ) with λ = 0.3. σ, c and λ gave the
  best mean gain over bicubic upsampling of the reference on the 36 bursts above (+1.85 dB;
  the merge still loses to bicubic on 7 of them, low-noise bursts of aliased texture where
  alignment errors cost more than the extra samples give).

Choices where the papers are silent:

- Frames the burst repeats (a frame equal to another one within 5 % of the noise variance,
  as a camera that re-sends a buffer produces) are one exposure, not two: each copy gets
  1/n of its weight, so a repeated buffer is not double-counted and removing one copy leaves
  the output unchanged (Δ = 0). The robust merges assume independent noise per frame, which
  two copies of one buffer violate.
- The noise variance is the camera's noise model where it is known (``noise_sigma``, a std
  per pixel: HDR+ too takes it from the sensor's calibrated model); the synthetic bursts pass
  √(λ_shot·x + λ_read + q²) at the reference's values x, q² = 1/(12·255²) the 8-bit
  quantisation. Otherwise σ is estimated from the reference alone (median absolute response
  of Immerkær's Laplacian difference, "Fast noise variance estimation", CVIU 1996, per
  channel, averaged; texture inflates it). Either way it depends on the reference only, so
  every leave-one-out merge of one burst uses the same σ.
- PSNR (peak 1) leaves out a border of 4 frame pixels (8 on the ×2 grid), where alignment
  has no support.
- ``frame_labels`` takes ``clean`` at :data:`CLEAN_SCALE` (= 2) times the frames' resolution,
  the grid ``sr2`` restores; each task's :meth:`~BurstTask.target` maps it to its own y
  (``denoise``: the 2x2 area mean — how :mod:`edge_iqa.data.burst_synth` makes frames from the
  scene; ``sr2``: ``clean`` itself).

Alignment is per frame and independent of the other frames, so a task :meth:`prepares
<BurstTask.prepare>` a burst once (aligned values and weights per frame) and every
leave-one-out merge is a weighted sum over the kept frames (:meth:`BurstTask.combine`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Sequence

import numpy as np
from PIL import Image
from scipy import ndimage

from edge_iqa.data.align import AlignConfig, align, warp
from edge_iqa.errors import EdgeIQAError

CLEAN_SCALE = 2
BORDER = 4  # frame pixels left out of PSNR
DUPLICATE_FRACTION = 0.05  # of the noise variance: below it two frames are one buffer
MIN_SIGMA = 1e-3  # noise std floor: 8-bit frames carry at least their quantisation noise


# ---------------------------------------------------------------- image helpers


def as_burst(frames) -> np.ndarray:
    """A burst as one float32 array (T, H, W, 3); refuses ragged or non-RGB input."""
    arrays = [np.asarray(f, dtype=np.float32) for f in frames]
    if not arrays:
        raise EdgeIQAError("the burst has no frames; give at least the reference frame")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise EdgeIQAError(f"burst frames have different sizes {sorted(shapes)}; crop or resize them to one size")
    shape = shapes.pop()
    if len(shape) != 3 or shape[2] != 3:
        raise EdgeIQAError(f"burst frames must be HxWx3 RGB arrays, got shape {shape}")
    return np.stack(arrays)


def downsample_area(img: np.ndarray, factor: int) -> np.ndarray:
    """Mean over factor x factor blocks (a sensor integrating its pixels); sides must divide."""
    h, w = img.shape[:2]
    if h % factor or w % factor:
        raise EdgeIQAError(f"image of {w}x{h} px does not divide by {factor}; crop it to a multiple of {factor}")
    return img.reshape(h // factor, factor, w // factor, factor, -1).mean(axis=(1, 3)).astype(np.float32)


def upsample_bicubic(img: np.ndarray, scale: int) -> np.ndarray:
    """Pillow's bicubic (Keys, a = −0.5) upsampling of a float image, channel by channel."""
    h, w = img.shape[:2]
    channels = [
        np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c], dtype=np.float32), mode="F")
                   .resize((w * scale, h * scale), Image.Resampling.BICUBIC))
        for c in range(img.shape[2])
    ]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0)


def estimate_noise_sigma(img: np.ndarray) -> float:
    """Noise std of an image, robustly from Immerkær's Laplacian difference (median based)."""
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float32)
    sigmas = []
    for c in range(img.shape[2]):
        response = ndimage.convolve(img[..., c].astype(np.float32), kernel, mode="reflect")[1:-1, 1:-1]
        sigmas.append(np.median(np.abs(response)) / (0.6745 * 6.0))  # ‖kernel‖₂ = 6
    return float(np.mean(sigmas))


def noise_variance(ref: np.ndarray, noise_sigma: float | np.ndarray | None) -> np.ndarray:
    """Per-pixel noise variance (H, W) of a burst: from ``noise_sigma`` (a std, scalar or per
    pixel HxW / HxWx3) where the camera's noise model is known, else estimated from ``ref``."""
    h, w = ref.shape[:2]
    if noise_sigma is None:
        var = np.full((h, w), estimate_noise_sigma(ref) ** 2, dtype=np.float32)
    else:
        sigma = np.asarray(noise_sigma, dtype=np.float32)
        var = sigma**2 if sigma.ndim < 3 else (sigma**2).mean(axis=-1)
        var = np.broadcast_to(var, (h, w)).astype(np.float32)
    return np.maximum(var, MIN_SIGMA**2)


def psnr(x: np.ndarray, y: np.ndarray, border: int = 0) -> float:
    """PSNR in dB (peak 1) of x against y, leaving out ``border`` pixels on each side."""
    if border:
        x, y = x[border:-border, border:-border], y[border:-border, border:-border]
    mse = float(np.mean((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def duplicate_groups(burst: np.ndarray, variance: float) -> np.ndarray:
    """Group id per frame; frames within DUPLICATE_FRACTION of the noise variance (mean squared
    difference) share one."""
    limit = DUPLICATE_FRACTION * variance + 1e-10
    groups = np.arange(len(burst))
    for i in range(len(burst)):
        for j in range(i):
            if groups[j] == j and np.mean((burst[i] - burst[j]) ** 2) <= limit:
                groups[i] = j
                break
    return groups


def _check_ref(burst: np.ndarray, ref_index: int) -> None:
    if not 0 <= ref_index < len(burst):
        raise EdgeIQAError(f"reference index {ref_index} is outside the burst of {len(burst)} frames")


# ---------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Prepared:
    """One burst made ready for merges of any subset: per-frame values and weights."""

    values: np.ndarray  # (T, ...) what each frame contributes (aligned pixels or splatted sums)
    weights: np.ndarray  # (T, ...) its weight at each output pixel
    groups: np.ndarray  # (T,) duplicate group of each frame
    ref_index: int
    fill: np.ndarray | None = None  # prior image for grid points no sample reaches (SR)


class BurstTask:
    """A downstream burst task: ``prepare`` once, ``combine`` any subset, ``merge`` = both."""

    name = ""
    scale = 1  # output size / frame size

    def prepare(self, frames, ref_index: int = 0, noise_sigma: float | None = None) -> Prepared:
        raise NotImplementedError

    def combine(self, prepared: Prepared, keep: np.ndarray) -> np.ndarray:
        """The merge of the frames where ``keep`` is True (the reference is always kept)."""
        keep = np.asarray(keep, dtype=bool).copy()
        keep[prepared.ref_index] = True
        counts = np.bincount(prepared.groups[keep], minlength=len(keep)).astype(np.float32)
        factor = np.where(keep, 1.0 / np.maximum(counts[prepared.groups], 1.0), 0.0).astype(np.float32)
        weight = np.tensordot(factor, prepared.weights, axes=1)
        value = np.tensordot(factor, prepared.values, axes=1)
        return self._normalise(value, weight, prepared)

    def _normalise(self, value: np.ndarray, weight: np.ndarray, prepared: Prepared) -> np.ndarray:
        raise NotImplementedError

    def merge(self, frames, ref_index: int = 0, noise_sigma: float | None = None) -> np.ndarray:
        prepared = self.prepare(frames, ref_index, noise_sigma)
        return self.combine(prepared, np.ones(len(prepared.groups), dtype=bool))

    def target(self, clean: np.ndarray) -> np.ndarray:
        """The clean image this task's output is compared with, from the ×CLEAN_SCALE scene."""
        raise NotImplementedError

    @property
    def border(self) -> int:
        return BORDER * self.scale


@dataclass(frozen=True)
class DenoiseTask(BurstTask):
    """HDR+-style robust merge of aligned frames (see the module docstring)."""

    name: str = "denoise"
    c: float = 0.5
    window_sigma: float = 1.5
    warp_order: int = 3
    align_config: AlignConfig = AlignConfig()
    scale = 1

    def prepare(self, frames, ref_index: int = 0, noise_sigma: float | None = None) -> Prepared:
        burst = as_burst(frames)
        _check_ref(burst, ref_index)
        ref = burst[ref_index]
        var = ndimage.gaussian_filter(noise_variance(ref, noise_sigma), self.window_sigma, mode="nearest")
        values = np.empty_like(burst)
        weights = np.empty(burst.shape[:3], dtype=np.float32)
        for i, frame in enumerate(burst):
            if i == ref_index:
                values[i], weights[i] = ref, 1.0
                continue
            aligned, inside = warp(frame, align(ref, frame, self.align_config), order=self.warp_order)
            d2 = ndimage.gaussian_filter(((aligned - ref) ** 2).mean(axis=-1), self.window_sigma, mode="nearest")
            excess = np.maximum(d2 - 2.0 * var, 0.0)
            values[i] = aligned
            weights[i] = inside / (1.0 + excess / (self.c * var))
        values *= weights[..., None]
        return Prepared(values, weights, duplicate_groups(burst, float(var.mean())), ref_index)

    def _normalise(self, value, weight, prepared):
        return np.clip(value / weight[..., None], 0.0, 1.0)

    def target(self, clean: np.ndarray) -> np.ndarray:
        return downsample_area(np.asarray(clean, dtype=np.float32), CLEAN_SCALE)


@dataclass(frozen=True)
class SuperResolutionTask(BurstTask):
    """Shift-and-add ×scale by normalised convolution (see the module docstring)."""

    name: str = "sr2"
    scale: int = 2
    splat_sigma: float = 0.5
    c: float = 2.0
    tau: float = 0.01
    fill_weight: float = 0.3
    align_config: AlignConfig = AlignConfig()

    def prepare(self, frames, ref_index: int = 0, noise_sigma: float | None = None) -> Prepared:
        burst = as_burst(frames)
        _check_ref(burst, ref_index)
        t, h, w, _ = burst.shape
        ref = burst[ref_index]
        var = noise_variance(ref, noise_sigma)
        s = self.scale
        values = np.empty((t, h * s, w * s, 3), dtype=np.float32)
        weights = np.empty((t, h * s, w * s), dtype=np.float32)
        smooth_ref = ndimage.gaussian_filter(ref, (1.0, 1.0, 0), mode="nearest")
        for i, frame in enumerate(burst):
            if i == ref_index:
                flow, robust = np.zeros((h, w, 2), np.float32), np.ones((h, w), np.float32)
            else:
                flow = align(frame, ref, self.align_config)  # ref(q + flow) ≈ frame(q)
                robust = self._robustness(frame, smooth_ref, flow, var)
            values[i], weights[i] = self._splat(frame, flow, robust)
        fill = upsample_bicubic(ref, s)
        return Prepared(values, weights, duplicate_groups(burst, float(var.mean())), ref_index, fill)

    def _robustness(self, frame, smooth_ref, flow, var) -> np.ndarray:
        warped_ref, inside = warp(smooth_ref, flow)
        smooth = ndimage.gaussian_filter(frame, (1.0, 1.0, 0), mode="nearest")
        d2 = ((smooth - warped_ref) ** 2).mean(axis=-1)
        noise = 2.0 * warp(var, flow)[0] / (4.0 * math.pi)
        excess = np.maximum(d2 - noise, 0.0)
        return inside / (1.0 + excess / (self.c * (noise + self.tau**2)))

    def _splat(self, frame, flow, robust) -> tuple[np.ndarray, np.ndarray]:
        """Sums of Gaussian-weighted samples (and of the weights) on the ×scale grid."""
        h, w = frame.shape[:2]
        s = self.scale
        qy, qx = np.mgrid[0:h, 0:w].astype(np.float32)
        py = s * (qy + flow[..., 0] + 0.5) - 0.5  # the sample's position on the high-res grid
        px = s * (qx + flow[..., 1] + 0.5) - 0.5
        cy, cx = np.rint(py).astype(np.int64), np.rint(px).astype(np.int64)
        size = (h * s) * (w * s)
        num = np.zeros((3, size), dtype=np.float64)
        den = np.zeros(size, dtype=np.float64)
        flat = frame.reshape(-1, 3)
        for dy in range(-2, 3):
            for dx in range(-2, 3):
                ty, tx = cy + dy, cx + dx
                ok = (ty >= 0) & (ty < h * s) & (tx >= 0) & (tx < w * s)
                k = np.exp(-((ty - py) ** 2 + (tx - px) ** 2) / (2.0 * self.splat_sigma**2)) * robust * ok
                index = np.where(ok, ty * (w * s) + tx, 0).ravel()
                k = k.ravel()
                den += np.bincount(index, weights=k, minlength=size)
                for c in range(3):
                    num[c] += np.bincount(index, weights=k * flat[:, c], minlength=size)
        return (num.T.reshape(h * s, w * s, 3).astype(np.float32),
                den.reshape(h * s, w * s).astype(np.float32))

    def _normalise(self, value, weight, prepared):
        lam = self.fill_weight
        return np.clip((value + lam * prepared.fill) / (weight[..., None] + lam), 0.0, 1.0)

    def target(self, clean: np.ndarray) -> np.ndarray:
        clean = np.asarray(clean, dtype=np.float32)
        if CLEAN_SCALE != self.scale:
            return downsample_area(clean, CLEAN_SCALE // self.scale)
        return clean


TASKS: dict[str, BurstTask] = {"denoise": DenoiseTask(), "sr2": SuperResolutionTask()}


def get_task(task: str | BurstTask) -> BurstTask:
    """A task of :data:`TASKS` by name (or the task object itself)."""
    if isinstance(task, BurstTask):
        return task
    if task not in TASKS:
        raise EdgeIQAError(f"unknown burst task {task!r}; choose one of {', '.join(TASKS)}")
    return TASKS[task]


def merge_denoise(frames, ref_index: int = 0, noise_sigma: float | None = None) -> np.ndarray:
    """The robust HDR+-style merge of a burst, in the reference frame's geometry (HxWx3)."""
    return TASKS["denoise"].merge(frames, ref_index, noise_sigma)


def merge_sr(frames, scale: int = 2, ref_index: int = 0, noise_sigma: float | np.ndarray | None = None) -> np.ndarray:
    """Shift-and-add super-resolution of a burst onto the ×``scale`` grid (sH x sW x 3)."""
    task = TASKS["sr2"] if scale == 2 else SuperResolutionTask(name=f"sr{scale}", scale=scale)
    return task.merge(frames, ref_index, noise_sigma)


# ---------------------------------------------------------------- labels


def _check_clean(burst: np.ndarray, clean: np.ndarray) -> np.ndarray:
    clean = np.asarray(clean, dtype=np.float32)
    want = (burst.shape[1] * CLEAN_SCALE, burst.shape[2] * CLEAN_SCALE, 3)
    if clean.shape != want:
        raise EdgeIQAError(
            f"the clean scene is {clean.shape} but a burst of {burst.shape[2]}x{burst.shape[1]} frames needs "
            f"{want[1]}x{want[0]}x3 (CLEAN_SCALE = {CLEAN_SCALE} times the frames)"
        )
    return clean


def merge_psnr(frames, clean: np.ndarray, task: str | BurstTask, ref_index: int = 0,
               noise_sigma: float | np.ndarray | None = None) -> float:
    """PSNR (dB) of the task's merge of ``frames`` against its target made from ``clean``."""
    task = get_task(task)
    burst = as_burst(frames)
    y = task.target(_check_clean(burst, clean))
    return psnr(task.merge(burst, ref_index, noise_sigma), y, task.border)


def labels_by_length(
    burst, clean: np.ndarray, task: str | BurstTask, lengths: Iterable[int], ref_index: int = 0,
    noise_sigma: float | np.ndarray | None = None,
) -> dict[int, np.ndarray]:
    """Δ per frame (dB) of the burst's first ``k`` frames, for each ``k`` in ``lengths``.

    The burst is aligned once; the reference (which must be among the first ``k``) gets NaN.
    """
    task = get_task(task)
    burst = as_burst(burst)
    y = task.target(_check_clean(burst, clean))
    prepared = task.prepare(burst, ref_index, noise_sigma)
    out = {}
    for k in lengths:
        if not ref_index < k <= len(burst):
            raise EdgeIQAError(f"burst length {k} must include the reference {ref_index} and be <= {len(burst)}")
        keep = np.arange(len(burst)) < k
        full = psnr(task.combine(prepared, keep), y, task.border)
        delta = np.full(k, np.nan)
        for i in range(k):
            if i != ref_index:
                without = keep.copy()
                without[i] = False
                delta[i] = full - psnr(task.combine(prepared, without), y, task.border)
        out[int(k)] = delta
    return out


def frame_labels(
    burst, clean: np.ndarray, task: str | BurstTask, ref_index: int = 0,
    noise_sigma: float | np.ndarray | None = None,
) -> np.ndarray:
    """Δᵢ = PSNR(merge(B), y) − PSNR(merge(B ∖ {bᵢ}), y) in dB per frame; NaN at the reference.

    ``burst``: T frames HxWx3 in [0, 1]; ``clean``: the clean scene in the reference's geometry
    at CLEAN_SCALE × the frames' size; ``task``: a name of :data:`TASKS` or a task object;
    ``noise_sigma``: the noise std where the noise model is known (see :func:`noise_variance`).
    """
    frames = as_burst(burst)
    return labels_by_length(frames, clean, task, (len(frames),), ref_index, noise_sigma)[len(frames)]


def reference_mask(n_frames: int, ref_index: int = 0) -> np.ndarray:
    """True at the reference frame: it is never removed, and losses and metrics leave it out."""
    mask = np.zeros(n_frames, dtype=bool)
    mask[ref_index] = True
    return mask


def score_from_delta(delta_db: Sequence[float] | np.ndarray) -> np.ndarray:
    """The stored label rule s = clip((Δ + 1 dB) / 5 dB, 0, 1); see :data:`LABEL_RULE`."""
    return np.clip((np.asarray(delta_db, dtype=np.float64) + 1.0) / 5.0, 0.0, 1.0)


LABEL_RULE = "score = clip((delta_db + 1) / 5, 0, 1); a score difference of 0.02 is 0.1 dB"
