"""Scoring API: ``edge_iqa.load(path).score(image)`` for checkpoints and exported artifacts.

A ``Scorer`` pairs a model config (which fixes the views) with a batch function of any
backend of :mod:`edge_iqa.runtimes` (PyTorch, ONNX Runtime, OpenVINO, TensorRT, CoreML, ...)
that maps the view arrays of a batch to scores. Files are decoded in order, by ``num_workers``
threads ahead of the model (Pillow and simplejpeg release the GIL while they decode; 0: in
the calling thread); one that fails is reported in its row and never stops the others. This
module imports neither torch nor timm: scoring an export needs numpy, Pillow and its runtime.

Bursts (a model whose ``config.burst`` is set, :mod:`edge_iqa.burst_model`):
``scorer.score_burst(frames, task=None)`` gives one score per frame, frame 0 being the
reference every other frame is scored against (Liang et al., "Burst Image Quality
Assessment", 2025). The batch function of a burst model takes one (B, T, 3, H, W) array per
view and returns (B, n_tasks, T) scores, task rows in ``config.burst.tasks`` order; the scorer
picks the row of the task by name (``BurstConfig.task_index``; default the first task). Frame
0's score is whatever the model gives the reference: defined, but meaningless (the reference
is never left out of a burst); rank and keep the other frames.

What a burst does with a frame it cannot use (chosen here, the paper is silent):

- a frame that fails to decode, a frame whose size differs from the reference's (a burst's
  frames come from one sensor: a different size means a stray file, not a frame; it is not
  resized), a path listed twice: that frame gets its error and the burst is scored without it
  (``score_burst``: NaN in its place, and a warning line on the ``edge_iqa.scoring`` logger);
- the reference fails, or no other frame is left: the burst as a whole cannot be scored
  (``score_burst_frames``: ``BurstScores.error``; ``score_burst``: ``EdgeIQAError``);
- fewer than two frames, a photo model, an unknown task: ``EdgeIQAError`` before any decoding.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
from PIL import Image

from edge_iqa.config import ModelConfig, ViewConfig
from edge_iqa.errors import EdgeIQAError, ImageError
from edge_iqa.io import MAX_PIXELS, load_image, to_rgb_image
from edge_iqa.runtimes import BatchFn, Loaded, load_artifact
from edge_iqa.views import apply_views, draft_size

log = logging.getLogger("edge_iqa.scoring")
data_log = logging.getLogger("edge_iqa.data")  # where a file left out of a batch is reported, as in training


@dataclass(frozen=True)
class ScoreResult:
    path: str
    score: float | None
    error: str | None = None


@dataclass(frozen=True)
class FrameResult:
    """One frame of a burst: where it came from (a path, or ``frame i`` for an in-memory
    image), its place in the burst (0 = the reference), its score or why it has none."""

    source: str
    index: int
    score: float | None
    error: str | None = None


@dataclass(frozen=True)
class BurstScores:
    """The frames of one burst, in the order given; ``error`` says why the burst as a whole
    could not be scored (then no frame has a score)."""

    frames: list[FrameResult] = field(default_factory=list)
    error: str | None = None

    @property
    def scores(self) -> np.ndarray:
        """One score per frame, NaN where a frame has none."""
        return np.array([np.nan if f.score is None else f.score for f in self.frames], dtype=np.float64)


def decode_views(path: str | Path, views: Sequence[ViewConfig], max_pixels: int | None = MAX_PIXELS,
                 ) -> list[np.ndarray]:
    """Decode ``path`` (with JPEG draft downscaling where the views allow it) and apply ``views``."""
    image = load_image(path, draft_to=lambda size: draft_size(views, size), max_pixels=max_pixels)
    try:
        return apply_views(image, views)
    except ImageError as err:
        raise ImageError(f"{path}: {err}") from None


def _decode_or_error(path: str | Path, views: Sequence[ViewConfig], max_pixels: int | None):
    try:
        return decode_views(path, views, max_pixels), None
    except ImageError as err:
        data_log.warning("skipped: %s", err)
        return None, str(err)


def iter_decoded(paths: Sequence[str | Path], views: Sequence[ViewConfig], num_workers: int = 0,
                 max_pixels: int | None = MAX_PIXELS, ahead: int = 16) -> Iterator[tuple[list | None, str | None]]:
    """(view arrays, None) or (None, error) per path, in order; ``num_workers`` threads decode up
    to ``ahead`` files ahead of the consumer (0: decode in the calling thread)."""
    if num_workers <= 0:
        for path in paths:
            yield _decode_or_error(path, views, max_pixels)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(num_workers, thread_name_prefix="edge-iqa-decode") as pool:
        pending: deque = deque()
        todo = iter(paths)
        try:
            for path in todo:
                pending.append(pool.submit(_decode_or_error, path, views, max_pixels))
                if len(pending) >= max(ahead, num_workers):
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:  # a consumer that stops early leaves no decoding behind
                future.cancel()


def iter_view_batches(paths: Sequence[str | Path], config: ModelConfig, batch_size: int = 8,
                      num_workers: int = 0, max_pixels: int | None = MAX_PIXELS,
                      ) -> Iterator[tuple[list[np.ndarray], list[int], dict[int, str]]]:
    """Yield (view arrays, indices decoded, {index that failed: why}) batch by batch, in order."""
    for views, done, errors in _view_batches(paths, config, batch_size, num_workers, max_pixels):
        yield views, done, dict(sorted(errors.items()))


def _view_batches(paths, config: ModelConfig, batch_size: int, num_workers: int, max_pixels: int | None,
                  ) -> Iterator[tuple[list[np.ndarray], list[int], dict[int, str]]]:
    """(stacked view arrays, indices decoded, {index: error}) per batch of ``batch_size`` paths
    (one path per batch for a ``full`` view: its size follows each photo)."""
    size = 1 if any(v.kind == "full" for v in config.views) else batch_size
    arrays: list[list[np.ndarray]] = []
    done: list[int] = []
    errors: dict[int, str] = {}
    for i, (views, error) in enumerate(iter_decoded(paths, config.views, num_workers, max_pixels,
                                                    ahead=max(2 * size, 2 * num_workers))):
        if views is None:
            errors[i] = error
        else:
            arrays.append(views)
            done.append(i)
        if len(done) + len(errors) == size or i == len(paths) - 1:
            yield [np.stack(group) for group in zip(*arrays)] if arrays else [], done, errors
            arrays, done, errors = [], [], {}


class Scorer:
    def __init__(self, config: ModelConfig, batch_fn: BatchFn, source: str = "", loaded: Loaded | None = None):
        self.config = config
        self.batch_fn = batch_fn
        self.source = source
        self.loaded = loaded  # the runtime, version and device it scores in, when loaded from a file
        self.max_pixels = MAX_PIXELS  # load_image's decompression-bomb limit for files (None: none)

    @classmethod
    def from_loaded(cls, loaded: Loaded) -> "Scorer":
        return cls(loaded.config, loaded.batch_fn, source=str(loaded.path), loaded=loaded)

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
        self._photo_model_only()
        return float(self.batch_fn(self.views_of(image))[0])

    def _name(self) -> str:
        return self.source or f"model {self.config.name!r}"

    def _photo_model_only(self) -> None:
        if self.config.burst is not None:
            raise EdgeIQAError(f"{self._name()} is a burst model (tasks {', '.join(self.config.burst.tasks)}): it "
                               "scores the frames of a burst against their reference, not single photos; use "
                               "score_burst(frames) or `edge-iqa burst score`")

    def task_row(self, task: str | None = None) -> int:
        """The row of ``task`` in a burst model's (B, n_tasks, T) scores (None: the first task)."""
        if self.config.burst is None:
            raise EdgeIQAError(f"{self._name()} is a photo model: it scores single photos, not the frames of a "
                               "burst against their reference; use score() or `edge-iqa score`, or a burst model "
                               "(e.g. a burst-student checkpoint) for bursts")
        return 0 if task is None else self.config.burst.task_index(task)

    def score_burst(self, frames: Sequence, task: str | None = None) -> np.ndarray:
        """One score per frame of a burst (frame 0 = the reference, scored but meaningless: see
        the module docstring), in the model's score range, higher = better for ``task``
        (None: the model's first task). A frame is a path, a PIL image or an HxWx3 array.

        A frame that cannot be used gets NaN and one warning line; a burst whose reference
        cannot be used, or with no other usable frame, raises ``EdgeIQAError``."""
        result = self.score_burst_frames(frames, task)
        if result.error:
            raise EdgeIQAError(result.error)
        for frame in result.frames:
            if frame.error:
                log.warning("left out of the burst: %s", frame.error)
        return result.scores

    def score_burst_frames(self, frames: Sequence, task: str | None = None) -> BurstScores:
        """``score_burst`` with a row per frame: each frame's score or its error (see the
        module docstring for what a burst does with a frame it cannot use)."""
        row = self.task_row(task)
        if isinstance(frames, (str, os.PathLike, np.ndarray, Image.Image)) or not hasattr(frames, "__iter__"):
            raise EdgeIQAError(f"score_burst takes a list of frames (paths, PIL images or arrays), got a "
                               f"{type(frames).__name__}; for a folder use edge_iqa.io.scan_images(folder).files")
        frames = list(frames)
        if len(frames) < 2:
            raise EdgeIQAError(f"a burst needs a reference and at least one more frame, got {len(frames)} frame"
                               f"{'' if len(frames) == 1 else 's'}")
        sources = [str(f) if isinstance(f, (str, os.PathLike)) else f"frame {i}" for i, f in enumerate(frames)]
        errors = _repeated_paths(frames)
        views, sizes = {}, {}
        for i, frame in enumerate(frames):
            if i in errors:
                continue
            try:
                views[i], sizes[i] = self._frame_views(frame, sources[i])
            except ImageError as err:
                errors[i] = str(err)
            if i in views and 0 in sizes and sizes[i] != sizes[0]:
                (w, h), (rw, rh) = sizes[i], sizes[0]
                errors[i] = (f"{sources[i]}: {w}x{h} px, but the reference {sources[0]} is {rw}x{rh} px; a burst's "
                             "frames share one size: leave it out or resize it")
                del views[i]
        burst_error = None
        if 0 in errors:
            burst_error = (f"the burst's reference cannot be used ({errors[0]}); every frame is scored against it: "
                           "fix it or make another frame the first")
        elif len(views) < 2:
            burst_error = (f"no frame of the burst besides the reference {sources[0]} can be used "
                           f"({next(iter(errors.values()))}); nothing to score")
        if burst_error:
            return BurstScores([FrameResult(s, i, None, errors.get(i, burst_error)) for i, s in enumerate(sources)],
                               burst_error)
        used = sorted(views)
        batch = [np.stack([views[i][k] for i in used])[None] for k in range(len(self.config.views))]
        scores = self._burst_scores(batch, len(used))[row]
        by_index = dict(zip(used, scores.tolist()))
        return BurstScores([FrameResult(s, i, by_index.get(i), errors.get(i)) for i, s in enumerate(sources)])

    def _frame_views(self, frame, source: str) -> tuple[list[np.ndarray], tuple[int, int]]:
        """A frame's view arrays and its (width, height) as stored (before any JPEG draft)."""
        if isinstance(frame, (str, os.PathLike)):
            asked: list[tuple[int, int]] = []

            def draft_to(size):
                asked.append(size)  # the displayed size of the file, before libjpeg downscales it
                return draft_size(self.config.views, size)

            image = load_image(frame, draft_to=draft_to, max_pixels=self.max_pixels)
            size = tuple(asked[0]) if asked else image.size
        else:
            try:
                image = to_rgb_image(frame)
            except ImageError as err:
                raise ImageError(f"{source}: {err}") from None
            size = image.size
        try:
            return apply_views(image, self.config.views), size
        except ImageError as err:
            raise ImageError(f"{source}: {err}") from None

    def _burst_scores(self, batch: list[np.ndarray], frames: int) -> np.ndarray:
        """(n_tasks, T) scores of one burst, checked against the graph contract."""
        out = np.asarray(self.batch_fn(batch), dtype=np.float64)
        expected = (1, len(self.config.burst.tasks), frames)
        if out.shape != expected:
            raise EdgeIQAError(f"{self._name()}: the burst graph gave scores of shape {out.shape}, expected "
                               f"{expected} (bursts, tasks, frames); re-export it with this edge-iqa")
        return out[0]

    def iter_score_paths(self, paths: str | Path | Sequence[str | Path], batch_size: int = 8,
                         num_workers: int = 0, progress: bool = False) -> Iterator[ScoreResult]:
        """Score many files, yielding one result per path in order, batch by batch as they are
        scored (so a caller can save them as they come); a file that fails gets its error."""
        from tqdm import tqdm

        self._photo_model_only()
        paths = _path_list(paths)
        bar = tqdm(total=len(paths), unit="img", disable=not progress, desc="scoring")
        try:
            for views, done, errors in _view_batches(paths, self.config, batch_size, num_workers, self.max_pixels):
                scores = dict(zip(done, self.batch_fn(views).tolist())) if done else {}
                for i in sorted([*done, *errors]):
                    yield (ScoreResult(paths[i], float(scores[i])) if i in scores
                           else ScoreResult(paths[i], None, errors[i]))
                bar.update(len(done) + len(errors))
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


def _repeated_paths(frames: Sequence) -> dict[int, str]:
    """{index: error} for each path naming the same file as an earlier frame."""
    first: dict[str, int] = {}
    errors = {}
    for i, frame in enumerate(frames):
        if isinstance(frame, (str, os.PathLike)):
            key = os.path.realpath(frame)
            if key in first:
                errors[i] = f"{frame}: the same file as frame {first[key]}; a burst lists each frame once"
            else:
                first[key] = i
    return errors


def load(path: str | Path, device: str = "cpu", runtime: str | None = None, threads: int = 0) -> Scorer:
    """A scorer for a checkpoint (``.pt``) or an exported artifact, in ``runtime`` (None: the
    fastest that runs it here, :func:`edge_iqa.runtimes.default_runtimes`: ``.onnx`` OpenVINO where
    it is installed and reads the graph, else ONNX Runtime; ``.plan``/``.engine`` TensorRT,
    ``.mlpackage`` CoreML); a runtime that cannot run here fails with one line saying why.
    ``scorer.loaded`` says which runtime, version and device it got.
    """
    return Scorer.from_loaded(load_artifact(path, runtime, threads=threads, device=device))
