"""Image input: turn a file, PIL image or numpy array into the RGB photo the views expect.

Every model input goes through here, so the decoding rules live in one place:

- the result is a fully loaded 8-bit RGB ``PIL.Image``, upright as a viewer shows it (EXIF
  orientation applied);
- every Pillow mode is converted to RGB correctly: alpha is composited over white, 16-bit
  values are scaled (not clipped), palettes and CMYK are decoded;
- a JPEG can be downscaled by libjpeg in the DCT domain while decoding (Pillow's ``draft``)
  when the model only needs a resized view, which makes 4K-and-up photos several times cheaper;
- a decompression-bomb guard refuses images over ``max_pixels``, read from the header before
  any pixel is decoded;
- HEIF/HEIC (what an iPhone shoots) is read through the ``pillow-heif`` plugin, AVIF and WebP
  by Pillow itself; a GIF or an animated WebP gives its first frame;
- JPEGs are checked for damaged data while they decode: Pillow drops libjpeg's "corrupt JPEG
  data" warnings, so a file with garbage mid-stream would be decoded grey or smeared in
  silence. YCbCr and grayscale JPEGs (nearly all) are decoded by libjpeg-turbo through
  ``simplejpeg`` in strict mode, bit-identical to Pillow's own decoder; a damaged one is still
  decoded as Pillow does, with one warning line on the ``edge_iqa.io`` logger;
- a file that cannot be used raises ``ImageError`` with one line naming the file, what is
  wrong and what to do: never a traceback or a Pillow warning.

``scan_images`` expands files and folders into image files and says what a folder scan left
out (other suffixes, hidden files, links to folders, unreadable folders); ``iter_image_files``
logs that as one warning line per folder.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import struct
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator, Union

import numpy as np
import simplejpeg
from PIL import Image
from pillow_heif import register_heif_opener

from edge_iqa.errors import ImageError

register_heif_opener()  # Pillow opens .heic/.heif from now on, in this process

MAX_PIXELS = 200_000_000
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif", ".heic", ".heif", ".avif")

log = logging.getLogger("edge_iqa.io")

PathLike = Union[str, "os.PathLike[str]"]
DraftTo = Callable[[tuple[int, int]], "tuple[int, int] | None"]

_WHITE = (255, 255, 255)
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")
_JPEG_FORMATS = ("JPEG", "MPO")  # MPO: a JPEG with more pictures after the first (3D, depth)
_EXIF_ORIENTATION = 0x0112
# EXIF orientations whose display swaps width and height (a transpose or a 90/270° turn).
_SWAPS_AXES = (5, 6, 7, 8)
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
# What Pillow's plugins raise on malformed files: they are not consistent, and a user's broken
# photo must become an ImageError, not a traceback. MemoryError and bugs still propagate.
_DECODE_ERRORS = (
    OSError, ValueError, SyntaxError, EOFError, IndexError, TypeError, struct.error, Image.DecompressionBombError,
)


# ---------------------------------------------------------------------------------------------
# Errors


def _error(source: object, problem: str, advice: str = "") -> ImageError:
    """An ImageError of exactly one line: ``<source>: <problem>; <advice>``."""
    text = f"{source}: {problem}" + (f"; {advice}" if advice else "")
    return ImageError(" ".join(text.split()))  # Pillow messages may carry newlines


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:.3g} MP"


# ---------------------------------------------------------------------------------------------
# Decompression-bomb guard

_bomb_lock = threading.Lock()
_bomb_users = 0
_saved_pillow_limit: int | None = None


@contextlib.contextmanager
def _own_bomb_check() -> Iterator[None]:
    """Switch Pillow's decompression-bomb check off while edge-iqa decodes.

    Pillow warns above ~89 MP and refuses above ~179 MP, which would reject ordinary 108 MP
    phone photos; its limit is a process-wide global, so it cannot be raised for one call.
    ``load_image`` applies its own ``max_pixels`` check to the header instead. Concurrent loads
    share one override (counted), and the last one out restores the caller's setting.
    """
    global _bomb_users, _saved_pillow_limit
    with _bomb_lock:
        if _bomb_users == 0:
            _saved_pillow_limit = Image.MAX_IMAGE_PIXELS
            Image.MAX_IMAGE_PIXELS = None
        _bomb_users += 1
    try:
        yield
    finally:
        with _bomb_lock:
            _bomb_users -= 1
            if _bomb_users == 0:
                Image.MAX_IMAGE_PIXELS = _saved_pillow_limit


def _check_pixels(path: Path, size: tuple[int, int], max_pixels: int | None) -> None:
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise _error(
            path,
            f"image is {width}x{height} px ({_megapixels(width * height)}), over the "
            f"{_megapixels(max_pixels)} decompression-bomb limit",
            f"if you trust the file, raise the limit with --max-pixels {width * height} (max_pixels= in Python)",
        )


# ---------------------------------------------------------------------------------------------
# Loading from a file


def _check_file(path: PathLike) -> Path:
    """Catch the common mistakes before Pillow does, with a clearer message than Pillow's."""
    if isinstance(path, (Image.Image, np.ndarray)):
        raise TypeError("load_image takes a file path; use to_rgb_image for a PIL image or numpy array")
    path = Path(path)
    if not path.exists():
        raise _error(path, "no such file", "check the path")
    if path.is_dir():
        raise _error(path, "is a directory, not an image file", "pass the image files inside it")
    if path.stat().st_size == 0:
        raise _error(path, "file is empty (0 bytes)", "re-copy or re-export it")
    return path


def _open(path: Path, handle) -> Image.Image:
    """Read the header only: Pillow decodes pixels lazily, on ``load()``."""
    try:
        return Image.open(handle)
    except Image.UnidentifiedImageError:
        raise _error(
            path,
            "not an image Pillow can read",
            f"check that it really is an image ({', '.join(IMAGE_SUFFIXES)}) or remove it",
        ) from None
    except _DECODE_ERRORS as exc:
        raise _error(path, f"cannot read the image header ({exc})", "re-download or re-export it") from exc


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation (1 = upright); 1 when the EXIF block is missing or unreadable."""
    try:
        return int(image.getexif().get(_EXIF_ORIENTATION, 1))
    except _DECODE_ERRORS:
        return 1  # a corrupt EXIF block should not make the photo unusable


def _apply_draft(image: Image.Image, draft_to: DraftTo) -> None:
    """Let libjpeg decode at 1/2, 1/4 or 1/8 scale when the caller needs fewer pixels.

    ``draft_to`` sees the size as displayed (after EXIF orientation), because that is what the
    views crop and resize; the stored JPEG is still sideways, so the answer is swapped back.
    """
    if image.format not in _JPEG_FORMATS:
        return  # draft() only downscales JPEG; other formats decode at full size anyway
    swapped = _orientation(image) in _SWAPS_AXES
    width, height = image.size
    wanted = draft_to((height, width) if swapped else (width, height))
    if wanted is None:
        return
    need_w, need_h = (max(1, math.ceil(v)) for v in wanted)  # draft() divides by these
    image.draft("RGB", (need_h, need_w) if swapped else (need_w, need_h))


def _decode(path: Path, image: Image.Image, handle) -> Image.Image:
    """The decoded image: ``image`` itself once loaded, or a new one from the strict JPEG decoder."""
    damage = None
    if image.format in _JPEG_FORMATS and image.mode in ("RGB", "L"):
        try:
            decoded = _decode_jpeg_strictly(image, handle)
        except ValueError as exc:  # simplejpeg's report of what libjpeg found wrong
            damage = str(exc)
        else:
            if decoded is not None:
                return decoded
    try:
        image.load()
    except _DECODE_ERRORS as exc:
        if "truncated" in str(exc):
            raise _error(path, "image file is truncated (cut off mid-download or mid-copy?)",
                         "re-download or re-export it") from exc
        raise _error(path, f"image data is corrupt ({exc})", "re-download or re-export it") from exc
    if damage:
        log.warning("%s: JPEG data is damaged (%s); decoded anyway, part of the picture may be grey or "
                    "smeared: re-download or re-export it", path, damage.strip().rstrip("."))
    return image


def _decode_jpeg_strictly(image: Image.Image, handle) -> Image.Image | None:
    """libjpeg-turbo's decode at the (drafted) size Pillow chose, refusing damaged data.

    Raises ValueError for damaged data; None when simplejpeg's scale differs from Pillow's draft
    (Pillow then decodes), so the pixels are always those Pillow would give.
    """
    handle.seek(0)
    gray = image.mode == "L"
    pixels = simplejpeg.decode_jpeg(handle.read(), colorspace="GRAY" if gray else "RGB", strict=True,
                                    min_width=image.width, min_height=image.height)
    if pixels.shape[:2] != (image.height, image.width):
        return None
    return Image.fromarray(pixels[:, :, 0] if gray else pixels, image.mode)


def _upright(image: Image.Image, orientation: int) -> Image.Image:
    """The decoded image turned the way its EXIF orientation says a viewer shows it (as
    ``ImageOps.exif_transpose`` turns it, without rewriting an EXIF block we do not keep)."""
    if orientation not in _TRANSPOSE:
        return image  # already upright: no copy
    return image.transpose(_TRANSPOSE[orientation])


def load_image(path: PathLike, draft_to: DraftTo | None = None, max_pixels: int | None = MAX_PIXELS) -> Image.Image:
    """Decode an image file into a fully loaded, upright RGB ``PIL.Image``.

    draft_to: optional callable given the (width, height) as displayed, returning the smallest
        (width, height) the caller needs, or None for full resolution (e.g. ``views.draft_size``).
        JPEGs are then decoded at the largest 1/2, 1/4 or 1/8 scale that is still at least that.
    max_pixels: refuse images with more pixels than this (header check, before decoding);
        None disables the guard.

    Raises ``ImageError`` (one line naming ``path``) for anything wrong with the file.
    """
    path = _check_file(path)
    # Our own file handle, not a path: Pillow then leaves it to us to close, so the decoded
    # image stays usable after the ``with`` without a defensive copy.
    with _own_bomb_check(), _open_handle(path) as handle:
        image = _open(path, handle)
        _check_pixels(path, image.size, max_pixels)
        if draft_to is not None:
            _apply_draft(image, draft_to)
        # EXIF of the header (JPEG) or of the loaded file (a PNG's eXIf chunk may follow its pixels)
        image = _upright(_decode(path, image, handle), _orientation(image))
    try:
        return to_rgb(image)
    except ImageError:
        raise _error(path, f"Pillow mode {image.mode!r} cannot be converted to RGB",
                     "save it as 8-bit RGB first") from None


@contextlib.contextmanager
def _open_handle(path: Path):
    try:
        handle = open(path, "rb")
    except PermissionError:
        raise _error(path, "cannot be read (permission denied)", "check the file's permissions") from None
    except OSError as exc:
        raise _error(path, f"cannot be opened ({exc.strerror or exc})") from None
    with handle:
        yield handle


# ---------------------------------------------------------------------------------------------
# Mode conversion


def _describe(image: Image.Image) -> str:
    return getattr(image, "filename", "") or f"{image.mode} image of {image.width}x{image.height} px"


def _scale_16bit(values: np.ndarray) -> np.ndarray:
    """0..65535 → 0..255 with rounding: 16-bit data uses the whole range, so clipping would
    turn almost every pixel white."""
    wide = np.clip(values, 0, 65535).astype(np.uint32)
    return ((wide * 255 + 32767) // 65535).astype(np.uint8)


def _gray_to_rgb(gray: np.ndarray) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(gray, dtype=np.uint8)).convert("RGB")


def _over_white(image: Image.Image) -> Image.Image:
    """Composite transparency over white, as viewers and browsers show it; dropping the alpha
    channel would reveal whatever colour the encoder left under transparent pixels."""
    rgba = image.convert("RGBA")  # also expands P/L/RGB ``transparency`` keys and un-premultiplies
    background = Image.new("RGB", rgba.size, _WHITE)
    background.paste(rgba, (0, 0), rgba)
    return background


def _has_alpha(image: Image.Image) -> bool:
    """An alpha band, a ``transparency`` key (PNG tRNS, GIF) or a palette with alpha entries."""
    if image.mode in _ALPHA_MODES or "transparency" in image.info:
        return True
    return image.mode == "P" and image.palette is not None and image.palette.mode == "RGBA"


def _float_to_rgb(image: Image.Image) -> Image.Image:
    """Mode F: [0, 1] when every value lies in it (the float-TIFF convention), else Pillow's
    own 0..255 convention; NaN counts as black."""
    values = np.nan_to_num(np.asarray(image, dtype=np.float32), nan=0.0, posinf=255.0, neginf=0.0)
    scale = 255.0 if values.size and values.min() >= 0.0 and values.max() <= 1.0 else 1.0
    return _gray_to_rgb(np.clip(np.rint(values * scale), 0, 255))


def to_rgb(image: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB; an RGB image is returned as it is (not copied)."""
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT_MODES:
        return _gray_to_rgb(_scale_16bit(np.asarray(image)))
    if mode == "F":
        return _float_to_rgb(image)
    if _has_alpha(image):
        return _over_white(image)
    # 1, L, P, CMYK, YCbCr, RGBX, LAB, HSV: Pillow's own conversions are right for these. CMYK
    # JPEGs from Photoshop store inverted ink values; Pillow's JPEG decoder undoes that.
    try:
        return image.convert("RGB")
    except ValueError as exc:
        raise _error(_describe(image), f"Pillow mode {mode!r} cannot be converted to RGB ({exc})",
                     "save it as 8-bit RGB first") from None


# ---------------------------------------------------------------------------------------------
# In-memory inputs


def _array_to_uint8(values: np.ndarray) -> np.ndarray:
    if values.dtype == np.uint8:
        return values
    if values.dtype == np.bool_:
        return values.astype(np.uint8) * 255
    if values.dtype == np.uint16:
        return _scale_16bit(values)
    if np.issubdtype(values.dtype, np.floating):
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        # NaN fails both comparisons, so it is refused too; 1e-6 forgives float round-off.
        if not (low >= -1e-6 and high <= 1 + 1e-6):
            raise ImageError(
                f"float image array has values in [{low:g}, {high:g}], expected [0, 1]; "
                "divide by 255 (or pass uint8)"
            )
        return np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)
    raise ImageError(f"image array has dtype {values.dtype}; pass uint8, uint16 or float in [0, 1]")


def _array_to_rgb(values: np.ndarray) -> Image.Image:
    if values.ndim == 3 and values.shape[2] == 1:
        values = values[:, :, 0]
    if values.ndim == 3 and values.shape[0] in (1, 3, 4) and values.shape[2] not in (3, 4):
        raise ImageError(
            f"image array of shape {values.shape} looks channels-first; pass HxWxC, e.g. array.transpose(1, 2, 0)"
        )
    if not (values.ndim == 2 or (values.ndim == 3 and values.shape[2] in (3, 4))):
        raise ImageError(f"image array has shape {values.shape}; expected HxW, HxWx3 or HxWx4")
    if min(values.shape[:2]) < 1:
        raise ImageError(f"image array of shape {values.shape} is empty")
    pixels = np.ascontiguousarray(_array_to_uint8(values))
    if pixels.ndim == 2:
        return _gray_to_rgb(pixels)
    return to_rgb(Image.fromarray(pixels))  # RGB as is, RGBA composited over white


def to_rgb_image(obj: Image.Image | np.ndarray) -> Image.Image:
    """A PIL image or numpy array as an RGB ``PIL.Image`` (same rules as ``load_image``).

    Arrays are HxW, HxWx3 or HxWx4 (channels last) of uint8, uint16 (0..65535) or float in
    [0, 1]. Pixels are taken as given: EXIF orientation is not applied to in-memory images
    (use ``load_image``, or ``ImageOps.exif_transpose`` first). An RGB PIL image is returned
    as it is.
    """
    if isinstance(obj, Image.Image):
        try:
            obj.load()  # a lazily opened image may only now meet its truncated data
        except _DECODE_ERRORS as exc:
            raise _error(_describe(obj), f"image data is truncated or corrupt ({exc})",
                         "re-download or re-export it") from exc
        return to_rgb(obj)
    if isinstance(obj, np.ndarray):
        return _array_to_rgb(obj)
    raise ImageError(
        f"cannot use a {type(obj).__name__} as an image; pass a file path, a PIL image or a numpy array"
    )


# ---------------------------------------------------------------------------------------------
# Finding files


def _is_image_name(name: str) -> bool:
    return Path(name).suffix.lower() in IMAGE_SUFFIXES


@dataclass(frozen=True)
class SkippedPath:
    """Something the scan of ``folder`` (a folder the caller named) left out, and why."""

    folder: Path
    path: Path
    reason: str


@dataclass(frozen=True)
class ImageScan:
    """What ``scan_images`` found: ``files`` in the order given, and what folder scans left out.

    ``files`` keeps every path named explicitly, even one that does not exist (it is also in
    ``missing``): loading it gives its one-line error, so a caller can report it in its row.
    """

    files: tuple[Path, ...]
    skipped: tuple[SkippedPath, ...] = ()
    missing: tuple[Path, ...] = ()

    def warn_skipped(self) -> None:
        """One warning line on the ``edge_iqa.io`` logger per folder whose scan left something out."""
        folders = dict.fromkeys(s.folder for s in self.skipped)
        for folder in folders:
            log.warning("%s", describe_skipped(folder, [s for s in self.skipped if s.folder == folder]))


def _scan_folder(directory: Path) -> tuple[list[Path], list[SkippedPath]]:
    """Image files below ``directory`` (recursive, sorted) and everything the walk left out.

    Left out, and reported: other suffixes; hidden files and folders (macOS ``._photo.jpg``
    resource forks, ``.cache``/``.git`` trees are not photos); links to folders (not followed,
    so a link loop cannot hang the scan); folders that cannot be read. A folder named like an
    image (``x.jpg/``) that holds no image is kept as a file, so that loading it says what it is.
    """
    found: list[Path] = []
    skipped: list[SkippedPath] = []
    image_named_dirs: list[Path] = []

    def unreadable(err: OSError) -> None:
        skipped.append(SkippedPath(directory, Path(err.filename), f"folder cannot be read ({err.strerror or err})"))

    for root, dirs, names in os.walk(directory, onerror=unreadable):
        folder = Path(root)
        searched = []
        for name in sorted(dirs):
            if name.startswith("."):
                skipped.append(SkippedPath(directory, folder / name, "hidden folder, not searched"))
            elif (folder / name).is_symlink():
                skipped.append(SkippedPath(directory, folder / name, "link to a folder, not followed; name it to search it"))
            else:
                searched.append(name)
                if _is_image_name(name):
                    image_named_dirs.append(folder / name)
        dirs[:] = searched
        for name in sorted(names):
            if name.startswith("."):
                skipped.append(SkippedPath(directory, folder / name, "hidden file"))
            elif _is_image_name(name):
                found.append(folder / name)
            else:
                skipped.append(SkippedPath(directory, folder / name,
                                           f"not an image suffix ({Path(name).suffix or 'none'})"))
    for folder in image_named_dirs:
        if not any(folder in f.parents for f in found):
            found.append(folder)
    return sorted(found), skipped


def scan_images(paths: PathLike | Iterable[PathLike]) -> ImageScan:
    """Expand files and folders into image files, in the order given, saying what was left out.

    A folder contributes every image file below it (recursive, sorted, suffix in
    ``IMAGE_SUFFIXES``, case-insensitive); what else it holds is listed in ``skipped``. A file
    named explicitly is kept whatever its suffix: the user asked for it, and ``load_image`` will
    say if it is not an image. Duplicates are dropped.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]  # one path, not an iterable of characters
    files: list[Path] = []
    skipped: list[SkippedPath] = []
    missing: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            candidates, left_out = _scan_folder(path)
            skipped += left_out
            if not candidates and _is_image_name(path.name):
                candidates = [path]  # "x.jpg" is a folder: its row will say so
        else:
            candidates = [path]
            if not path.exists():
                missing.append(path)
        for candidate in candidates:
            if candidate not in seen:
                seen.add(candidate)
                files.append(candidate)
    return ImageScan(tuple(files), tuple(skipped), tuple(missing))


def describe_skipped(folder: PathLike, skipped: Iterable[SkippedPath], examples: int = 3) -> str:
    """One line: how many entries a scan of ``folder`` left out, with the first few and why."""
    skipped = list(skipped)
    shown = "; ".join(f"{_relative(s.path, folder)} ({s.reason})" for s in skipped[:examples])
    more = f"; and {len(skipped) - examples} more" if len(skipped) > examples else ""
    entries = "1 entry" if len(skipped) == 1 else f"{len(skipped)} entries"
    return (f"{folder}: {entries} left out of the image scan: {shown}{more} "
            f"(image suffixes: {' '.join(IMAGE_SUFFIXES)}; name a file to use it anyway)")


def _relative(path: Path, folder: PathLike) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


def iter_image_files(paths: PathLike | Iterable[PathLike]) -> list[Path]:
    """``scan_images(paths).files``, after one warning line per folder whose scan left
    something out; a path that does not exist raises ``ImageError``."""
    scan = scan_images(paths)
    if scan.missing:
        raise _error(scan.missing[0], "no such file or directory", "check the path")
    scan.warn_skipped()
    return list(scan.files)
