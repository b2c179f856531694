"""The embedded default dataset: real photos, known distortions, full-reference labels.

With no IQA data at hand, ``edge-iqa data synth`` builds a small dataset from the colour photos
that installed packages ship (scikit-image, scikit-learn, matplotlib; optionally the grayscale
scikit-image photos as extra references) or from the photos of ``--photos DIR``:

1. each reference is downscaled (antialiased) so its longer side is at most ``max_side``,
   cropped to even dimensions and stored as a lossless PNG under ``refs/`` — that PNG *is*
   the reference;
2. every distortion of :data:`DISTORTIONS` is applied at 5 levels, from barely visible to
   strong, plus a few two-distortion combinations at the middle level, and each result is
   stored as a lossless PNG under ``images/``;
3. each distorted image is labelled by SSIM against its reference (Wang et al., "Image Quality
   Assessment: From Error Visibility to Structural Similarity", IEEE TIP 2004), computed on
   the stored PNGs exactly as :data:`LABEL` says, so anyone can recompute every label;
4. references, not images, are split into train/val/test, so no photo leaks across splits.

The data is for demos and tests. SSIM is a proxy for quality, not human opinion: never report
accuracy on this dataset as accuracy on real data.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import os
import re
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Callable, Mapping

import numpy as np
from PIL import Image, ImageOps

from edge_iqa.data.manifest import DATASET_JSON, MANIFEST, SPLITS, DatasetInfo, Record, write_dataset
from edge_iqa.errors import DatasetError

log = logging.getLogger("edge_iqa.data")

NAME = "edge-iqa-synth"
LEVELS = (1, 2, 3, 4, 5)
COMBO_LEVEL = 3
MIN_SIDE = 16  # shorter side; below it SSIM's 11 px window and the 6x down-up leave too little image
MIN_MAX_SIDE = 32
LABEL = (
    "skimage.metrics.structural_similarity(ref, dist, gaussian_weights=True, sigma=1.5, "
    "use_sample_covariance=False, data_range=1.0, channel_axis=-1) with ref and dist the stored "
    "PNGs read as RGB uint8 and divided by 255.0 (float64), clipped to [0, 1]"
)

# (import name, distribution name, folder inside the package, photo file names)
PACKAGE_PHOTOS: tuple[tuple[str, str, str, tuple[str, ...]], ...] = (
    ("skimage", "scikit-image", "data", (
        "astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png",
        "motorcycle_left.png", "motorcycle_right.png", "retina.jpg", "rocket.jpg",
    )),
    ("sklearn", "scikit-learn", "datasets/images", ("china.jpg", "flower.jpg")),
    ("matplotlib", "matplotlib", "mpl-data/sample_data", ("grace_hopper.jpg",)),
)
GRAYSCALE_PHOTOS = (
    ("skimage", "scikit-image", "data", ("camera.png", "moon.png", "coins.png", "brick.png", "grass.png", "gravel.png")),
)
# Photos of one scene share a split, or the split would leak the scene: the two views of
# scikit-image's stereo pair are nearly the same picture.
SCENES = {"motorcycle_left": "motorcycle", "motorcycle_right": "motorcycle"}
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


# ---------------------------------------------------------------- distortions
# Each takes float64 RGB in [0, 1], the level's parameter and a seeded rng, and returns float64
# RGB in [0, 1]. Stochastic ones draw only from the rng, so a (seed, photo, variant) triple
# always gives the same pixels.


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def _gaussian_blur(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(img, sigma=(sigma, sigma, 0), mode="reflect")


def _motion_kernel(length: int, angle_deg: float) -> np.ndarray:
    """A normalised line of ``length`` px at ``angle_deg``, drawn by dense sampling."""
    size = length if length % 2 else length + 1
    k = np.zeros((size, size))
    c = size // 2
    t = np.linspace(-(length - 1) / 2, (length - 1) / 2, 4 * length)
    a = np.deg2rad(angle_deg)
    rows = np.clip(np.rint(c - t * np.sin(a)).astype(int), 0, size - 1)
    cols = np.clip(np.rint(c + t * np.cos(a)).astype(int), 0, size - 1)
    np.add.at(k, (rows, cols), 1.0)
    return k / k.sum()


def _motion_blur(img: np.ndarray, length: float, rng: np.random.Generator) -> np.ndarray:
    from scipy.ndimage import convolve

    kernel = _motion_kernel(int(length), float(rng.uniform(0.0, 180.0)))
    # ndimage skips the kernel's zero taps, so a long thin line costs little.
    return np.clip(convolve(img, kernel[:, :, None], mode="reflect"), 0.0, 1.0)


def _gaussian_noise(img: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(img + rng.normal(0.0, sigma, img.shape), 0.0, 1.0)


def _jpeg(img: np.ndarray, quality: float, rng: np.random.Generator) -> np.ndarray:
    buf = BytesIO()
    Image.fromarray(_to_uint8(img)).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    with Image.open(buf) as decoded:
        return np.asarray(decoded.convert("RGB"), dtype=np.float64) / 255.0


def _down_up(img: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    pil = Image.fromarray(_to_uint8(img))
    w, h = pil.size
    small = pil.resize((max(1, round(w / factor)), max(1, round(h / factor))), Image.Resampling.BICUBIC)
    return np.asarray(small.resize((w, h), Image.Resampling.BICUBIC), dtype=np.float64) / 255.0


def _darker(img: np.ndarray, gamma: float, rng: np.random.Generator) -> np.ndarray:
    return img**gamma


def _brighter(img: np.ndarray, gamma: float, rng: np.random.Generator) -> np.ndarray:
    return img ** (1.0 / gamma)


def _contrast_loss(img: np.ndarray, factor: float, rng: np.random.Generator) -> np.ndarray:
    mean = img.mean()  # pull towards the global mean: contrast drops, brightness stays
    return np.clip(mean + (img - mean) * factor, 0.0, 1.0)


@dataclass(frozen=True)
class Distortion:
    """A distortion and its parameter at levels 1 (barely visible) … 5 (strong)."""

    name: str
    params: tuple[float, ...]
    fn: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]
    unit: str

    def apply(self, img: np.ndarray, level: int, rng: np.random.Generator) -> np.ndarray:
        return self.fn(img, self.params[level - 1], rng)


DISTORTIONS: dict[str, Distortion] = {
    d.name: d
    for d in (
        Distortion("blur", (0.6, 1.0, 1.6, 2.5, 4.0), _gaussian_blur, "gaussian sigma, px"),
        Distortion("motion", (3, 5, 9, 15, 25), _motion_blur, "line length, px (random angle)"),
        Distortion("noise", (0.01, 0.02, 0.04, 0.07, 0.12), _gaussian_noise, "gaussian std, of [0, 1]"),
        Distortion("jpeg", (75, 45, 25, 12, 5), _jpeg, "Pillow JPEG quality"),
        Distortion("downup", (1.5, 2.0, 3.0, 4.0, 6.0), _down_up, "bicubic down- then up-sampling factor"),
        Distortion("dark", (1.15, 1.35, 1.7, 2.2, 3.0), _darker, "gamma, out = in ** gamma"),
        Distortion("bright", (1.15, 1.35, 1.7, 2.2, 3.0), _brighter, "gamma, out = in ** (1 / gamma)"),
        Distortion("contrast", (0.85, 0.7, 0.5, 0.33, 0.2), _contrast_loss, "contrast kept, 1 = unchanged"),
    )
}
# Two distortions in sequence (first, then second), both at COMBO_LEVEL: the mixtures real
# photos show (noisy then compressed, resized then compressed, dark and noisy, ...).
COMBINATIONS: tuple[tuple[str, str], ...] = (
    ("blur", "noise"),
    ("noise", "jpeg"),
    ("downup", "jpeg"),
    ("dark", "noise"),
    ("contrast", "blur"),
    ("motion", "noise"),
)


def variants() -> list[tuple[str, int]]:
    """Every (distortion name, level) made per reference; combinations are named ``a+b``."""
    single = [(name, level) for name in DISTORTIONS for level in LEVELS]
    return single + [(f"{a}+{b}", COMBO_LEVEL) for a, b in COMBINATIONS]


def distort(img: np.ndarray, variant: str, level: int, rng: np.random.Generator) -> np.ndarray:
    """Apply a variant of :func:`variants` (one distortion or ``a+b``) to float RGB in [0, 1]."""
    for name in variant.split("+"):
        img = DISTORTIONS[name].apply(img, level, rng)
    return img


def variant_rng(seed: int, ref: str, variant: str, level: int) -> np.random.Generator:
    # crc32, not hash(): Python salts str hashes per process, which would break determinism.
    return np.random.default_rng([seed, zlib.crc32(ref.encode()), zlib.crc32(variant.encode()), level])


# ---------------------------------------------------------------- labels


def ssim_label(ref: np.ndarray, dist: np.ndarray) -> float:
    """The label of :data:`LABEL` for two float64 RGB arrays in [0, 1]."""
    from skimage.metrics import structural_similarity

    value = structural_similarity(
        ref, dist, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1
    )
    return float(np.clip(value, 0.0, 1.0))


class _ReferenceSSIM:
    """:func:`ssim_label` against one fixed reference, about twice as fast.

    It repeats scikit-image's own arithmetic step for step (same filters, same operation
    order, so bit-identical results) but filters each reference channel once instead of once
    per distorted image, on contiguous channel arrays. :func:`_fast_ssim_matches` checks the
    bit-identity on the installed scikit-image before a build relies on it.
    """

    SIGMA, TRUNCATE, PAD = 1.5, 3.5, 5  # skimage: radius int(3.5 * 1.5 + 0.5) = 5, window 11
    C1, C2 = (0.01 * 1.0) ** 2, (0.03 * 1.0) ** 2  # (K1 * data_range) ** 2, (K2 * data_range) ** 2

    def __init__(self, ref: np.ndarray) -> None:
        self.channels = []
        for c in range(ref.shape[-1]):
            x = np.ascontiguousarray(ref[..., c])
            self.channels.append((x, self._filter(x), self._filter(x * x)))

    def _filter(self, a: np.ndarray) -> np.ndarray:
        from scipy.ndimage import gaussian_filter

        return gaussian_filter(a, self.SIGMA, mode="reflect", truncate=self.TRUNCATE)

    def __call__(self, dist: np.ndarray) -> float:
        mssim = np.empty(len(self.channels))
        for c, (x, ux, uxx) in enumerate(self.channels):
            y = np.ascontiguousarray(dist[..., c])
            uy, uyy, uxy = self._filter(y), self._filter(y * y), self._filter(x * y)
            vx = 1.0 * (uxx - ux * ux)  # cov_norm 1.0: use_sample_covariance=False
            vy = 1.0 * (uyy - uy * uy)
            vxy = 1.0 * (uxy - ux * uy)
            a1, a2 = 2 * ux * uy + self.C1, 2 * vxy + self.C2
            b1, b2 = ux**2 + uy**2 + self.C1, vx + vy + self.C2
            s = (a1 * a2) / (b1 * b2)
            p = self.PAD
            mssim[c] = s[p:-p, p:-p].mean(dtype=np.float64)
        return float(np.clip(mssim.mean(), 0.0, 1.0))


def _fast_ssim_matches(ref: np.ndarray) -> bool:
    """Whether :class:`_ReferenceSSIM` equals :func:`ssim_label` bit for bit on this install."""
    rng = np.random.default_rng(0)
    dist = np.clip(ref + rng.normal(0.0, 0.05, ref.shape), 0.0, 1.0)
    dist = _to_uint8(dist) / 255.0
    return _ReferenceSSIM(ref)(dist) == ssim_label(ref, dist)


def read_png_float(path: Path) -> np.ndarray:
    """A stored PNG as float64 RGB in [0, 1] (uint8 / 255), the input of :func:`ssim_label`."""
    return np.asarray(_open_rgb(path), dtype=np.uint8) / 255.0


# ---------------------------------------------------------------- references


@dataclass(frozen=True)
class Source:
    """A reference photo on disk, the package that ships it (None for --photos) and its scene."""

    name: str
    path: Path
    package: str | None = None
    file: str = ""  # where it lives inside the package, e.g. skimage/data/astronaut.png
    scene: str = ""  # photos of one scene share a split; defaults to the name

    def __post_init__(self) -> None:
        object.__setattr__(self, "scene", self.scene or self.name)


def _open_rgb(path: Path) -> Image.Image:
    # Private stand-in for edge_iqa.io (being written); swap once it lands.
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img)
            return img.convert("RGB")  # grayscale → 3 equal channels; alpha dropped
    except (OSError, ValueError) as err:
        raise DatasetError(f"cannot read image {path} ({err}); replace or remove it") from None


def package_photos(grayscale: bool = True) -> list[Source]:
    """The photos installed packages ship, found next to each package's files."""
    groups = PACKAGE_PHOTOS + (GRAYSCALE_PHOTOS if grayscale else ())
    sources = []
    for module, dist, folder, names in groups:
        spec = importlib.util.find_spec(module)  # locates the package without importing it
        if spec is None or not spec.submodule_search_locations:
            log.warning("package %s is not installed; its %d photos are left out", dist, len(names))
            continue
        base = Path(list(spec.submodule_search_locations)[0], folder)
        for name in names:
            path = base / name
            if path.is_file():
                stem = Path(name).stem
                sources.append(Source(stem, path, dist, f"{module}/{folder}/{name}", SCENES.get(stem, stem)))
            else:
                log.warning("%s not found in %s %s; left out", path, dist, _version(dist))
    return sources


def folder_photos(photos: Path | str) -> list[Source]:
    """Every image file directly inside ``photos``, with unique, file-system-safe names."""
    folder = Path(photos)
    if not folder.is_dir():
        raise DatasetError(f"photos folder {folder} does not exist; give a folder of JPEG/PNG photos")
    sources, used = [], set()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES):
        stem = photo_name(path)
        name, n = stem, 2
        while name in used:  # a.jpg and a.png in one folder
            name, n = f"{stem}_{n}", n + 1
        used.add(name)
        sources.append(Source(name, path, None))
    if not sources:
        raise DatasetError(f"no photos (.jpg, .png, ...) found in {folder}; add some or leave out --photos")
    return sources


def photo_name(path: Path) -> str:
    """The file-system-safe name of a photo file (its stem), as references are named."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem).strip("_") or "photo"


def prepare_reference(path: Path, max_side: int) -> Image.Image:
    """Downscale (antialiased) so the longer side is ≤ ``max_side``; crop to even dimensions."""
    return downscale(_open_rgb(path), max_side)


def downscale(img: Image.Image, max_side: int) -> Image.Image:
    """:func:`prepare_reference` of an image in memory."""
    w, h = img.size
    scale = max_side / max(w, h)
    if scale < 1.0:
        # LANCZOS in Pillow widens its support when shrinking, i.e. it antialiases.
        img = img.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.LANCZOS)
    w, h = img.size
    # Even dimensions keep 2x down-up sampling exact and chroma-subsampled JPEG aligned.
    return img.crop((0, 0, w - w % 2, h - h % 2))


def split_references(scenes: Mapping[str, str], seed: int) -> dict[str, str]:
    """Reference name → split, given name → scene: whole scenes are split about 60/20/20,
    at least 2 scenes per split when there are 6 or more."""
    unique = sorted(set(scenes.values()))
    n = len(unique)
    if n < 3:
        raise DatasetError(f"the synthetic dataset needs photos of at least 3 scenes, found {n} usable; add photos")
    least = 2 if n >= 6 else 1
    n_val = n_test = max(least, round(0.2 * n))
    labels = ["train"] * (n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test
    order = np.random.default_rng(seed).permutation(n)
    split_of = {unique[i]: labels[rank] for rank, i in enumerate(order)}
    return {name: split_of[scene] for name, scene in scenes.items()}


# ---------------------------------------------------------------- the build


def _save_png(img: Image.Image, path: Path) -> None:
    # compress_level 1: lossless like any level, and several times faster to write than 6.
    img.save(path, format="PNG", compress_level=1)


MARKER = ".edge-iqa-synth"  # marks a folder as a synth build, even one that stopped half-way


def _prepare_out(out: Path) -> None:
    """Make ``out`` ready; only an empty folder or an earlier synth build may be reused."""
    if out.exists() and not out.is_dir():
        raise DatasetError(f"{out} is a file; give a new or empty folder for the dataset")
    if out.is_dir() and any(out.iterdir()):
        if not (out / MARKER).is_file():
            raise DatasetError(f"{out} is not empty and holds no {NAME} dataset; give a new or empty folder")
        # Rebuilding over an earlier build: remove its files so no stale image survives.
        for name in (MANIFEST, DATASET_JSON):
            (out / name).unlink(missing_ok=True)
        for sub in ("refs", "images"):
            for png in (out / sub).glob("*.png"):
                png.unlink()
    (out / "refs").mkdir(parents=True, exist_ok=True)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / MARKER).write_text(f"{NAME}: files under refs/ and images/ are rebuilt by `edge-iqa data synth`\n")


def _store_references(sources: list[Source], out: Path, max_side: int) -> list[Source]:
    """Write refs/NAME.png for each usable source; return the sources kept."""
    kept = []
    for src in sources:
        img = prepare_reference(src.path, max_side)
        if min(img.size) < MIN_SIDE:
            log.warning("%s is %dx%d px after resizing, under %d px; left out", src.path, *img.size, MIN_SIDE)
            continue
        _save_png(img, out / "refs" / f"{src.name}.png")
        kept.append(src)
    return kept


def _make_variant(
    ref: np.ndarray, label: Callable[[np.ndarray], float], ref_name: str, variant: str, level: int, out: Path, seed: int
) -> tuple[Path, float]:
    """Distort, store as PNG, read the PNG back and label it against the stored reference."""
    rng = variant_rng(seed, ref_name, variant, level)
    path = out / "images" / f"{ref_name}__{variant}_{level}.png"
    _save_png(Image.fromarray(_to_uint8(distort(ref, variant, level, rng))), path)
    return path, label(read_png_float(path))


def build_synth_dataset(
    out: Path | str,
    photos: Path | str | None = None,
    seed: int = 0,
    max_side: int = 512,
    grayscale: bool = True,
    workers: int | None = None,
    progress: bool = False,
) -> Path:
    """Build the synthetic IQA dataset in ``out`` and return ``out``.

    ``photos``: a folder of reference photos instead of the package photos. ``grayscale``:
    also use scikit-image's grayscale photos (package photos only). ``workers``: threads (the
    heavy parts, SSIM filtering, PNG and JPEG coding, release the GIL); default all cores.
    The result depends only on the photos, ``seed``, ``max_side`` and library versions.
    """
    if max_side < MIN_MAX_SIDE:
        raise DatasetError(f"--max-side {max_side} is too small; use at least {MIN_MAX_SIDE}")
    out = Path(out)
    sources = folder_photos(photos) if photos is not None else package_photos(grayscale)
    if photos is None and len(sources) < 3:
        raise DatasetError("fewer than 3 package photos found; pass --photos DIR with your own photos")
    _prepare_out(out)
    sources = _store_references(sources, out, max_side)
    splits = split_references({s.name: s.scene for s in sources}, seed)

    jobs = [(s.name, v, level) for s in sources for v, level in variants()]
    refs = {s.name: read_png_float(out / "refs" / f"{s.name}.png") for s in sources}
    workers = workers or min(os.cpu_count() or 1, 8)
    results = _run_jobs(jobs, refs, out, seed, workers, progress)

    records = [
        Record(path, score, splits[name], {"ref": name, "distortion": variant, "level": str(level)})
        for (name, variant, level), (path, score) in zip(jobs, results)
    ]
    return write_dataset(out, records, _info(sources, splits, seed, max_side, grayscale, photos))


def write_crop_variants(photos: Mapping[str, Path], out: Path | str, per_photo: int, max_side: int = 512,
                        seed: int = 0) -> list[Path]:
    """``per_photo`` random crops of each photo (name → file), each with one random variant of
    :func:`variants` or none, as ``out/NAME_cropK.png``; returns their paths.

    Unlabelled images for distillation (``edge-iqa distill --unlabeled``): a teacher labels
    them, so a few photos give many compositions and distortions to learn its judgement from.
    Crops keep 40–90 % of each side of the full-size photo and are then downscaled like the
    references (:func:`prepare_reference`), so they are as sharp as the dataset's images.
    Deterministic in (``seed``, name, K); files already there are kept.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    choices = [("none", 0), *variants()]
    paths = []
    for name, photo_path in sorted(photos.items()):
        targets = [out / f"{name}_crop{k:02d}.png" for k in range(per_photo)]
        paths += targets
        missing = [(k, t) for k, t in enumerate(targets) if not t.is_file()]
        if not missing:
            continue  # a rerun: the photo is not even decoded
        photo = _open_rgb(photo_path)
        w, h = photo.size
        for k, target in missing:
            rng = np.random.default_rng([k, zlib.crc32(name.encode()), zlib.crc32(b"crop"), seed])
            cw, ch = round(w * rng.uniform(0.4, 0.9)), round(h * rng.uniform(0.4, 0.9))
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            img = np.asarray(downscale(photo.crop((x, y, x + cw, y + ch)), max_side), dtype=np.float32) / 255.0
            variant, level = choices[int(rng.integers(len(choices)))]
            if variant != "none":
                img = distort(img, variant, level, rng)
            _save_png(Image.fromarray(_to_uint8(img)), target)
    return paths


def _labellers(refs: dict[str, np.ndarray]) -> dict[str, Callable[[np.ndarray], float]]:
    """Per reference, the fast SSIM where it is bit-identical to skimage's, else skimage's."""
    first = next(iter(refs.values()))
    if _fast_ssim_matches(first):
        return {name: _ReferenceSSIM(ref) for name, ref in refs.items()}
    log.warning("this scikit-image computes SSIM differently from edge-iqa's fast path; using the slower direct call")
    return {name: (lambda dist, ref=ref: ssim_label(ref, dist)) for name, ref in refs.items()}


def _run_jobs(jobs, refs, out: Path, seed: int, workers: int, progress: bool) -> list[tuple[Path, float]]:
    from tqdm import tqdm

    labels = _labellers(refs)
    bar = tqdm(total=len(jobs), desc="synth", unit="img", file=sys.stderr, disable=not progress, mininterval=1.0)

    def job(spec):
        name, variant, level = spec
        result = _make_variant(refs[name], labels[name], name, variant, level, out, seed)
        bar.update(1)
        return result

    try:
        if workers <= 1:
            return [job(j) for j in jobs]
        with ThreadPoolExecutor(max_workers=workers) as pool:
            return list(pool.map(job, jobs))  # map keeps job order: the manifest is deterministic
    finally:
        bar.close()


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _info(sources, splits, seed, max_side, grayscale, photos) -> DatasetInfo:
    by_split = {s: sorted(n for n, sp in splits.items() if sp == s) for s in SPLITS}
    source_list = [
        {"name": s.name, "file": s.file or str(s.path.absolute()), "scene": s.scene,
         "package": s.package, "version": _version(s.package) if s.package else None}
        for s in sources
    ]
    distortions = [
        {"name": d.name, "levels": list(d.params), "unit": d.unit} for d in DISTORTIONS.values()
    ] + [{"name": f"{a}+{b}", "levels": [COMBO_LEVEL], "unit": f"{a} then {b}, both at level {COMBO_LEVEL}"}
         for a, b in COMBINATIONS]
    provenance = {
        "builder": "edge_iqa.data.synth.build_synth_dataset",
        "photos": str(Path(photos).absolute()) if photos is not None else "package photos",
        # Labels depend on these: JPEG coding (Pillow), resampling, and SSIM (scikit-image).
        "libraries": {d: _version(d) for d in ("edge-iqa", "numpy", "scipy", "pillow", "scikit-image")},
    }
    extra = {
        "label": LABEL,
        "seed": seed,
        "max_side": max_side,
        "grayscale": grayscale,
        "sources": source_list,
        "distortions": distortions,
        "splits": by_split,
        "note": "synthetic, SSIM-labelled; never a substitute for real data in an accuracy claim",
    }
    return DatasetInfo(NAME, (0.0, 1.0), provenance, extra)
